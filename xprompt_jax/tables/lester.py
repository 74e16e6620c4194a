"""Lester et al. (2021), SuperGLUE dev: 8 tasks x 5 prompts, the mean, the best prompt and the 5-prompt ensemble.

    xprompt-jax table --table=lester_superglue --gin_file=paper/prompt_tuning_xxl.gin --results_dir=gs://B/lester_xxl

Jobs: `<Task>/prompt<k>` (k = 0..4) is `xprompt-jax train` with the paper config on the task's `taskless_` version
(the seed: "task names prepended to inputs are omitted"; google-research/prompt-tuning's tasks), seeded k (prompt
initialisation and data order), the prompt initialised from the task's class labels (ReCoRD and WSC, whose answers
are free text, from sampled vocabulary, as the paper config's header says); `<Task>/ensemble` evaluates the five
prompts' best checkpoints in one replicated batch with majority voting (`evaluation.ensemble`). Each prompt counts
at its best checkpoint on dev (seed 000: "following Lester et al. ... the best checkpoint on the validation set"),
kept by `TrainConfig.best_metric`. The SuperGLUE score is the mean over the 8 tasks of each task's mean metric.
"""
import dataclasses
from typing import Any, Mapping, Optional

from xprompt_jax import variant_names
from xprompt_jax.tables import base
from xprompt_jax.tables import benchmarks

NUM_PROMPTS = 5  # The seed says "N prompts"; 5 as Lester et al.'s ensemble.
# The SuperGLUE columns on the taskless tasks (evaluated on their taskless evaluation tasks: WSC on simple_eval).
COLUMNS_TASKLESS = tuple(dataclasses.replace(c, task=variant_names.TASKLESS_PREFIX + c.task)
                         for c in benchmarks.SUPER_GLUE)
FREE_TEXT = ("super_glue_record_v102", "super_glue_wsc_v102_simple_train")  # No label words to initialise from.
# Quoted from ../shared/seeds/003_d13362ded1d43f30.txt (its prompt-ensembling table: average / best / ensemble per
# task, then the SuperGLUE (dev) score; the seed names no size or prompt count: Lester et al.'s are XXL and 5).
QUOTES = {"xxl": {
    "BoolQ": ("91.1", "91.3", "91.7"), "CB": ("99.3/99.0", "100.0/100.0", "100.0/100.0"),
    "COPA": ("98.8", "100.0", "100.0"), "MultiRC": ("65.7/88.7", "66.3/89.0", "67.1/89.4"),
    "ReCoRD": ("92.7/93.4", "92.9/93.5", "93.2/93.9"), "RTE": ("92.6", "93.5", "93.5"),
    "WiC": ("76.2", "76.6", "77.4"), "WSC": ("95.8", "96.2", "96.2"), "SuperGLUE": ("90.5", "91.0", "91.3")}}
COLUMNS = ("mean of 5", "best prompt", "5-prompt ensemble")
RANK_COLUMN = "mean of 5 (rank classification)"


# The metric each prompt's best checkpoint on dev is selected by (decoded; others: accuracy), as the XPrompt tables.
SELECT_METRIC = {"super_glue_multirc_v102": "f1", "super_glue_record_v102": "f1"}


def select_key(task: str) -> str:
  """`TrainConfig.best_metric` of a run on `task`: its first evaluation task's decoded selection metric."""
  from xprompt_jax.tasks import registry_utils
  base_name = variant_names.base_task_name(task)
  return f"{registry_utils.evaluation_tasks(task, 'validation')[0]}/decode/{SELECT_METRIC.get(base_name, 'accuracy')}"


def best_eval(record: Optional[Mapping[str, Any]], task: str) -> Optional[dict]:
  """{eval task: metrics} of a finished train job at its best evaluation by `select_key(task)` (the first best,
  as the checkpointer keeps it); None for no record."""
  if not record:
    return None
  name, _, key = select_key(task).partition("/")
  evals = record.get("evals", {}).get(name)
  if not evals:
    return record["last"]
  scores = [m.get(key, m.get(key.removeprefix("decode/"))) for _, m in evals]
  best = max(range(len(evals)), key=lambda i: (scores[i] if scores[i] is not None else float("-inf"), -i))
  step = evals[best][0]
  return {t: dict(next(m for s, m in e if s == step)) for t, e in record["evals"].items()}


def prompt_bindings(task: str, seed: int) -> tuple[str, ...]:
  """The gin bindings of one prompt's run (the task, its initialisation, the seed, the metric its best checkpoint
  is kept by)."""
  out = [f"MIXTURE_OR_TASK_NAME = '{task}'", f"TrainConfig.seed = {seed}", f"DataConfig.seed = {seed}",
         f"TrainConfig.best_metric = '{select_key(task)}'"]
  if variant_names.base_task_name(task) in FREE_TEXT:
    out.append("PromptTuning.prompt_init = 'sampled_vocab'")
  else:
    from xprompt_jax.tasks import registry_utils
    out.append(f"CLASS_LABELS = {registry_utils.class_labels(task)!r}")
  return tuple(out)


def prompt_folder(column: benchmarks.Column, k: int) -> str:
  return f"{column.label}/prompt{k}"


class LesterSuperGlue(base.PaperTable):
  name = "lester_superglue"
  title = "Prompt tuning on SuperGLUE (dev): mean, best and ensemble of 5 prompts (Lester et al. 2021)"
  gin_pattern = "paper/prompt_tuning_{size}.gin"
  seed_file = "003_d13362ded1d43f30.txt"

  def jobs(self) -> list[base.Job]:
    jobs = []
    for column in COLUMNS_TASKLESS:
      prompts = [prompt_folder(column, k) for k in range(NUM_PROMPTS)]
      jobs += [base.Job(folder, "train", prompt_bindings(column.task, k), task=column.task, seed=k)
               for k, folder in enumerate(prompts)]
      jobs.append(base.Job(f"{column.label}/ensemble", "ensemble", prompt_bindings(column.task, 0),
                           needs=tuple(prompts), task=column.task))
    return jobs

  def gather(self, records: Mapping[str, Any], size: str) -> base.Grid:
    rows, scores, ranked = [], {c: [] for c in COLUMNS}, []
    for column in COLUMNS_TASKLESS:
      runs = [records.get(prompt_folder(column, k)) for k in range(NUM_PROMPTS)]
      bests = [best_eval(r, column.task) for r in runs]
      values = [benchmarks.task_metrics(column, b) if b else None for b in bests]
      for k, (r, v) in enumerate(zip(runs, values)):
        if r and r.get("last") and v is None:  # Finished, but not on this table's tasks: say so, not an empty cell.
          raise ValueError(f"{prompt_folder(column, k)} holds a run evaluated on {sorted(r['last'])}, not on "
                           f"{list(benchmarks.eval_tasks(column))} (a run from before the table used the taskless "
                           "tasks?): move it away or use a new --results_dir")
      if any(v is None for v in values):
        mean = best = None
      else:
        mean = [sum(v[i] for v in values) / len(values) for i in range(len(column.metrics))]
        best = max(values, key=benchmarks.score)
      ens = records.get(f"{column.label}/ensemble")
      ensemble = benchmarks.task_metrics(column, ens and {t: m["ensemble"] for t, m in ens["eval"].items()})
      cells = [mean, best, ensemble]
      for name, v in zip(COLUMNS, cells):
        scores[name].append(benchmarks.score(v))
      rank = [benchmarks.task_metrics(column, b, "rank") if b else None for b in bests]
      rank_mean = base.metric_means(rank)
      ranked.append(rank_mean)
      rank_cell = (base.fmt_pair(rank_mean) if rank_mean else base.MISSING) if benchmarks.can_rank(column) \
          else base.NA
      rows.append((column.header(), [base.fmt_pair(v) if v else base.MISSING for v in cells] + [rank_cell]))
    rows.append(("SuperGLUE score", [base.fmt(benchmarks.benchmark_score(scores[name])) for name in COLUMNS]
                 + [base.fmt(benchmarks.rank_score(COLUMNS_TASKLESS, ranked))]))
    quoted = QUOTES.get(size, {})
    quotes = {label: quoted[key] for label, key in zip([r[0] for r in rows],
                                                        [c.label for c in benchmarks.SUPER_GLUE] + ["SuperGLUE"])
              if key in quoted}
    notes = [f"Paper columns quoted from ../shared/seeds/{self.seed_file} (Lester et al. 2021's prompt-ensembling "
             "table; the seed names no size or prompt count, the paper's are XXL and 5: quoted beside XXL only)."
             if size in QUOTES else
             f"The seeds quote per-task numbers for one table only, which Lester et al. report for XXL; none at "
             f"{size} (../shared/seeds/{self.seed_file}).",
             "Each prompt counts at its best checkpoint on dev (decoded accuracy, F1 for MultiRC and ReCoRD), as "
             "../shared/seeds/000_32f560ca05721f03.txt describes Lester et al.'s protocol; the ensemble is the "
             "majority vote of the 5 prompts' best checkpoints; the SuperGLUE score is the mean of the task scores.",
             "Inputs without T5's task name (taskless_* tasks), as the paper states.",
             benchmarks.rank_note(COLUMNS_TASKLESS)]
    return base.Grid(self.title + f" — T5 1.1 LM-adapted {size.upper()}", [*COLUMNS, RANK_COLUMN], rows,
                     quote_columns=[f"paper (quoted): {c}" for c in COLUMNS] if quotes else [], quotes=quotes,
                     notes=notes)
