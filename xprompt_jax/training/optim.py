"""The optimizer: Lester et al.'s prompt-tuning Adafactor recipe (default) or AdamW, built from optax parts.

Default (`OptimizerConfig()`), the T5X prompt-tuning setup of Lester et al. (2021)
(`prompt_tuning/configs/models/t5_1_1_prompt.gin` + `runs/prompt_finetune.gin`): Adafactor, constant learning
rate 0.3, `decay_rate` 0.8, `step_offset` 0, no parameter-scale multiplication, update clipping 1.0, second
moments factored only when two dims are >= 128, weight decay 1e-5, no momentum, epsilon1 1e-30, epsilon2 1e-3.

One Adafactor update of a leaf `p` with gradient `g` at optimizer step `s` (0 on the first update):

  beta2_s = 1 - (s - step_offset + 1) ** -decay_rate       # 0 at the first update, as T5X
  G = g**2 + epsilon1
  factored (the two largest dims, the smaller of them >= min_dim_size_to_factor; `c` = largest, `r` = other):
    v_row = beta2_s * v_row + (1 - beta2_s) * mean_c(G)     # shape without dim c
    v_col = beta2_s * v_col + (1 - beta2_s) * mean_r(G)     # shape without dim r
    u = g / sqrt(v_row * v_col / mean_r(v_row))             # outer product, broadcast back
  unfactored:
    v = beta2_s * v + (1 - beta2_s) * G;  u = g / sqrt(v)
  u = u / max(1, rms(u) / clipping_threshold)               # update clipping, per leaf
  step = lr(s) * u                                          # * max(rms(p), epsilon2) if multiply_by_parameter_scale
  step = beta1 * m + (1 - beta1) * step  (m <- step)        # only when beta1 is set (no debiasing, as T5X)
  p_new = p - step - weight_decay_rate * p

Step counting. T5X (`t5x/adafactor.py`, `_decay_rate_pow`) uses `1 - (step - step_offset + 1) ** -decay_rate`
with `step` the optimizer step starting at 0. optax's `scale_by_factored_rms` counts the same way (its `count`
starts at 0 and `decay_rate_fn(count - step_offset, decay_rate)` is called before the increment); we still pass
our own `second_moment_decay` as `decay_rate_fn` so the formula is owned and tested here. The learning-rate
schedule is evaluated at the same 0-based count (T5X calls `learning_rate_fn(step)` with the train-state step).

Weight decay. T5X Adafactor applies `p <- (1 - weight_decay_rate) * p - lr * u`: the decay is NOT multiplied by
the learning rate (only `weight_decay_rate_lr_exponent`, unused by the prompt-tuning configs, would do that).
optax's `add_decayed_weights` placed after `scale_by_learning_rate` gives exactly that, which is what we build.
For `optimizer="adamw"` the decay follows optax.adamw and IS multiplied by the learning rate.

Remaining differences from T5X, by design:
  * T5X fine-tuning restores the pretrained checkpoint's step (its TRAIN_STEPS include the pretraining steps), so
    in the original runs `beta2` at the first prompt update is already `1 - (S + 1) ** -0.8` for the checkpoint
    step S (S = 1_100_000 for the LM-adapted T5 1.1 checkpoints: beta2 ~ 1 - 1.46e-5). We start at 0 (a fresh
    optimizer for the new parameters). To reproduce the original dynamics set `step_offset = -S`.
  * Factoring uses the "two largest dims" heuristic for every rank (optax); T5X requires explicit logical factor
    rules for rank > 2 leaves. Prompts ([length, embed]) and MPT vectors are rank <= 2, where both agree.
  * Statistics are kept in the parameter dtype (optax); T5X always keeps them in float32. Trainable trees are
    float32 here, so the two coincide.
"""
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import gin
import jax
import jax.numpy as jnp
import optax

_OPTIMIZERS = ("adafactor", "adamw")
_SCHEDULES = ("constant", "rsqrt", "cosine")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Optimizer hyper-parameters; the defaults are the Lester et al. prompt-tuning Adafactor recipe.

  schedule: "constant" (linear warmup over `warmup_steps`, then `learning_rate`), "rsqrt" (linear warmup, then
  `learning_rate * sqrt(warmup_steps / step)`, the T5X `linear_warmup * rsqrt_decay` shape normalised so the
  peak equals `learning_rate`) or "cosine" (linear warmup, then cosine decay to `end_learning_rate` at
  `total_steps`). Warmups start at 0 on step 0, as in T5X and optax.
  """

  optimizer: str = "adafactor"  # "adafactor" | "adamw"
  learning_rate: float = 0.3
  schedule: str = "constant"  # "constant" | "rsqrt" | "cosine"
  warmup_steps: int = 0
  total_steps: int | None = None  # Needed by "cosine".
  end_learning_rate: float = 0.0  # Final value of the "cosine" schedule.
  global_norm_clip: float | None = None  # Clip gradients by global norm before the optimizer (off by default).
  # Adafactor.
  decay_rate: float = 0.8
  step_offset: int = 0
  factored: bool = True
  min_dim_size_to_factor: int = 128
  multiply_by_parameter_scale: bool = False
  clipping_threshold: float | None = 1.0
  beta1: float | None = None
  weight_decay_rate: float | None = 1e-5  # Adafactor: not lr-scaled (T5X). AdamW: lr-scaled (optax.adamw).
  epsilon1: float = 1e-30
  epsilon2: float = 1e-3
  # AdamW.
  adam_b1: float = 0.9
  adam_b2: float = 0.999
  adam_eps: float = 1e-8
  # Per-label peak learning rates for methods that label their parameters (MPT: ('shared', 0.3), ('task', 0.3)),
  # as (label, lr) pairs so gin can bind them; None: every parameter uses `learning_rate`.
  label_learning_rates: tuple[tuple[str, float], ...] | None = None

  def __post_init__(self):
    if self.optimizer not in _OPTIMIZERS:
      raise ValueError(f"OptimizerConfig.optimizer={self.optimizer!r} is not one of {_OPTIMIZERS}")
    if self.schedule not in _SCHEDULES:
      raise ValueError(f"OptimizerConfig.schedule={self.schedule!r} is not one of {_SCHEDULES}")
    for field in ("learning_rate", "end_learning_rate", "decay_rate"):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"OptimizerConfig.{field}={value!r} must be a number, got a {type(value).__name__}")
    if not self.learning_rate > 0:
      raise ValueError(f"OptimizerConfig.learning_rate must be > 0, got {self.learning_rate}")
    if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
      raise ValueError(f"OptimizerConfig.warmup_steps must be an int >= 0, got {self.warmup_steps!r}")
    if self.schedule == "cosine":
      if self.total_steps is None or self.total_steps <= self.warmup_steps:
        raise ValueError(f"OptimizerConfig.schedule='cosine' needs total_steps > warmup_steps "
                         f"({self.warmup_steps}), got total_steps={self.total_steps!r}")
    for field in ("global_norm_clip", "clipping_threshold"):
      value = getattr(self, field)
      if value is not None and not value > 0:
        raise ValueError(f"OptimizerConfig.{field} must be > 0 or None, got {value}")
    if not self.decay_rate > 0:
      raise ValueError(f"OptimizerConfig.decay_rate (the beta2 schedule exponent) must be > 0, got "
                       f"{self.decay_rate}")
    if self.beta1 is not None and not 0.0 <= self.beta1 < 1.0:
      raise ValueError(f"OptimizerConfig.beta1 must be in [0, 1) or None, got {self.beta1}")
    if self.weight_decay_rate is not None and self.weight_decay_rate < 0:
      raise ValueError(f"OptimizerConfig.weight_decay_rate must be >= 0 or None, got {self.weight_decay_rate}")
    if self.min_dim_size_to_factor < 1:
      raise ValueError(f"OptimizerConfig.min_dim_size_to_factor must be >= 1, got {self.min_dim_size_to_factor}")

  def replace(self, **kwargs) -> "OptimizerConfig":
    return dataclasses.replace(self, **kwargs)


def second_moment_decay(step, decay_rate: float = 0.8):
  """T5X's Adafactor beta2 schedule `1 - (step + 1) ** -decay_rate` (step 0-based, step_offset already removed)."""
  t = jnp.asarray(step, jnp.float32) + 1.0
  return 1.0 - t ** (-decay_rate)


def learning_rate_fn(cfg: OptimizerConfig, learning_rate: float | None = None) -> optax.Schedule:
  """The learning-rate schedule of `cfg` (peak `learning_rate`, default `cfg.learning_rate`), for use and logging."""
  peak = cfg.learning_rate if learning_rate is None else float(learning_rate)
  warmup = cfg.warmup_steps
  if cfg.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak, warmup_steps=warmup, decay_steps=cfg.total_steps,
        end_value=cfg.end_learning_rate)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    lr = jnp.asarray(peak, jnp.float32)
    if warmup > 0:
      lr = lr * jnp.minimum(1.0, step / warmup)
    if cfg.schedule == "rsqrt":
      w = max(warmup, 1)
      lr = lr * jnp.sqrt(w / jnp.maximum(step, w))
    return lr

  return schedule


def _adafactor(cfg: OptimizerConfig, schedule: optax.Schedule) -> optax.GradientTransformation:
  parts = [optax.scale_by_factored_rms(
      factored=cfg.factored, decay_rate=cfg.decay_rate, step_offset=cfg.step_offset,
      min_dim_size_to_factor=cfg.min_dim_size_to_factor, epsilon=cfg.epsilon1, decay_rate_fn=second_moment_decay)]
  if cfg.clipping_threshold is not None:
    parts.append(optax.clip_by_block_rms(cfg.clipping_threshold))
  parts.append(optax.scale_by_learning_rate(schedule, flip_sign=False))
  if cfg.multiply_by_parameter_scale:
    parts.append(optax.scale_by_param_block_rms(min_scale=cfg.epsilon2))
  if cfg.beta1 is not None:
    parts.append(optax.ema(cfg.beta1, debias=False))
  if cfg.weight_decay_rate:
    parts.append(optax.add_decayed_weights(cfg.weight_decay_rate))
  parts.append(optax.scale(-1.0))
  return optax.chain(*parts)


def _base_optimizer(cfg: OptimizerConfig, schedule: optax.Schedule) -> optax.GradientTransformation:
  if cfg.optimizer == "adamw":
    return optax.adamw(schedule, b1=cfg.adam_b1, b2=cfg.adam_b2, eps=cfg.adam_eps,
                       weight_decay=cfg.weight_decay_rate or 0.0)
  return _adafactor(cfg, schedule)


def _path_str(path) -> str:
  return jax.tree_util.keystr(path, simple=True, separator="/") or "<root>"


def _labels_by_path(labels, params=None) -> dict[str, list[str]]:
  """{label: [param paths]} for a label tree (a prefix of `params` when they are given)."""
  found: dict[str, list[str]] = {}
  if params is None:
    flat = jax.tree_util.tree_flatten_with_path(labels)[0]
  else:
    flat = []
    try:
      jax.tree_util.tree_map_with_path(lambda path, label, _: flat.append((path, label)), labels, params)
    except ValueError as e:
      raise ValueError(f"param_labels do not match the trainable params: the label tree "
                       f"{jax.tree_util.tree_structure(labels)} must have the params' structure (or a prefix of "
                       f"it), params are {jax.tree_util.tree_structure(params)}") from e
  for path, label in flat:
    if not isinstance(label, str):
      raise ValueError(f"param_labels leaf at {_path_str(path)} is {label!r}; labels must be strings")
    found.setdefault(label, []).append(_path_str(path))
  return found


def _check_labels(labels, label_lrs: Mapping[str, float], params=None) -> None:
  for label, paths in _labels_by_path(labels, params).items():
    if label not in label_lrs:
      raise ValueError(f"param label {label!r} (on {', '.join(paths)}) has no learning rate in label_lrs "
                       f"(which has {sorted(label_lrs)})")


def _checked_partition(transforms: Mapping[str, optax.GradientTransformation],
                       param_labels) -> optax.GradientTransformationExtraArgs:
  """optax.partition whose init fails with the offending label and paths instead of a KeyError."""
  inner = optax.partition(transforms, param_labels)

  def init_fn(params):
    labels = param_labels(params) if callable(param_labels) else param_labels
    _check_labels(labels, transforms, params)
    return inner.init(params)

  return optax.GradientTransformationExtraArgs(init_fn, inner.update)


def make_optimizer(cfg: OptimizerConfig | None = None,
                   param_labels: Any | Callable[[Any], Any] | None = None,
                   label_lrs: Mapping[str, float] | None = None) -> optax.GradientTransformation:
  """The optimizer of `cfg` for the trainable tree only (frozen params are never given to it).

  With `param_labels` (a label tree like the params, or a prefix of it, or a function params -> such a tree)
  and `label_lrs` ({"shared": 0.3, "task": 0.05}), each label gets the same optimizer with its own peak learning
  rate (optax.partition), e.g. MPT's shared prompt P* vs the task vectors u, v. A label whose rate is 0 is frozen
  (`optax.set_to_zero`: no update, no weight decay, no optimizer state), e.g. MPT's ablations that tune only P* or
  only u, v. Gradient clipping by global norm,
  when set, acts on the whole tree before the split.
  """
  cfg = OptimizerConfig() if cfg is None else cfg
  if (param_labels is None) != (label_lrs is None):
    raise ValueError("make_optimizer needs both param_labels and label_lrs, or neither "
                     f"(got param_labels={'set' if param_labels is not None else None}, label_lrs={label_lrs!r})")
  if param_labels is None:
    tx = _base_optimizer(cfg, learning_rate_fn(cfg))
  else:
    if not label_lrs:
      raise ValueError("make_optimizer: label_lrs is empty")
    for label, lr in label_lrs.items():
      if not lr >= 0:
        raise ValueError(f"label_lrs[{label!r}] must be >= 0 (0 freezes the label's parameters), got {lr}")
    if not callable(param_labels):
      _check_labels(param_labels, label_lrs)
    tx = _checked_partition(
        {label: optax.set_to_zero() if lr == 0 else _base_optimizer(cfg, learning_rate_fn(cfg, lr))
         for label, lr in label_lrs.items()}, param_labels)
  if cfg.global_norm_clip is not None:
    tx = optax.chain(optax.clip_by_global_norm(cfg.global_norm_clip), tx)
  return tx
