"""Prefix tuning vs prompt tuning on SuperGLUE (dev), the comparison of the lecture (seed 003), with Lester et al.'s
recipe (recipes/lester.gin: Adafactor 0.3, 30k steps, taskless inputs) for both (not XPrompt's Table 1 recipe).

    xprompt-jax table --table=prefix_vs_prompt --gin_file=paper/prefix_tuning_base.gin \
      --results_dir=gs://BUCKET/prefix_vs_prompt_base

Jobs: `<method>/<Task>/seed<k>`, `xprompt-jax train` with the paper config (prefix: length 10, MLP
reparametrisation; prompt: `get_method.name='prompt'`, Lester's 100-token class-label prompt, sampled vocabulary
for ReCoRD and WSC), on the 8 taskless SuperGLUE tasks (as Lester et al.), 3 seeds (the seeds give no count for this
comparison: 3, as MPT reports). Each run counts at its best checkpoint on dev, as the Lester table. Prints the
per-task mean over seeds of both methods and the SuperGLUE score. The seeds quote no per-task number for this
comparison, only the claim below.
"""
from typing import Any, Mapping

from xprompt_jax.tables import base
from xprompt_jax.tables import benchmarks
from xprompt_jax.tables import lester

SEEDS = (0, 1, 2)
METHODS = (("prompt", "Prompt tuning (L = 100, class labels)"), ("prefix", "Prefix tuning (L = 10, MLP)"))


def folder(method: str, column: benchmarks.Column, seed: int) -> str:
  return f"{method}/{column.label}/seed{seed}"


class PrefixVsPrompt(base.PaperTable):
  name = "prefix_vs_prompt"
  title = "Prefix tuning vs prompt tuning on SuperGLUE (dev)"
  gin_pattern = "paper/prefix_tuning_{size}.gin"
  seed_file = "000_32f560ca05721f03.txt"

  def jobs(self) -> list[base.Job]:
    jobs = []
    for method, _ in METHODS:
      for column in lester.COLUMNS_TASKLESS:
        for seed in SEEDS:
          bindings = lester.prompt_bindings(column.task, seed)
          if method == "prompt":
            bindings += ("get_method.name = 'prompt'",)
          jobs.append(base.Job(folder(method, column, seed), "train", bindings, task=column.task, seed=seed))
    return jobs

  def gather(self, records: Mapping[str, Any], size: str) -> base.Grid:
    rows = []
    for method, label in METHODS:
      cells, scores, ranked = [], [], []
      for column in lester.COLUMNS_TASKLESS:
        runs = [records.get(folder(method, column, s)) for s in SEEDS]
        bests = [lester.best_eval(r, column.task) for r in runs]
        mean, rank = (base.metric_means([benchmarks.task_metrics(column, b, mode) if b else None for b in bests])
                      for mode in benchmarks.MODES)
        cells.append(base.fmt_pair(mean) if mean else base.MISSING)
        scores.append(benchmarks.score(mean) if mean else None)
        ranked.append(rank)
      rows.append((label, cells + [base.fmt(benchmarks.benchmark_score(scores)),
                                   base.fmt(benchmarks.rank_score(lester.COLUMNS_TASKLESS, ranked))]))
    columns = [c.header() for c in lester.COLUMNS_TASKLESS] + ["SuperGLUE score", "SuperGLUE score (rank)"]
    notes = [f"Mean over seeds {list(SEEDS)} of each run's best checkpoint on dev (decoded accuracy, F1 for MultiRC "
             "and ReCoRD); the SuperGLUE score is the mean of the task scores.",
             "The seeds quote no per-task number for prefix tuning on SuperGLUE; they state (Ma et al. 2022, "
             f"../shared/seeds/{self.seed_file}) that Prefix-Tuning, designed for generation, does less well on most "
             "NLU tasks.",
             benchmarks.rank_note(lester.COLUMNS_TASKLESS)]
    return base.Grid(f"{self.title} — T5 1.1 LM-adapted {size.upper()}", columns, rows, notes=notes)
