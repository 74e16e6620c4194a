"""Multitask prompt tuning (MPT, Wang et al., 2023): a shared prompt modulated per task by a low-rank product.

Trainable tree: `{"shared_prompt": P* [L, D], "u": [T, L, r], "v": [T, D, r]}`; task k's prompt is the Hadamard
product `P_k = P* ∘ (u_k v_kᵀ)` (rank r = 1 in the paper). `inject` reads each example's task from
`batch["task_id"]` ([B] ints; optional when T = 1) and returns a per-example prompt `[B, L, D]`. Out-of-range task
ids raise a `ValueError` when the ids are concrete (`check_task_ids`, also for the trainer's host-side check);
inside `jit` they select NaN factors, so a bad id shows as a NaN loss rather than another task's prompt.

`param_labels` labels P* "shared" and u, v "task" (the paper tunes them with separate learning rates), and
`target_init_from_sources` starts target tasks from a source-trained tree: P* copied, u_t, v_t the mean of the
source tasks' factors.
"""
import dataclasses
from typing import Any, Optional

import gin
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from xprompt_jax.methods.base import Method, Trainable
from xprompt_jax.methods.prompt import PROMPT_AXES, PromptTuning
from xprompt_jax.models.config import T5Config
from xprompt_jax.models.injection import Injection

UV_INITS = ("ones", "normal")


def check_task_ids(batch: dict, num_tasks: int) -> None:
  """Raises a `ValueError` naming the offending values and positions when `batch["task_id"]` is out of range."""
  if "task_id" not in batch:
    if num_tasks != 1:
      raise ValueError(f"MPT with {num_tasks} tasks needs batch['task_id'] ([batch] ints); the batch has keys "
                       f"{sorted(batch)}")
    return
  ids = np.asarray(batch["task_id"])
  if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
    raise ValueError(f"batch['task_id'] must be a 1-D int array, got dtype {ids.dtype} and shape {ids.shape}")
  bad = np.flatnonzero((ids < 0) | (ids >= num_tasks))
  if bad.size:
    raise ValueError(f"batch['task_id'] holds out-of-range task ids {ids[bad].tolist()} at positions "
                     f"{bad.tolist()}; valid ids are 0..{num_tasks - 1} (MPT.num_tasks={num_tasks})")


def _is_host_checkable(x) -> bool:
  """Concrete ids this process can read (not a jit tracer, not another host's shards)."""
  if isinstance(x, jax.core.Tracer):
    return False
  return not isinstance(x, jax.Array) or x.is_fully_addressable


def task_prompts(trainable: Trainable) -> jax.Array:
  """Every task's prompt `P* ∘ (u_k v_kᵀ)`: `[T, L, D]`."""
  return trainable["shared_prompt"] * jnp.einsum("tlr,tdr->tld", trainable["u"], trainable["v"])


def target_init_from_sources(source_trainable: Trainable, num_targets: int = 1) -> Trainable:
  """A target-task MPT tree: P* from the source training, each target's u, v the mean of the sources' u_k, v_k."""
  if num_targets <= 0:
    raise ValueError(f"target_init_from_sources: num_targets must be positive, got {num_targets}")
  u = jnp.mean(source_trainable["u"], axis=0, keepdims=True)
  v = jnp.mean(source_trainable["v"], axis=0, keepdims=True)
  return {"shared_prompt": jnp.asarray(source_trainable["shared_prompt"]),
          "u": jnp.repeat(u, num_targets, axis=0), "v": jnp.repeat(v, num_targets, axis=0)}


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MPT(PromptTuning):
  """P* is initialised like a prompt-tuning prompt (`prompt_init` and the inherited fields); u, v by `uv_init`."""

  num_tasks: int = 1
  rank: int = 1
  uv_init: str = "ones"  # "ones": P_k = P* at init; "normal": N(0, uv_init_std), the paper's random student init.
  uv_init_std: float = 1.0

  name = "mpt"

  def __post_init__(self):
    super().__post_init__()
    for field in ("num_tasks", "rank"):
      value = getattr(self, field)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"MPT.{field} must be a positive int, got {value!r}")
    if self.uv_init not in UV_INITS:
      raise ValueError(f"MPT.uv_init={self.uv_init!r}; known: {', '.join(UV_INITS)}")

  def init(self, rng: jax.Array, frozen_params, config: T5Config) -> Trainable:
    rng_p, rng_u, rng_v = jax.random.split(rng, 3)
    dtype = jnp.dtype(config.param_dtype)
    u_shape, v_shape = (self.num_tasks, self.length, self.rank), (self.num_tasks, config.emb_dim, self.rank)
    if self.uv_init == "ones":
      u, v = jnp.ones(u_shape, dtype), jnp.ones(v_shape, dtype)
    else:
      u = self.uv_init_std * jax.random.normal(rng_u, u_shape, dtype)
      v = self.uv_init_std * jax.random.normal(rng_v, v_shape, dtype)
    return {"shared_prompt": self.init_prompt(rng_p, frozen_params, config), "u": u, "v": v}

  def inject(self, trainable: Trainable, batch: dict, config: T5Config) -> Injection:
    del config
    task_id: Optional[Any] = batch.get("task_id")
    if task_id is None or _is_host_checkable(task_id):
      check_task_ids(batch, self.num_tasks)
    if task_id is None:
      return Injection(prompt=task_prompts(trainable)[0])
    u = jnp.take(trainable["u"], task_id, axis=0, mode="fill", fill_value=jnp.nan)
    v = jnp.take(trainable["v"], task_id, axis=0, mode="fill", fill_value=jnp.nan)
    return Injection(prompt=trainable["shared_prompt"] * jnp.einsum("blr,bdr->bld", u, v))

  def logical_axes(self, config: T5Config):
    del config
    return {"shared_prompt": PROMPT_AXES, "u": PartitionSpec("tasks", "prompt_length", "rank"),
            "v": PartitionSpec("tasks", "prompt_embed", "rank")}

  def param_labels(self, trainable: Trainable):
    del trainable
    return {"shared_prompt": "shared", "u": "task", "v": "task"}
