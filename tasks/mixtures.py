"""SeqIO mixtures: T5's examples-proportional SuperGLUE and GLUE mixtures, MPT's 6 (and 12) source tasks, and a gin
helper. The SuperGLUE and GLUE mixtures carry their evaluation-only tasks at rate 0, as T5's do (`make_mixture`).

Examples-proportional rates use each task's `train` size capped at `mixture_cap()` (T5's 2**19 by default; bind
`mixture_cap.cap` in gin). Rates are computed when a mixture's dataset is built, so the cap binding and the data
source setting (local files or TFDS) apply then.
"""
from typing import Optional, Sequence

import gin
import seqio

from xprompt_jax.tasks import registry_utils as ru

DEFAULT_CAP = 2**19
get_task_or_mixture = ru.get_task_or_mixture

SUPER_GLUE_TRAIN_TASKS = ("super_glue_boolq_v102", "super_glue_cb_v102", "super_glue_copa_v102",
                          "super_glue_multirc_v102", "super_glue_record_v102", "super_glue_rte_v102",
                          "super_glue_wic_v102", "super_glue_wsc_v102_simple_train")
GLUE_TRAIN_TASKS = ("glue_cola_v002", "glue_sst2_v002", "glue_mrpc_v002", "glue_qqp_v002", "glue_stsb_v002",
                    "glue_mnli_v002", "glue_qnli_v002", "glue_rte_v002", "glue_wnli_v002")
MPT_SOURCE_TASKS = ("glue_mnli_v002", "glue_qnli_v002", "glue_qqp_v002", "glue_sst2_v002", "squad_v010_allanswers",
                    "super_glue_record_v102")
# The 12-source-task variant's extra tasks (MPT paper Table 7; `mpt_extra`): topic classification, multi-choice QA,
# OpenBookQA, ARC, adversarial NLI and commonsense reasoning.
MPT_EXTRA_SOURCE_TASKS = ("ag_news_subset_v100", "race_high_v200", "openbookqa_v010", "ai2_arc_challenge_v100",
                          "anli_r1_v010", "hellaswag_v110")


@gin.configurable
def mixture_cap(cap: int = DEFAULT_CAP) -> int:
  """The per-task example cap of examples-proportional mixing."""
  if cap <= 0:
    raise ValueError(f"mixture_cap.cap must be positive, got {cap}")
  return cap


class ExamplesProportionalRate:
  """A seqio rate function: the task's `train` size, capped (at `cap`, else at `mixture_cap()` when called)."""

  def __init__(self, cap: Optional[int] = None):
    self.cap = cap

  def __call__(self, task: seqio.Task) -> float:
    return seqio.mixing_rate_num_examples(task, maximum=self.cap or mixture_cap())

  def __repr__(self):
    return f"ExamplesProportionalRate(cap={self.cap or 'mixture_cap()'})"


@gin.configurable
def make_mixture(name: str, tasks: Sequence[str], rates: Optional[Sequence[float]] = None,
                 cap: Optional[int] = None, eval_only: Sequence[str] = ()) -> str:
  """Registers (or replaces) mixture `name` of `tasks` and returns its name, for use from gin.

  `rates` are relative sampling rates, one per task; None mixes examples-proportionally with `cap` (default
  `mixture_cap()`). `eval_only` tasks join at rate 0, as T5's eval-only tasks do (MNLI's matched/mismatched sets,
  WSC's `simple_eval`; `registry_utils.eval_only_tasks(tasks)` lists them): the mixture evaluator evaluates them,
  training never samples them (seqio skips a task without the split and gives a rate-0 task no draws). Unknown
  task names raise an error listing the closest registered names.
  """
  tasks = list(tasks)
  if not tasks:
    raise ValueError(f"make_mixture({name!r}): tasks is empty")
  eval_only = list(eval_only)
  for t in tasks + eval_only:
    get_task_or_mixture(t)
  if rates is None:
    rated = [(t, ExamplesProportionalRate(cap)) for t in tasks]
  else:
    rates = [float(r) for r in rates]
    if len(rates) != len(tasks):
      raise ValueError(f"make_mixture({name!r}): {len(rates)} rates for {len(tasks)} tasks {tasks}")
    bad = [(t, r) for t, r in zip(tasks, rates) if r < 0]
    if bad or not any(rates):
      raise ValueError(f"make_mixture({name!r}): rates must be >= 0 and not all 0, got {list(zip(tasks, rates))}")
    rated = list(zip(tasks, rates))
  rated += [(t, 0.0) for t in eval_only if t not in tasks]
  seqio.MixtureRegistry.remove(name)
  seqio.MixtureRegistry.add(name, rated)
  return name


DEFAULT_MIXTURES = {
    "super_glue_v102_proportional": SUPER_GLUE_TRAIN_TASKS,
    "glue_v002_proportional": GLUE_TRAIN_TASKS,
    "mpt_source_6": MPT_SOURCE_TASKS,
    "mpt_source_12": MPT_SOURCE_TASKS + MPT_EXTRA_SOURCE_TASKS,
}


# T5's benchmark mixtures carry their eval-only tasks at rate 0 (its weight mappings:
# `super_glue_wsc_v102_simple_eval`, `glue_mnli_matched_v002`, `glue_mnli_mismatched_v002` at 0.).
WITH_EVAL_ONLY = ("super_glue_v102_proportional", "glue_v002_proportional")


def register() -> None:
  """Registers the default mixtures (the benchmark ones with their eval-only tasks at rate 0)."""
  for name, tasks in DEFAULT_MIXTURES.items():
    make_mixture(name, tasks, eval_only=ru.eval_only_tasks(tasks) if name in WITH_EVAL_ONLY else ())


register()
