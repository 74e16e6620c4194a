"""Lester et al. (2021), Figure 3: the design-decision sweeps, each a table and a plot of the SuperGLUE score.

    xprompt-jax table --table=lester_init --gin_file=paper/prompt_tuning_xl.gin --results_dir=/mnt/B/lester_xl
    xprompt-jax table --table=lester_length ...       # prompt length 1, 5, 20, 100, 150
    xprompt-jax table --table=lester_objective ...    # span corruption, span corruption + sentinel, LM adaptation
    xprompt-jax table --table=lester_lm_steps ...     # LM adaptation for 0, 10K, 50K, 100K steps

Every sweep changes one setting of the paper's default design point (class-label initialisation, 100 tokens, the
public LM-adapted checkpoint = LM adaptation for 100K steps) and trains one prompt per SuperGLUE task (taskless, as
the main table) and seed. A run's folder names its design point, `<point>/<Task>/seed<k>`, so the four tables
share the default point's runs (and the span-corruption runs) when they share a results dir. The span-corruption
rows load the public T5 1.1 checkpoint the LM-adapted one was made from (SPAN_CORRUPTION_CHECKPOINT_PATH of the
paper config); "+ sentinel" trains and evaluates the `sentinel_` tasks (every target behind `<extra_id_0>`,
`tasks/variants`); the 10K and 50K LM-adaptation rows need checkpoints that are not public, so the table makes them:
the `lm_adapt` job continues the span-corruption checkpoint on T5's prefix-LM objective over C4 (`pretrain` with
`LM_ADAPT_BINDINGS`) and exports it at 10K and 50K steps, and those rows' prompts load its exports.
"""
import dataclasses
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from xprompt_jax import variant_names
from xprompt_jax.tables import base
from xprompt_jax.tables import benchmarks
from xprompt_jax.tables import lester

SEEDS = (0, 1, 2)
LM_ADAPT_FOLDER = "lm_adapt"
LM_ADAPT_STEPS = (10_000, 50_000)  # The exports of the lm_adapt job (its last step is the last one).
# The lm_adapt job: `xprompt-jax pretrain` of the span-corruption checkpoint on C4's prefix-LM objective, continuing
# T5's inverse-square-root schedule after its 1M steps (as gin/pretrain/lm_adaptation.gin: 512/512 tokens, batch 128,
# no dropout; the seeds give neither the batch nor the lengths of Lester's LM adaptation: chosen as T5's).
LM_ADAPT_BINDINGS = (
    "MIXTURE_OR_TASK_NAME = 'c4_v220_prefix_lm'", "DataConfig.inputs_length = 512",
    "DataConfig.targets_length = 512", "DataConfig.batch_size = 128", "DataConfig.use_cached = False",
    "T5Config.dropout_rate = 0.0",
    "PretrainConfig.initial_checkpoint = %SPAN_CORRUPTION_CHECKPOINT_PATH",
    f"PretrainConfig.num_train_steps = {LM_ADAPT_STEPS[-1]}", f"PretrainConfig.export_steps = {LM_ADAPT_STEPS[:-1]!r}",
    "PretrainConfig.learning_rate = 0.01", "PretrainConfig.warmup_steps = 10000",
    "PretrainConfig.schedule_offset = 1000000", "PretrainConfig.eval_period = 5000",
    "PretrainConfig.checkpoint_period = 1000",
)


@dataclasses.dataclass(frozen=True)
class Point:
  """One design point of Figure 3."""
  init: str = "class_labels"
  length: int = 100
  objective: str = "lm_adaptation"  # "span_corruption", "span_corruption_sentinel" or "lm_adaptation".
  lm_steps: int = 100_000  # LM adaptation steps (100K: the public checkpoint).

  def folder(self) -> str:
    objective = {"span_corruption": "sc", "span_corruption_sentinel": "sc_sentinel"}.get(
        self.objective, f"lm{self.lm_steps // 1000}k")
    return f"{self.init}-L{self.length}-{objective}"

  def task(self, column: benchmarks.Column) -> str:
    return (variant_names.SENTINEL_PREFIX if self.objective == "span_corruption_sentinel" else "") + column.task

  def bindings(self, column: benchmarks.Column, seed: int) -> tuple[str, ...]:
    out = list(lester.prompt_bindings(self.task(column), seed))
    if self.init != "class_labels":  # Free-text tasks (ReCoRD, WSC) already start from sampled vocabulary.
      out = [b for b in out if not b.startswith(("CLASS_LABELS", "PromptTuning.prompt_init"))]
      out.append(f"PromptTuning.prompt_init = '{self.init}'")
    out.append(f"PromptTuning.length = {self.length}")
    if self.objective.startswith("span_corruption"):
      out += ["INITIAL_CHECKPOINT_PATH = %SPAN_CORRUPTION_CHECKPOINT_PATH"]
    return tuple(out)

  def backbone(self) -> Optional[tuple[str, int]]:
    """(the job folder, the index of its export) this point's prompts load, for the LM steps made here."""
    if self.objective == "lm_adaptation" and self.lm_steps != 100_000:
      return (LM_ADAPT_FOLDER, LM_ADAPT_STEPS.index(self.lm_steps))
    return None


DEFAULT = Point()
SPAN_CORRUPTION = Point(objective="span_corruption")


class _Sweep(base.PaperTable):
  """A Figure 3 sweep: `rows` are (label, design point); the jobs are every point's prompts."""
  gin_pattern = "paper/prompt_tuning_{size}.gin"
  seed_file = "003_d13362ded1d43f30.txt"
  x_label = ""
  rows: Sequence[tuple[str, Point]] = ()
  finding = ""  # The seed's statement about the sweep (quoted).

  def folder(self, point: Point, column: benchmarks.Column, seed: int) -> str:
    return f"{point.folder()}/{column.label}/seed{seed}"

  def jobs(self) -> list[base.Job]:
    jobs = []
    if any(point.backbone() for _, point in self.rows):  # First: the rows that need its exports wait for it.
      jobs.append(base.Job(LM_ADAPT_FOLDER, "lm_adapt", LM_ADAPT_BINDINGS))
    for _, point in self.rows:
      backbone = point.backbone()
      for column in lester.COLUMNS_TASKLESS:
        for seed in SEEDS:
          jobs.append(base.Job(self.folder(point, column, seed), "train", point.bindings(column, seed),
                               needs=(backbone[0],) if backbone else (), task=point.task(column), seed=seed,
                               options=(("backbone_export", backbone),) if backbone else ()))
    return jobs

  def _columns(self, point: Point) -> list[benchmarks.Column]:
    return [dataclasses.replace(c, task=point.task(c)) for c in lester.COLUMNS_TASKLESS]

  def gather(self, records: Mapping[str, Any], size: str) -> base.Grid:
    rows, series = [], {"SuperGLUE score (decoding)": [], "SuperGLUE score (rank classification)": []}
    for label, point in self.rows:
      columns = self._columns(point)
      per_seed = {mode: [] for mode in benchmarks.MODES}
      cells = []
      for column in columns:
        values = {mode: [_best(records.get(self.folder(point, column, s)), column, mode) for s in SEEDS]
                  for mode in benchmarks.MODES}
        mean = None if any(v is None for v in values["decode"]) else list(np.mean(values["decode"], axis=0))
        cells.append(base.fmt_pair(mean) if mean else base.MISSING)
        for mode in benchmarks.MODES:
          per_seed[mode].append(values[mode])
      scores = {}
      for mode in benchmarks.MODES:
        seed_scores = [(benchmarks.rank_score(columns, [v[s] for v in per_seed[mode]]) if mode == "rank" else
                        benchmarks.benchmark_score([benchmarks.score(v[s]) for v in per_seed[mode]]))
                       for s in range(len(SEEDS))]
        scores[mode] = None if any(x is None for x in seed_scores) else (float(np.mean(seed_scores)),
                                                                         float(np.std(seed_scores)))
      rows.append((label, cells + [_mean_std(scores["decode"]), _mean_std(scores["rank"])]))
      for (name, points), mode in zip(series.items(), ("decode", "rank")):
        points.append((label, *(scores[mode] or (None, None))))
    notes = [f"Each row: one prompt per task and seed {list(SEEDS)} (the seeds give no run count: 3 chosen), at its "
             "best checkpoint on dev (as the main table); a task cell is the mean over seeds, the score the mean ± "
             "std over seeds of each seed's SuperGLUE score (the mean of the task scores).",
             f"The paper (../shared/seeds/{self.seed_file}, Lester et al. 2021, Fig. 3) reports this sweep as a "
             f"plot, not numbers; its finding: {self.finding}",
             benchmarks.rank_note(lester.COLUMNS_TASKLESS)]
    columns = [c.header() for c in lester.COLUMNS_TASKLESS] + ["SuperGLUE score", "SuperGLUE score (rank)"]
    return base.Grid(f"{self.title} — T5 1.1 {size.upper()}", columns, rows, notes=notes,
                     plot={"x_label": self.x_label, "y_label": "SuperGLUE score (dev)", "series": series})


def _best(record: Optional[Mapping[str, Any]], column: benchmarks.Column, mode: str) -> Optional[list[float]]:
  best = lester.best_eval(record, column.task)
  return benchmarks.task_metrics(column, best, mode) if best else None


def _mean_std(value: Optional[tuple[float, float]]) -> str:
  return base.MISSING if value is None else f"{base.fmt(value[0])} ± {base.fmt(value[1])}"


class LesterInit(_Sweep):
  name = "lester_init"
  title = "Prompt initialisation (Lester et al. 2021, Fig. 3a)"
  x_label = "prompt initialisation"
  rows = (("random uniform", Point(init="random_uniform")), ("sampled vocabulary", Point(init="sampled_vocab")),
          ("class label", DEFAULT))
  finding = ("class-label initialisation performs best; the gaps between initialisations disappear at XXL "
             "(ReCoRD and WSC, without label words, start from sampled vocabulary in the class-label row).")


class LesterLength(_Sweep):
  name = "lester_length"
  title = "Prompt length (Lester et al. 2021, Fig. 3b)"
  x_label = "prompt length (tokens)"
  # Class labels need a token each: no task's labels fit 1 token, so that prompt starts from sampled vocabulary.
  rows = tuple((str(n), dataclasses.replace(DEFAULT, length=n, init="class_labels" if n > 1 else "sampled_vocab"))
               for n in (1, 5, 20, 100, 150))
  finding = ("increasing the length is critical; the largest model does well with a single token; beyond 20 tokens "
             "the gains are marginal (the seed names 1 and 20; 5, 100, 150 chosen as Lester et al.'s Fig. 3b points; "
             "the 1-token prompt starts from sampled vocabulary: no label set fits one token).")


class LesterObjective(_Sweep):
  name = "lester_objective"
  title = "Pre-training objective (Lester et al. 2021, Fig. 3c)"
  x_label = "pre-training objective of the frozen model"
  rows = (("span corruption", SPAN_CORRUPTION), ("span corruption + sentinel",
                                                 Point(objective="span_corruption_sentinel")),
          ("LM adaptation (100K)", DEFAULT))
  finding = ("span corruption is not well suited to frozen models; the sentinel helps little; LM adaptation is best "
             "at every size; the largest model is the most forgiving.")


class LesterLMSteps(_Sweep):
  name = "lester_lm_steps"
  title = "LM adaptation steps (Lester et al. 2021, Fig. 3d)"
  x_label = "LM adaptation steps"
  rows = (("0 (span corruption)", SPAN_CORRUPTION), ("10K", Point(lm_steps=10_000)), ("50K", Point(lm_steps=50_000)),
          ("100K (public checkpoint)", DEFAULT))
  finding = ("longer adaptation helps up to 100K steps; at the largest size the gains are modest (the seeds name "
             "no step counts: 0, 10K, 50K and 100K chosen, 100K being the public checkpoint).")
