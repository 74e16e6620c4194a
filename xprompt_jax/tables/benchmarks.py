"""The benchmark columns the paper tables share: each task's registered name, its label, the metrics the papers
report for it (in our metric keys, `evaluation.metrics`) and the benchmark score (the mean over tasks of each task's
mean metric, as the SuperGLUE and GLUE leaderboards compute it)."""
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


def task_metrics(column: Column, by_eval_task: Optional[Mapping[str, Mapping[str, float]]]
                 ) -> Optional[list[float]]:
  """The column's reported metrics from one run's {eval task: metrics}; a task evaluated on several sets (MNLI
  matched + mismatched) reports each metric's mean over them. None when the run has no such evaluation."""
  if by_eval_task is None:
    return None
  names = eval_tasks(column)
  if any(name not in by_eval_task for name in names):
    return None
  values = []
  for key in column.metrics:
    missing = [name for name in names if key not in by_eval_task[name]]
    if missing:
      raise KeyError(f"{column.label}: the evaluation of {missing[0]} reports {sorted(by_eval_task[missing[0]])}, "
                     f"not {key!r}")
    values.append(float(np.mean([by_eval_task[name][key] for name in names])))
  return values


def score(values: Optional[Sequence[float]]) -> Optional[float]:
  """A task's score: the mean of its reported metrics (CB: acc and F1)."""
  return None if values is None else float(np.mean(values))


def benchmark_score(task_scores: Sequence[Optional[float]]) -> Optional[float]:
  """The benchmark score: the mean of the task scores; None unless every task has one."""
  if not task_scores or any(s is None for s in task_scores):
    return None
  return float(np.mean(task_scores))
