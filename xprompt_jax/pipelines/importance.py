"""XPrompt importance scores of the token and piece masks over the training set (Ma et al., 2022, eq. 3-4).

    I_γ = E_x |∂L(x)/∂γ|,    I_ζ = E_x |∂L(x)/∂ζ|      at the current masks (γ = ζ = 1 for a fresh prompt)

The absolute value is taken per example, so the gradient is per example: `jax.vmap(jax.grad(L))` over the rows
of a batch (each row is its own batch of one, its loss normalised by its own target tokens as in training). The
vmapped backward pass does the same FLOPs as one batched training step; sums of |∂L/∂γ| are accumulated on host
in float64 and divided by the number of examples at the end.

    scores, n = importance_scores(epoch_batches(examples, 16), model=model, method=method, config=config,
                                  loss_cfg=loss_cfg, frozen=frozen, prompt=prompt, masks=method.ones_masks())
"""
from typing import Iterable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from xprompt_jax.methods.xprompt import MASKS_KEY, XPrompt, XPromptMasks
from xprompt_jax.models.config import T5Config
from xprompt_jax.models.t5 import T5
from xprompt_jax.training import step as step_lib


def make_importance_step(model: T5, method: XPrompt, config: T5Config, loss_cfg: step_lib.LossConfig):
  """`step(frozen, prompt, masks, batch, n_valid) -> XPromptMasks` of Σ_x |∂L(x)/∂mask| over the first `n_valid`
  rows of `batch`, pure and ready for `jax.jit`."""

  def example_loss(masks, prompt, frozen, example):
    batch = jax.tree.map(lambda x: x[None], example)
    logits = step_lib.forward(model, method, config, frozen, {"prompt": prompt}, batch, {MASKS_KEY: masks})
    return step_lib.token_loss(logits, batch, loss_cfg)[0]

  per_example = jax.vmap(jax.grad(example_loss), in_axes=(None, None, None, 0))

  def importance_step(frozen, prompt, masks, batch, n_valid):
    grads = per_example(masks, prompt, frozen, batch)
    rows = next(iter(batch.values())).shape[0]
    valid = (jnp.arange(rows) < n_valid).astype(jnp.float32)
    return jax.tree.map(lambda g: jnp.einsum("b...,b->...", jnp.abs(g), valid), grads)

  return importance_step


def importance_scores(batches: Iterable[tuple[dict, int]], *, model: T5, method: XPrompt, config: T5Config,
                      loss_cfg: step_lib.LossConfig, frozen, prompt, masks: Optional[XPromptMasks] = None,
                      step_fn=None) -> tuple[XPromptMasks, int]:
  """(E_x |∂L(x)/∂γ|, E_x |∂L(x)/∂ζ|) as host float32 arrays, and the number of examples averaged over.

  `batches` yields `(batch, n_valid)` (e.g. `examples.epoch_batches`); `masks` defaults to all ones (γ = 1);
  `step_fn` is a jitted `make_importance_step` to reuse across calls."""
  masks = method.ones_masks() if masks is None else masks
  step_fn = step_fn or jax.jit(make_importance_step(model, method, config, loss_cfg))
  totals = None
  count = 0
  for batch, n_valid in batches:
    sums = jax.device_get(step_fn(frozen, prompt, masks, batch, n_valid))
    sums = jax.tree.map(lambda x: np.asarray(x, np.float64), sums)
    totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
    count += int(n_valid)
  if not count:
    raise ValueError("importance_scores: the training data yielded no examples")
  return jax.tree.map(lambda x: (x / count).astype(np.float32), totals), count
