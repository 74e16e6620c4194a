"""The T5X run macros a prompt-tuning user sets, bound through to this project's settings by the recipes.

T5X's `finetune.gin` and google-research/prompt-tuning's `prompt_finetune.gin` are driven by `MIXTURE_OR_TASK_NAME`,
`TASK_FEATURE_LENGTHS` (a dict of feature -> length), `TRAIN_STEPS`, `BATCH_SIZE`, `USE_CACHED_TASKS` and
`INITIAL_CHECKPOINT_PATH`. The recipes (`gin/recipes/*.gin`) define the same macros and bind them to
`DataConfig` / `EvalConfig` / `TrainConfig` with the two configurables here, so `--gin.TRAIN_STEPS=1130000`
or `--gin.TASK_FEATURE_LENGTHS="{'inputs': 256, 'targets': 8}"` mean what they mean in T5X:

  inputs/t5x_feature_length.lengths = %TASK_FEATURE_LENGTHS
  inputs/t5x_feature_length.feature = 'inputs'
  DataConfig.inputs_length = @inputs/t5x_feature_length()
  t5x_tuning_steps.train_steps = %TRAIN_STEPS          # None: t5x_tuning_steps.tuning_steps
  t5x_tuning_steps.initial_checkpoint = %INITIAL_CHECKPOINT_PATH
  TrainConfig.num_train_steps = @t5x_tuning_steps()

T5X's TRAIN_STEPS counts the initial checkpoint's own steps ("TRAIN_STEPS should include pre-training steps":
1,130,000 from `checkpoint_1100000` is 30,000 steps of tuning); this trainer counts tuning steps only, so the
checkpoint's step, read from its `checkpoint_N` folder name, is subtracted. Left at None (the recipes' default),
`t5x_tuning_steps.tuning_steps` is the number of steps. A later binding of the target itself
(`--gin.TrainConfig.num_train_steps=2`) still wins, as gin's last binding always does.
"""
import re
from typing import Mapping, Optional

import gin

FEATURES = ("inputs", "targets")
_STEP = re.compile(r"checkpoint_(\d+)/?$")


@gin.configurable
def t5x_feature_length(lengths: Mapping[str, int] = gin.REQUIRED, feature: str = gin.REQUIRED) -> int:
  """`TASK_FEATURE_LENGTHS[feature]`, with the dict checked as T5X's encoder-decoder feature converter needs it."""
  if not isinstance(lengths, Mapping) or set(lengths) != set(FEATURES):
    raise ValueError(f"TASK_FEATURE_LENGTHS={lengths!r} must be a dict with exactly the keys 'inputs' and 'targets' "
                     "(an encoder-decoder T5)")
  value = lengths[feature]
  if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
    raise ValueError(f"TASK_FEATURE_LENGTHS[{feature!r}]={value!r} must be a positive int")
  return value


def checkpoint_step(path: Optional[str]) -> Optional[int]:
  """The step of a T5X checkpoint folder `.../checkpoint_N` (None when the name does not say)."""
  m = _STEP.search(path or "")
  return int(m.group(1)) if m else None


@gin.configurable
def t5x_tuning_steps(train_steps: Optional[int] = None, initial_checkpoint: Optional[str] = None,
                     tuning_steps: int = 30_000) -> int:
  """Tuning steps from T5X's TRAIN_STEPS, which includes the initial checkpoint's step; `tuning_steps` when
  TRAIN_STEPS is None (then any checkpoint works: HF, Orbax, a folder not named checkpoint_N)."""
  if train_steps is None:
    return tuning_steps
  if not isinstance(train_steps, int) or isinstance(train_steps, bool):
    raise ValueError(f"TRAIN_STEPS={train_steps!r} must be an int")
  step = checkpoint_step(initial_checkpoint) if initial_checkpoint else 0
  if step is None:
    raise ValueError(f"TRAIN_STEPS={train_steps} counts the initial checkpoint's steps (T5X), but the step of "
                     f"INITIAL_CHECKPOINT_PATH={initial_checkpoint!r} cannot be read from its name (checkpoint_N); "
                     "bind TrainConfig.num_train_steps to the number of tuning steps instead")
  if train_steps <= step:
    raise ValueError(f"TRAIN_STEPS={train_steps} is not past the initial checkpoint's step {step} "
                     f"({initial_checkpoint}): T5X counts the pretraining steps, so {step} + N trains N steps "
                     f"(e.g. TRAIN_STEPS={step + 30000} for 30,000)")
  return train_steps - step
