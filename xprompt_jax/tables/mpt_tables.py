"""MPT (Wang et al. 2023): the GLUE + SuperGLUE table, the MRQA + Others table, the few-shot table and the
ablation table, each one command.

    xprompt-jax table --table=mpt_glue_superglue --gin_file=paper/mpt_base.gin --results_dir=/mnt/B/mpt_base
    xprompt-jax table --table=mpt_mrqa_others --gin_file=paper/mpt_base.gin --results_dir=/mnt/B/mpt_base
    xprompt-jax table --table=mpt_fewshot --gin_file=paper/mpt_base.gin --results_dir=/mnt/B/mpt_base
    xprompt-jax table --table=mpt_ablations --gin_file=paper/mpt_base.gin --results_dir=/mnt/B/mpt_ablations_base

Jobs, each its own folder and stage (`training.stages`): `teachers/<source task>` (plain prompt tuning on one
source task, `mpt_teacher`), `<...>source` (distilled multitask source training from those teachers, `mpt_source`),
and one `mpt_target` job per target task, adapting from its source job's export. The main table runs the 6 source
teachers once (seed 0; the seeds do not say whether teachers are re-trained per seed), then per seed k = 0, 1, 2
the source prompt `seed<k>/source` and the 13 targets `seed<k>/<Task>` (GLUE 8 + SuperGLUE 5, as the paper's
Tables 1-2). The ablation table (Table 6, Sec. 4.3, Table 7) trains, with seed 0 (the seed gives no seed count for
it), one source prompt per row that changes source training (`source/<row>`; rows that change only target
adaptation reuse `source/full`) and every row's 5 SuperGLUE targets (`<row>/<Task>`); `sources_12` adds the 6 extra
source tasks' teachers. Each target counts at its last evaluation (the MPT pipeline's record).
"""
import dataclasses
from typing import Any, Mapping, Optional, Sequence

from xprompt_jax.tables import base
from xprompt_jax.tables import benchmarks

SEEDS = (0, 1, 2)
SUPER_GLUE_TARGETS = ("MultiRC", "BoolQ", "WiC", "WSC", "CB")  # The paper's order.
# Quoted from ../shared/seeds/001_fef52c401daa09d3.txt (T5-Base).
QUOTE_MAIN = "SuperGLUE average 74.1 (T5-Base), +16.3 % over vanilla prompt tuning"
QUOTE_ABLATIONS = {"decomposition_only": "+3.5 % over 'neither'", "distillation_only": "+1.1 % over 'neither'",
                   "full": "74.1", "no_hidden": "73.7", "distance": "73.6", "shared_only": "62.5",
                   "task_only": "71.3", "no_task_sampling": "73.7"}


def super_glue_targets() -> tuple[benchmarks.Column, ...]:
  return benchmarks.by_label(benchmarks.SUPER_GLUE, SUPER_GLUE_TARGETS)


def teacher_folder(task: str) -> str:
  return f"teachers/{task}"


def seed_bindings(seed: int) -> tuple[str, ...]:
  return (f"TrainConfig.seed = {seed}", f"DataConfig.seed = {seed}")


def target_metrics(record: Optional[Mapping[str, Any]], column: benchmarks.Column,
                   mode: str = "decode") -> Optional[list[float]]:
  return None if record is None else benchmarks.task_metrics(column, record["eval"], mode)


def seed_mean(records: Mapping[str, Any], folders: Sequence[str], column: benchmarks.Column,
              mode: str = "decode") -> Optional[list[float]]:
  return base.metric_means([target_metrics(records.get(f), column, mode) for f in folders])


def source_tasks(extended: bool = False) -> tuple[str, ...]:
  """The paper's 6 source tasks (and, `extended`, the 12-task variant's 6 extra ones), as `recipes/mpt_paper.gin`
  binds them; the source job checks that the config it runs binds the same."""
  from xprompt_jax.tasks import mixtures
  return (*mixtures.MPT_SOURCE_TASKS, *(mixtures.MPT_EXTRA_SOURCE_TASKS if extended else ()))


class _MPTTable(base.PaperTable):
  gin_pattern = "paper/mpt_{size}.gin"

  seed_file = "001_fef52c401daa09d3.txt"
  dry_run_batch_size = 12  # Stochastic task sampling draws up to every source task (12 for sources_12) per batch.

  def teacher_jobs(self, tasks: Sequence[str]) -> list[base.Job]:
    return [base.Job(teacher_folder(t), "mpt_teacher", seed_bindings(0), task=t) for t in tasks]

  def source_job(self, folder: str, tasks: Sequence[str], seed: int, ablation: str = "full") -> base.Job:
    return base.Job(folder, "mpt_source", seed_bindings(seed), needs=tuple(teacher_folder(t) for t in tasks),
                    seed=seed, options=(("source_tasks", tuple(tasks)), ("ablation", ablation)))

  def target_job(self, folder: str, column: benchmarks.Column, source: str, seed: int,
                 ablation: str = "full") -> base.Job:
    return base.Job(folder, "mpt_target", seed_bindings(seed), needs=(source,), task=column.task, seed=seed,
                    options=(("source", source), ("ablation", ablation)))


class MPTGlueSuperGlue(_MPTTable):
  name = "mpt_glue_superglue"
  title = "MPT on GLUE and SuperGLUE (dev) (Wang et al. 2023, Tables 1-2)"

  def columns(self) -> tuple[benchmarks.Column, ...]:
    return (*benchmarks.GLUE, *super_glue_targets())

  def jobs(self) -> list[base.Job]:
    tasks = source_tasks()
    jobs = self.teacher_jobs(tasks)
    for seed in SEEDS:
      jobs.append(self.source_job(f"seed{seed}/source", tasks, seed))
      jobs += [self.target_job(f"seed{seed}/{c.label}", c, f"seed{seed}/source", seed) for c in self.columns()]
    return jobs

  def gather(self, records: Mapping[str, Any], size: str) -> base.Grid:
    cells, glue, sglue, ranked = [], [], [], {}
    for column in self.columns():
      folders = [f"seed{s}/{column.label}" for s in SEEDS]
      mean = seed_mean(records, folders, column)
      cells.append(base.fmt_mean_std([target_metrics(records.get(f), column) for f in folders]))
      (glue if column in benchmarks.GLUE else sglue).append(benchmarks.score(mean))
      ranked[column] = seed_mean(records, folders, column, "rank")
    glue_cols, sglue_cols = benchmarks.GLUE, super_glue_targets()
    row = cells + [base.fmt(benchmarks.benchmark_score(glue)), base.fmt(benchmarks.benchmark_score(sglue)),
                   *(base.fmt(benchmarks.rank_score(cols, [ranked[c] for c in cols])) for cols in (glue_cols,
                                                                                                   sglue_cols))]
    columns = [c.header() for c in self.columns()] + ["GLUE avg", "SuperGLUE avg", "GLUE avg (rank)",
                                                      "SuperGLUE avg (rank)"]
    notes = [f"Mean ± std over seeds {list(SEEDS)} (as the seed reports them; source training and targets per seed, "
             "the teachers once, seed 0) of each target's last evaluation (the seeds are silent on checkpoint "
             "selection: the last); an average is the mean of the task scores' seed means.",
             f"Quoted from ../shared/seeds/{self.seed_file} (Wang et al. 2023)"
             + (" at T5-Base." if size == "base" else f"; the seeds quote T5-Base only, not {size}."),
             benchmarks.rank_note(self.columns())]
    quote = {"MPT": [QUOTE_MAIN]} if size == "base" else {}
    return base.Grid(f"{self.title} — {size}", columns, [("MPT", row)],
                     quote_columns=["paper (quoted)"] if quote else [], quotes=quote, notes=notes)


class MPTAblations(_MPTTable):
  name = "mpt_ablations"
  title = "MPT ablations, SuperGLUE average (Wang et al. 2023, Table 6, Sec. 4.3, Table 7)"

  def jobs(self) -> list[base.Job]:
    from xprompt_jax.pipelines import mpt_ablations
    jobs = self.teacher_jobs(source_tasks(extended=True))
    for row in mpt_ablations.ABLATIONS:
      if row.source_variant or row.name == "full":
        jobs.append(self.source_job(f"source/{row.name}", source_tasks(row.extended_sources), 0, row.name))
    for row in mpt_ablations.ABLATIONS:
      source = f"source/{row.source_variant or 'full'}"
      jobs += [self.target_job(f"{row.name}/{c.label}", c, source, 0, row.name) for c in super_glue_targets()]
    return jobs

  def gather(self, records: Mapping[str, Any], size: str) -> base.Grid:
    from xprompt_jax.pipelines import mpt_ablations
    rows = []
    for row in mpt_ablations.ABLATIONS:
      values = [target_metrics(records.get(f"{row.name}/{c.label}"), c) for c in super_glue_targets()]
      ranked = [target_metrics(records.get(f"{row.name}/{c.label}"), c, "rank") for c in super_glue_targets()]
      cells = [base.fmt_pair(v) if v else base.MISSING for v in values]
      rows.append((f"{row.name}: {row.description}",
                   cells + [base.fmt(benchmarks.benchmark_score([benchmarks.score(v) for v in values])),
                            base.fmt(benchmarks.rank_score(super_glue_targets(), ranked))]))
    quotes = {label: [QUOTE_ABLATIONS[r.name]] for (label, _), r in zip(rows, mpt_ablations.ABLATIONS)
              if r.name in QUOTE_ABLATIONS} if size == "base" else {}
    notes = ["Seed 0 (the seeds give no seed count for the ablations); each target at its last evaluation; the last "
             "column is the mean of the task scores.",
             f"Quoted from ../shared/seeds/{self.seed_file} (Wang et al. 2023, T5-Base SuperGLUE averages; none for "
             "the 12-source-task row)" + ("." if size == "base" else f"; no number at {size}.")]
    notes.append(benchmarks.rank_note(super_glue_targets()))
    return base.Grid(f"{self.title} — {size}",
                     [c.header() for c in super_glue_targets()] + ["SuperGLUE avg", "SuperGLUE avg (rank)"], rows,
                     quote_columns=["paper (quoted): SuperGLUE avg"] if quotes else [], quotes=quotes, notes=notes)


# The paper's MRQA and Others targets (F1 for the QA sets, accuracy for the classification ones).
MRQA = (benchmarks.Column("mrqa_natural_questions_v100", "NQ", ("f1",), "F1"),
        benchmarks.Column("mrqa_hotpot_qa_v100", "HotpotQA", ("f1",), "F1"),
        benchmarks.Column("mrqa_search_qa_v100", "SearchQA", ("f1",), "F1"),
        benchmarks.Column("mrqa_news_qa_v100", "NewsQA", ("f1",), "F1"))
OTHERS = (benchmarks.Column("winogrande_v120", "WinoGrande", ("accuracy",), "acc"),
          benchmarks.Column("yelp_polarity_v020", "Yelp-2", ("accuracy",), "acc"),
          benchmarks.Column("scitail_v100", "SciTail", ("accuracy",), "acc"),
          benchmarks.Column("paws_wiki_v110", "PAWS-Wiki", ("accuracy",), "acc"))
# MRQA answers are free text longer than the recipe's 16 target tokens (the seeds give no lengths): 32.
QA_TARGET_BINDINGS = ("TASK_FEATURE_LENGTHS = {'inputs': 512, 'targets': 32}", "EvalConfig.targets_length = 32")
# Yelp-2 has no dev set (TFDS: train and test only) and the seeds are silent: its test set is evaluated.
EVAL_SPLIT_BINDINGS = {"Yelp-2": ("EvalConfig.split = 'test'",)}
FEW_SHOT_TASKS = ("BoolQ", "CB", "SciTail")
SHOTS = (4, 16, 32)
DRAWS = tuple(range(10))  # The paper samples each k-shot training set 10 times.


class MPTMRQAOthers(MPTGlueSuperGlue):
  name = "mpt_mrqa_others"
  title = "MPT on MRQA and Others (dev) (Wang et al. 2023, Table 2)"

  def columns(self) -> tuple[benchmarks.Column, ...]:
    return (*MRQA, *OTHERS)

  def target_job(self, folder, column, source, seed, ablation="full"):
    job = super().target_job(folder, column, source, seed, ablation)
    extra = (*(QA_TARGET_BINDINGS if column in MRQA else ()), *EVAL_SPLIT_BINDINGS.get(column.label, ()))
    return dataclasses.replace(job, bindings=(*job.bindings, *extra))

  def gather(self, records: Mapping[str, Any], size: str) -> base.Grid:
    cells, scores, ranked = [], {"MRQA": [], "Others": []}, []
    for column in self.columns():
      folders = [f"seed{s}/{column.label}" for s in SEEDS]
      mean = seed_mean(records, folders, column)
      cells.append(base.fmt_mean_std([target_metrics(records.get(f), column) for f in folders]))
      scores["MRQA" if column in MRQA else "Others"].append(benchmarks.score(mean))
      if column in OTHERS:
        ranked.append(seed_mean(records, folders, column, "rank"))
    row = cells + [base.fmt(benchmarks.benchmark_score(v)) for v in scores.values()]
    row.append(base.fmt(benchmarks.rank_score(OTHERS, ranked)))
    notes = [f"Mean ± std over seeds {list(SEEDS)} of each target's last evaluation (the teachers and source prompts "
             "of the GLUE + SuperGLUE table); MRQA: F1 of the decoded answer against every reference; an average is "
             "the mean of the task scores.",
             "Yelp-2 has no dev set: its test set is evaluated (the seeds are silent).",
             f"The seeds quote no MRQA or Others numbers (../shared/seeds/{self.seed_file}).",
             benchmarks.rank_note(OTHERS) + " (MRQA answers are free text)"]
    return base.Grid(f"{self.title} — {size}", [c.header() for c in self.columns()] +
                     ["MRQA avg", "Others avg", "Others avg (rank)"], [("MPT", row)], notes=notes)


def few_shot_folder(shots: int, column: benchmarks.Column, draw: int) -> str:
  return f"fewshot/{shots}shot/{column.label}/draw{draw}"


class MPTFewShot(_MPTTable):
  name = "mpt_fewshot"
  title = "MPT few-shot adaptation, k = 4, 16, 32 training examples (Wang et al. 2023, Tables 3-4)"

  def columns(self) -> tuple[benchmarks.Column, ...]:
    return benchmarks.by_label((*benchmarks.SUPER_GLUE, *OTHERS), FEW_SHOT_TASKS)

  def jobs(self) -> list[base.Job]:
    tasks = source_tasks()
    jobs = [*self.teacher_jobs(tasks), self.source_job("seed0/source", tasks, 0)]
    for shots in SHOTS:
      for column in self.columns():
        for draw in DRAWS:
          job = self.target_job(few_shot_folder(shots, column, draw), column, "seed0/source", draw)
          jobs.append(dataclasses.replace(job, options=(*job.options, ("shots", shots), ("draw", draw))))
    return jobs

  def gather(self, records: Mapping[str, Any], size: str) -> base.Grid:
    rows = []
    for shots in SHOTS:
      cells, scores, ranked = [], [], []
      for column in self.columns():
        folders = [few_shot_folder(shots, column, d) for d in DRAWS]
        mean = seed_mean(records, folders, column)
        cells.append(base.fmt_pair(mean) if mean else base.MISSING)
        scores.append(benchmarks.score(mean))
        ranked.append(seed_mean(records, folders, column, "rank"))
      rows.append((f"k = {shots}", cells + [base.fmt(benchmarks.benchmark_score(scores)),
                                            base.fmt(benchmarks.rank_score(self.columns(), ranked))]))
    notes = [f"Each cell: the mean over {len(DRAWS)} draws of k training examples (MPTConfig.few_shot_per_class: k "
             "in all, the seed's 'k training examples') of the target's last evaluation on the full dev set, adapted "
             "from the source prompt of seed 0 (the seeds give no seed for the few-shot source: seed 0 chosen); a "
             "draw's seed also seeds its adaptation.",
             f"The seeds quote no few-shot numbers (../shared/seeds/{self.seed_file}); they state that MPT beats "
             "vanilla prompt tuning and SPoT (Table 3) and vanilla prompt tuning on most datasets (Table 4).",
             benchmarks.rank_note(self.columns())]
    return base.Grid(f"{self.title} — {size}", [c.header() for c in self.columns()] + ["mean", "mean (rank)"],
                     rows, notes=notes)
