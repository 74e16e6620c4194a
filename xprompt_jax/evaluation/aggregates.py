"""Benchmark scores (SuperGLUE, GLUE) from per-task metric dicts, computed the way the leaderboards and T5 do.

Each benchmark task has a score = the mean of its own metrics (CB: accuracy and macro-F1; MultiRC: F1a and EM;
ReCoRD: F1 and EM; MRPC/QQP: F1 and accuracy; STS-B: Pearson and Spearman; MNLI: matched and mismatched
accuracy), and the benchmark score is the unweighted mean of the task scores. GLUE leaves out WNLI (and the AX
diagnostic), as T5 does; SuperGLUE uses its 8 tasks (no AX-b / AX-g).

`results` maps evaluation task names (what a mixture evaluation reports: MNLI's matched/mismatched sets, WSC's
`simple_eval`) to metric dicts as returned by `xprompt_jax.evaluation.metrics`. A benchmark task is found under its
T5 task name or any name that starts with it (e.g. `super_glue_copa_v102_rank`).
"""
import dataclasses
from typing import Mapping

import numpy as np


@dataclasses.dataclass(frozen=True)
class BenchmarkTask:
  """One benchmark task: its display name and the (task name, metric key) pairs averaged into its score."""
  name: str
  metrics: tuple[tuple[str, str], ...]


SUPERGLUE_TASKS = (
    BenchmarkTask("BoolQ", (("super_glue_boolq_v102", "accuracy"),)),
    BenchmarkTask("CB", (("super_glue_cb_v102", "accuracy"), ("super_glue_cb_v102", "mean_3class_f1"))),
    BenchmarkTask("COPA", (("super_glue_copa_v102", "accuracy"),)),
    BenchmarkTask("MultiRC", (("super_glue_multirc_v102", "f1"), ("super_glue_multirc_v102", "exact_match"))),
    BenchmarkTask("ReCoRD", (("super_glue_record_v102", "f1"), ("super_glue_record_v102", "em"))),
    BenchmarkTask("RTE", (("super_glue_rte_v102", "accuracy"),)),
    BenchmarkTask("WiC", (("super_glue_wic_v102", "accuracy"),)),
    # WSC trains on `simple_train` (no validation) and is scored on `simple_eval`, T5's WSC tag.
    BenchmarkTask("WSC", (("super_glue_wsc_v102_simple_eval", "accuracy"),)),
)

GLUE_TASKS = (
    BenchmarkTask("CoLA", (("glue_cola_v002", "matthews_corrcoef"),)),
    BenchmarkTask("SST-2", (("glue_sst2_v002", "accuracy"),)),
    BenchmarkTask("MRPC", (("glue_mrpc_v002", "f1"), ("glue_mrpc_v002", "accuracy"))),
    BenchmarkTask("STS-B", (("glue_stsb_v002", "pearson_corrcoef"), ("glue_stsb_v002", "spearman_corrcoef"))),
    BenchmarkTask("QQP", (("glue_qqp_v002", "f1"), ("glue_qqp_v002", "accuracy"))),
    # MNLI counts once, as the mean of MNLI-m and MNLI-mm (T5's `compute_avg_glue` groups both into one "MNLI").
    BenchmarkTask("MNLI", (("glue_mnli_matched_v002", "accuracy"), ("glue_mnli_mismatched_v002", "accuracy"))),
    BenchmarkTask("QNLI", (("glue_qnli_v002", "accuracy"),)),
    BenchmarkTask("RTE", (("glue_rte_v002", "accuracy"),)),
)


def _find_task(results: Mapping[str, Mapping[str, float]], prefix: str) -> str | None:
  """The one results key equal to `prefix` or starting with `prefix + '_'`; None if absent, error if ambiguous."""
  if prefix in results:
    return prefix
  hits = sorted(k for k in results if k.startswith(prefix + "_"))
  if len(hits) > 1:
    raise ValueError(f"several results match task {prefix!r}: {hits}; pass only the one to score")
  return hits[0] if hits else None


def benchmark_score(results: Mapping[str, Mapping[str, float]], tasks: tuple[BenchmarkTask, ...],
                    benchmark: str, allow_partial: bool = False) -> dict[str, float]:
  """Per-task scores (keyed by display name) and their unweighted mean under key `benchmark`.

  Raises ValueError listing every missing task / metric unless `allow_partial`, in which case the mean is over
  the tasks present (and is reported under `benchmark` with `num_tasks` saying how many).
  """
  scores: dict[str, float] = {}
  missing: list[str] = []
  for task in tasks:
    values = []
    for prefix, key in task.metrics:
      found = _find_task(results, prefix)
      if found is None:
        missing.append(f"{task.name}: task {prefix}")
      elif key not in results[found]:
        missing.append(f"{task.name}: metric {key!r} of {found} (has {sorted(results[found])})")
      else:
        values.append(float(results[found][key]))
    if len(values) == len(task.metrics):
      scores[task.name] = float(np.mean(values))
  if missing and not allow_partial:
    listed = "\n  ".join(dict.fromkeys(missing))
    raise ValueError(f"{benchmark} score needs all of {[t.name for t in tasks]}; missing:\n  {listed}")
  if not scores:
    raise ValueError(f"{benchmark} score: none of {[t.name for t in tasks]} is in the results ({sorted(results)})")
  return {**scores, benchmark: float(np.mean(list(scores.values()))), "num_tasks": float(len(scores))}


def superglue_score(results: Mapping[str, Mapping[str, float]], allow_partial: bool = False) -> dict[str, float]:
  """The SuperGLUE score: mean over BoolQ, CB, COPA, MultiRC, ReCoRD, RTE, WiC, WSC of each task's metric mean."""
  return benchmark_score(results, SUPERGLUE_TASKS, "superglue", allow_partial)


def glue_score(results: Mapping[str, Mapping[str, float]], allow_partial: bool = False) -> dict[str, float]:
  """The GLUE score as T5 reports it: mean over CoLA, SST-2, MRPC, STS-B, QQP, MNLI(m/mm), QNLI, RTE (no WNLI)."""
  return benchmark_score(results, GLUE_TASKS, "glue", allow_partial)
