"""The benchmark columns the paper tables share: each task's registered name, its label, the metrics the papers
report for it (in our metric keys, `evaluation.metrics`) and the benchmark score (the mean over tasks of each task's
mean metric, as the SuperGLUE and GLUE leaderboards compute it).

The paper configs evaluate with `EvalConfig.mode = 'both'`: every metric twice, `decode/<key>` (greedy decoding
through the task's postprocessor and metric fns, as T5X prompt tuning's seqio evaluator) and `rank/<key>` (rank
classification over the label words). A table's cells are the decoded numbers (`task_metrics(..., "decode")`) and
its rank column the ranked ones; a run evaluated in one mode only (no prefixes) counts with its own numbers in the
decode cells. `can_rank` says whether a column has a rank number at all (free-text answers have none: "n/a").
"""
import dataclasses
from typing import Mapping, Optional, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Column:
  task: str  # The training task (registry name).
  label: str
  metrics: tuple[str, ...]  # Reported as "a/b" when there are two.
  metric_label: str
  eval_tasks: Optional[tuple[str, ...]] = None  # None: registry_utils.evaluation_tasks(task) (MNLI m+mm, WSC).

  def header(self) -> str:
    return f"{self.label} ({self.metric_label})"


SUPER_GLUE = (
    Column("super_glue_boolq_v102", "BoolQ", ("accuracy",), "acc"),
    Column("super_glue_cb_v102", "CB", ("accuracy", "mean_3class_f1"), "acc/F1"),
    Column("super_glue_copa_v102", "COPA", ("accuracy",), "acc"),
    Column("super_glue_multirc_v102", "MultiRC", ("exact_match", "f1"), "EM/F1a"),
    Column("super_glue_record_v102", "ReCoRD", ("em", "f1"), "EM/F1"),
    Column("super_glue_rte_v102", "RTE", ("accuracy",), "acc"),
    Column("super_glue_wic_v102", "WiC", ("accuracy",), "acc"),
    Column("super_glue_wsc_v102_simple_train", "WSC", ("accuracy",), "acc"),
)

GLUE = (
    Column("glue_mnli_v002", "MNLI", ("accuracy",), "acc, m/mm mean"),
    Column("glue_qqp_v002", "QQP", ("accuracy", "f1"), "acc/F1"),
    Column("glue_qnli_v002", "QNLI", ("accuracy",), "acc"),
    Column("glue_sst2_v002", "SST-2", ("accuracy",), "acc"),
    Column("glue_stsb_v002", "STS-B", ("pearson_corrcoef", "spearman_corrcoef"), "Pearson/Spearman"),
    Column("glue_mrpc_v002", "MRPC", ("accuracy", "f1"), "acc/F1"),
    Column("glue_rte_v002", "RTE", ("accuracy",), "acc"),
    Column("glue_cola_v002", "CoLA", ("matthews_corrcoef",), "MCC"),
)


def by_label(columns: Sequence[Column], labels: Sequence[str]) -> tuple[Column, ...]:
  known = {c.label: c for c in columns}
  return tuple(known[label] for label in labels)


def eval_tasks(column: Column) -> tuple[str, ...]:
  from xprompt_jax.tasks import registry_utils
  return column.eval_tasks or registry_utils.evaluation_tasks(column.task, "validation")


MODES = ("decode", "rank")


def can_rank(column: Column) -> bool:
  """Whether every evaluation task of the column can be rank-classified (label words or score metrics)."""
  import seqio
  from xprompt_jax.evaluation import metric_keys
  from xprompt_jax.tasks import registry_utils
  for name in eval_tasks(column):
    task = registry_utils.get_task_or_mixture(name)
    if not isinstance(task, seqio.Task) or "rank" not in metric_keys.task_modes(task, "both"):
      return False
  return True


def _key(metrics: Mapping[str, float], key: str, mode: str) -> str:
  """The key of metric `key` in `mode` among one evaluation's keys (module doc)."""
  prefixed = any(k.split("/", 1)[0] in MODES for k in metrics)
  return f"{mode}/{key}" if prefixed else key


def task_metrics(column: Column, by_eval_task: Optional[Mapping[str, Mapping[str, float]]],
                 mode: str = "decode") -> Optional[list[float]]:
  """The column's reported metrics in `mode` ("decode" or "rank") from one run's {eval task: metrics}; a task
  evaluated on several sets (MNLI matched + mismatched) reports each metric's mean over them. None when the run
  has no such evaluation (or, for "rank", the run was evaluated in one mode only)."""
  if mode not in MODES:
    raise ValueError(f"task_metrics: mode must be one of {MODES}, got {mode!r}")
  if by_eval_task is None:
    return None
  names = eval_tasks(column)
  if any(name not in by_eval_task for name in names):
    return None
  values = []
  for key in column.metrics:
    keys = {name: _key(by_eval_task[name], key, mode) for name in names}
    if mode == "rank" and any(k == key or k not in by_eval_task[name] for name, k in keys.items()):
      return None  # Evaluated in one mode only, or a task without label words: no rank number.
    missing = [name for name in names if keys[name] not in by_eval_task[name]]
    if missing:
      raise KeyError(f"{column.label}: the evaluation of {missing[0]} reports {sorted(by_eval_task[missing[0]])}, "
                     f"not {keys[missing[0]]!r}")
    values.append(float(np.mean([by_eval_task[name][keys[name]] for name in names])))
  return values


def rank_score(columns: Sequence[Column], values: Sequence[Optional[Sequence[float]]]) -> Optional[float]:
  """The benchmark score over the columns that can be rank-classified (`values`: each column's rank metrics)."""
  return benchmark_score([score(v) for c, v in zip(columns, values) if can_rank(c)])


def rank_note(columns: Sequence[Column]) -> str:
  """The line a table with a rank column adds: what the column is and which tasks it leaves out."""
  left_out = [c.label for c in columns if not can_rank(c)]
  return ("Cells: greedy decoding scored by the task's seqio postprocessor and metric fns (EvalConfig.mode='both'); "
          "the rank column: rank classification over the label words of the same evaluations"
          + (f", the mean over the tasks that have label words (not {', '.join(left_out)}: free-text answers)."
             if left_out else "."))


def score(values: Optional[Sequence[float]]) -> Optional[float]:
  """A task's score: the mean of its reported metrics (CB: acc and F1)."""
  return None if values is None else float(np.mean(values))


def benchmark_score(task_scores: Sequence[Optional[float]]) -> Optional[float]:
  """The benchmark score: the mean of the task scores; None unless every task has one."""
  if not task_scores or any(s is None for s in task_scores):
    return None
  return float(np.mean(task_scores))
