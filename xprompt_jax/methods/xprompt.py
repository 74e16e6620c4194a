"""XPrompt (Ma et al., 2022): prompt tuning whose prompt tokens and token pieces can be masked out.

The trainable tree is prompt tuning's `{"prompt": [L, D]}`. The masks are *not* trained and live outside it,
in an `XPromptMasks` pytree: a token mask γ ∈ ℝ^L and a piece mask ζ ∈ ℝ^{L×k} over k equal pieces of each prompt
vector (D must be divisible by k). The effective prompt is

    prompt_eff[i, piece j] = prompt[i, piece j] · γ[i] · ζ[i, j]

`inject_with_masks(trainable, masks, batch, config)` is differentiable in the masks, so the paper's importance
scores I = E_x |∂L(x)/∂γ| (and likewise for ζ) come from `jax.grad` w.r.t. the masks (`mask_importance`), and
`prune_masks` zeroes the lowest-scoring tokens, then pieces of the surviving tokens. During the rewinding stage
the pruned (0/1) masks are passed to `inject(..., masks=...)` or carried in the batch under `MASKS_KEY`;
`export(trainable, config, masks)` folds them into a plain prompt for inference.
"""
import dataclasses
from typing import Callable, Optional

import flax
import gin
import jax
import jax.numpy as jnp
import numpy as np

from xprompt_jax.methods.base import Trainable
from xprompt_jax.methods.prompt import PromptTuning
from xprompt_jax.models.config import T5Config
from xprompt_jax.models.injection import Injection

MASKS_KEY = "xprompt_masks"


@flax.struct.dataclass
class XPromptMasks:
  token: jax.Array  # [L]: γ, one multiplier per prompt token.
  piece: jax.Array  # [L, k]: ζ, one multiplier per piece of each prompt token.


def ones_masks(length: int, pieces: int = 16, dtype=jnp.float32) -> XPromptMasks:
  """Masks that keep everything (the unpruned prompt)."""
  return XPromptMasks(token=jnp.ones((length,), dtype), piece=jnp.ones((length, pieces), dtype))


def check_pieces(emb_dim: int, pieces: int) -> None:
  if pieces <= 0 or emb_dim % pieces:
    raise ValueError(f"XPrompt: the prompt width D={emb_dim} is not divisible into k={pieces} equal pieces "
                     "(XPrompt.pieces must divide emb_dim)")


def apply_masks(prompt: jax.Array, masks: XPromptMasks) -> jax.Array:
  """`prompt [L, D]` with token i scaled by γ[i] and its piece j (columns j·D/k .. (j+1)·D/k) by ζ[i, j]."""
  length, emb_dim = prompt.shape
  pieces = masks.piece.shape[-1]
  check_pieces(emb_dim, pieces)
  if masks.token.shape != (length,) or masks.piece.shape != (length, pieces):
    raise ValueError(f"XPromptMasks shapes token {tuple(masks.token.shape)} and piece {tuple(masks.piece.shape)} "
                     f"do not fit a prompt of shape {tuple(prompt.shape)}; expected ({length},) and ({length}, k)")
  split = prompt.reshape(length, pieces, emb_dim // pieces)
  scale = masks.token[:, None, None] * masks.piece[:, :, None]
  return (split * scale.astype(prompt.dtype)).reshape(length, emb_dim)


def mask_importance(loss_fn: Callable[[XPromptMasks], jax.Array], masks: XPromptMasks) -> XPromptMasks:
  """|∂loss/∂mask| for the token and piece masks, given `loss_fn(masks) -> scalar` (average it over batches)."""
  return jax.tree_util.tree_map(jnp.abs, jax.grad(loss_fn)(masks))


def _prune_lowest(mask: np.ndarray, score: np.ndarray, candidates: np.ndarray, fraction: float) -> np.ndarray:
  """`mask` with the round(fraction · #candidates) lowest-scoring candidate entries set to 0."""
  flat_candidates = np.flatnonzero(candidates)
  count = int(round(fraction * flat_candidates.size))
  order = flat_candidates[np.argsort(score.ravel()[flat_candidates], kind="stable")]
  pruned = mask.copy().ravel()
  pruned[order[:count]] = 0.0
  return pruned.reshape(mask.shape)


def prune_masks(masks: XPromptMasks, importance: XPromptMasks, token_fraction: float = 0.0,
                piece_fraction: float = 0.0) -> XPromptMasks:
  """One pruning round (host-side): zero the `token_fraction` of still-active tokens with the lowest token
  importance, then the `piece_fraction` of still-active pieces (of surviving tokens) with the lowest piece importance.
  """
  for name, fraction in (("token_fraction", token_fraction), ("piece_fraction", piece_fraction)):
    if not 0.0 <= fraction <= 1.0:
      raise ValueError(f"prune_masks: {name}={fraction} must be in [0, 1]")
  token, piece = np.asarray(masks.token, np.float32), np.asarray(masks.piece, np.float32)
  for field, mask, score in (("token", token, importance.token), ("piece", piece, importance.piece)):
    if np.shape(score) != mask.shape:
      raise ValueError(f"prune_masks: importance.{field} has shape {np.shape(score)}; the masks' {field} has "
                       f"shape {mask.shape}")
  token = _prune_lowest(token, np.asarray(importance.token), token != 0, token_fraction)
  piece = _prune_lowest(piece, np.asarray(importance.piece), (piece != 0) & (token != 0)[:, None], piece_fraction)
  return XPromptMasks(token=jnp.asarray(token), piece=jnp.asarray(piece))


@gin.configurable
@dataclasses.dataclass(frozen=True)
class XPrompt(PromptTuning):
  """Prompt tuning plus token/piece masks; `pieces` is k (16 in the paper)."""

  pieces: int = 16

  name = "xprompt"

  def ones_masks(self) -> XPromptMasks:
    return ones_masks(self.length, self.pieces)

  def init(self, rng: jax.Array, frozen_params, config: T5Config) -> Trainable:
    check_pieces(config.emb_dim, self.pieces)
    return super().init(rng, frozen_params, config)

  def inject_with_masks(self, trainable: Trainable, masks: XPromptMasks, batch: dict,
                        config: T5Config) -> Injection:
    del batch, config
    return Injection(prompt=apply_masks(trainable["prompt"], masks))

  def inject(self, trainable: Trainable, batch: dict, config: T5Config,
             masks: Optional[XPromptMasks] = None) -> Injection:
    """Masks from the argument, else `batch[MASKS_KEY]`, else all ones."""
    if masks is None:
      masks = batch.get(MASKS_KEY)
    if masks is None:
      check_pieces(config.emb_dim, self.pieces)
      return Injection(prompt=trainable["prompt"])
    return self.inject_with_masks(trainable, masks, batch, config)

  def export(self, trainable: Trainable, config: T5Config, masks: Optional[XPromptMasks] = None) -> Trainable:
    """The prompt with the (pruning) masks folded in."""
    del config
    return trainable if masks is None else {"prompt": apply_masks(trainable["prompt"], masks)}
