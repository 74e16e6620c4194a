"""MPT's settings (`MPTConfig`, bound from gin), checked when they are built; `pipelines.mpt` runs the stages."""
import dataclasses
from typing import Optional

import gin

from xprompt_jax.tasks import mixtures

SUPER_GLUE_TARGETS = ("super_glue_multirc_v102", "super_glue_boolq_v102", "super_glue_wic_v102",
                      "super_glue_wsc_v102_simple_train", "super_glue_cb_v102")
TARGET_UPDATES = ("both", "shared_only", "task_only")
TARGET_UV_INITS = ("mean", "matching_source", "ones")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MPTConfig:
  """The pipeline's settings; paper defaults (T5-Base: L = 100, 6 source tasks, 5 source epochs)."""
  source_tasks: tuple[str, ...] = mixtures.MPT_SOURCE_TASKS
  source_rates: Optional[tuple[float, ...]] = None  # None: examples-proportional mixing.
  target_tasks: tuple[str, ...] = SUPER_GLUE_TARGETS
  prompt_length: int = 100
  rank: int = 1
  prompt_init: str = "sampled_vocab"
  # 1. Teachers (plain prompt tuning).
  teacher_steps: int = 30_000
  teacher_learning_rate: float = 0.3
  # The split the source-side stages (teachers, distillation) are evaluated on; each task on its evaluation tasks
  # for it (`registry_utils.evaluation_tasks`: MNLI's "validation" is its matched and mismatched sets). Offline,
  # MNLI and QQP have no official validation file: "resplit_dev" (the held-out part of the local GLUE re-split
  # train, which MNLI itself has) monitors them.
  source_eval_split: str = "validation"
  # 2. Source training.
  source_epochs: float = 5.0
  source_steps: Optional[int] = None  # None: `source_epochs` passes over the (capped) source mixture.
  source_learning_rate: float = 0.3
  student_uv_init: str = "normal"  # The paper initialises the students randomly.
  student_prompt_init: Optional[str] = None  # The students' P* init (None: `prompt_init`, the teachers').
  # False: no decomposition (Table 6's ablation rows): u, v stay ones, one plain prompt P* is trained for every task.
  source_decomposition: bool = True
  # 3. Target adaptation.
  target_steps: int = 30_000
  shared_learning_rate: float = 0.3
  u_learning_rate: float = 0.3
  v_learning_rate: float = 0.3
  target_uv_init: str = "mean"  # "mean" of the sources' u_k, v_k | "matching_source" (same-named source) | "ones".
  target_update: str = "both"  # "both" | "shared_only" (u, v removed) | "task_only" (P* frozen).
  target_multitask: bool = False  # One MPT over the target group (P* shared across it).
  few_shot: tuple[int, ...] = ()  # k examples, e.g. (4, 16, 32); () trains on the full split.
  few_shot_seeds: tuple[int, ...] = (0, 1, 2)
  few_shot_per_class: bool = True  # k examples of each class (True) or k in all, drawn uniformly (False).
  # Ablation extras.
  extended_source_tasks: tuple[str, ...] = mixtures.MPT_EXTRA_SOURCE_TASKS  # The `sources_12` ablation's extra tasks.
  lengths: tuple[int, ...] = ()  # Prompt lengths of `run_length_sweep`.

  def __post_init__(self):
    if not self.source_tasks:
      raise ValueError("MPTConfig.source_tasks is empty")
    if not self.target_tasks:
      raise ValueError("MPTConfig.target_tasks is empty")
    if self.source_rates is not None and len(self.source_rates) != len(self.source_tasks):
      raise ValueError(f"MPTConfig.source_rates has {len(self.source_rates)} rates for "
                       f"{len(self.source_tasks)} source tasks {list(self.source_tasks)}")
    for field in ("prompt_length", "rank", "teacher_steps", "target_steps"):
      value = getattr(self, field)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"MPTConfig.{field} must be a positive int, got {value!r}")
    if self.target_update not in TARGET_UPDATES:
      raise ValueError(f"MPTConfig.target_update={self.target_update!r}; known: {', '.join(TARGET_UPDATES)}")
    if self.target_uv_init not in TARGET_UV_INITS:
      raise ValueError(f"MPTConfig.target_uv_init={self.target_uv_init!r}; known: {', '.join(TARGET_UV_INITS)}")
    for field in ("teacher_learning_rate", "source_learning_rate"):
      if not getattr(self, field) > 0:
        raise ValueError(f"MPTConfig.{field} must be > 0, got {getattr(self, field)}")
    for field in ("shared_learning_rate", "u_learning_rate", "v_learning_rate"):
      if not getattr(self, field) >= 0:
        raise ValueError(f"MPTConfig.{field} must be >= 0 (0 freezes), got {getattr(self, field)}")
    if any(not isinstance(k, int) or k <= 0 for k in self.few_shot):
      raise ValueError(f"MPTConfig.few_shot must hold positive ints (numbers of examples), got {self.few_shot}")
    if self.few_shot and not self.few_shot_seeds:
      raise ValueError("MPTConfig.few_shot is set but few_shot_seeds is empty")
    if self.few_shot and self.target_multitask:
      raise ValueError("MPTConfig.few_shot and MPTConfig.target_multitask are exclusive: few-shot adaptation runs "
                       "one target task at a time")

  def replace(self, **kwargs) -> "MPTConfig":
    return dataclasses.replace(self, **kwargs)
