"""XPrompt (Ma et al., 2022): prompt tuning whose prompt tokens and token pieces can be masked out.

The trainable tree is prompt tuning's `{"prompt": [L, D]}`. The masks are *not* trained and live outside it,
in an `XPromptMasks` pytree: a token mask γ ∈ ℝ^L and a piece mask ζ ∈ ℝ^{L×k} over k equal pieces of each prompt
vector (D must be divisible by k). The effective prompt is

    prompt_eff[i, piece j] = prompt[i, piece j] · γ[i] · ζ[i, j]

`inject_with_masks(trainable, masks, batch, config)` is differentiable in the masks, so the paper's importance
scores I = E_x |∂L(x)/∂γ| (and likewise for ζ) come from `jax.grad` w.r.t. the masks (`mask_importance`), and
`prune_masks` zeroes the lowest-scoring tokens, then pieces of the surviving tokens (by fractions);
`prune_counts` removes exact numbers and `prune_to_ratio` reaches a compression ratio, each with the policy
'lowest' (XPrompt), 'highest' (Reversed) or 'random' (Random), ties going to the lower index. During the
rewinding stage the pruned (0/1) masks are passed to `inject(..., masks=...)` or carried in the batch under `MASKS_KEY`;
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


PRUNE_POLICIES = ("lowest", "highest", "random")
GRANULARITIES = ("token_piece", "token", "piece")


def _check_policy(policy: str) -> None:
  if policy not in PRUNE_POLICIES:
    raise ValueError(f"pruning policy {policy!r} is not one of {PRUNE_POLICIES}")


def _prune_count(mask: np.ndarray, score: np.ndarray, candidates: np.ndarray, count: int, policy: str,
                 rng: np.random.Generator) -> np.ndarray:
  """`mask` with exactly `count` of the `candidates` entries set to 0.

  'lowest' removes the lowest scores first (XPrompt), 'highest' the highest first (the Reversed control), 'random'
  a uniformly random subset (the Random control; `score` is then unused). Ties: entries with equal scores are
  removed in increasing flat index order (a stable sort), for both score policies.
  """
  flat_candidates = np.flatnonzero(candidates)
  if not 0 <= count <= flat_candidates.size:
    raise ValueError(f"cannot prune {count} entries: only {flat_candidates.size} are still active")
  if policy == "random":
    order = rng.permutation(flat_candidates)
  else:
    values = np.asarray(score, np.float64).ravel()[flat_candidates]
    order = flat_candidates[np.argsort(values if policy == "lowest" else -values, kind="stable")]
  pruned = mask.copy().ravel()
  pruned[order[:count]] = 0.0
  return pruned.reshape(mask.shape)


def _host_masks(masks: XPromptMasks, importance: XPromptMasks, caller: str) -> tuple[np.ndarray, np.ndarray]:
  token, piece = np.asarray(masks.token, np.float32), np.asarray(masks.piece, np.float32)
  if piece.ndim != 2 or token.shape != (piece.shape[0],):
    raise ValueError(f"{caller}: masks token {token.shape} and piece {piece.shape} must be (L,) and (L, k)")
  for field, mask, score in (("token", token, importance.token), ("piece", piece, importance.piece)):
    if np.shape(score) != mask.shape:
      raise ValueError(f"{caller}: importance.{field} has shape {np.shape(score)}; the masks' {field} has "
                       f"shape {mask.shape}")
  return token, piece


def active_pieces(masks: XPromptMasks) -> np.ndarray:
  """[L, k] bool: pieces still in the prompt (their piece mask and their token's mask are both non-zero)."""
  return (np.asarray(masks.piece) != 0) & (np.asarray(masks.token) != 0)[:, None]


def prune_counts(masks: XPromptMasks, importance: XPromptMasks, *, tokens: int = 0, pieces: int = 0,
                 policy: str = "lowest", seed: int = 0) -> XPromptMasks:
  """Removes exactly `tokens` active tokens, then exactly `pieces` active pieces of the surviving tokens, chosen
  by `policy` (see `_prune_count`; ties go to the lower index). 'random' draws from `np.random.default_rng(seed)`.
  """
  _check_policy(policy)
  token, piece = _host_masks(masks, importance, "prune_counts")
  rng = np.random.default_rng(seed)
  token = _prune_count(token, importance.token, token != 0, int(tokens), policy, rng)
  piece = _prune_count(piece, importance.piece, (piece != 0) & (token != 0)[:, None], int(pieces), policy, rng)
  return XPromptMasks(token=jnp.asarray(token), piece=jnp.asarray(piece))


def prune_to_ratio(masks: XPromptMasks, importance: XPromptMasks, ratio: float, *,
                   granularity: str = "token_piece", token_share: float = 0.5, policy: str = "lowest",
                   seed: int = 0) -> XPromptMasks:
  """Hierarchical structured pruning that removes the fraction `ratio` of the active prompt pieces.

  With P active pieces (a piece counts once its token and itself are unmasked) the result keeps exactly
  round((1 - ratio) · P) of them (for 'token': every piece of the kept tokens, see below):

  * 'token_piece' (XPrompt): first round(T · (1 - (1 - ratio) ** token_share)) of the T active tokens go (at most
    T - 1), then as many pieces of the surviving tokens as still needed. With `token_share` 0.5 both levels
    remove the same fraction; with fixed importance scores, repeated token/piece rounds reaching the same ratio
    remove exactly these entries, so one round is done.
  * 'token' (ablation): round(ratio · T) tokens (at most T - 1), no piece pruning.
  * 'piece' (ablation): round(ratio · P) pieces over all active tokens, no token pruning.
  """
  if not 0.0 < ratio < 1.0:
    raise ValueError(f"pruning ratio {ratio!r} must be in the open interval (0, 1)")
  if granularity not in GRANULARITIES:
    raise ValueError(f"pruning granularity {granularity!r} is not one of {GRANULARITIES}")
  if not 0.0 < token_share <= 1.0:
    raise ValueError(f"token_share={token_share!r} must be in (0, 1]")
  _check_policy(policy)
  token, _ = _host_masks(masks, importance, "prune_to_ratio")
  num_tokens = int(np.count_nonzero(token))
  num_pieces = int(np.count_nonzero(active_pieces(masks)))
  if num_tokens == 0:
    raise ValueError("prune_to_ratio: every prompt token is already pruned")
  if granularity == "piece":
    return prune_counts(masks, importance, pieces=int(round(ratio * num_pieces)), policy=policy, seed=seed)
  token_fraction = ratio if granularity == "token" else 1.0 - (1.0 - ratio) ** token_share
  drop_tokens = min(int(round(token_fraction * num_tokens)), num_tokens - 1)
  after_tokens = prune_counts(masks, importance, tokens=drop_tokens, policy=policy, seed=seed)
  if granularity == "token":
    return after_tokens
  target = int(round((1.0 - ratio) * num_pieces))
  remaining = int(np.count_nonzero(active_pieces(after_tokens)))
  # The piece level draws its own random subset (seed + 1) so that 'random' is not correlated across levels.
  return prune_counts(after_tokens, importance, pieces=max(remaining - target, 0), policy=policy, seed=seed + 1)


def prune_masks(masks: XPromptMasks, importance: XPromptMasks, token_fraction: float = 0.0,
                piece_fraction: float = 0.0, policy: str = "lowest", seed: int = 0) -> XPromptMasks:
  """One pruning round (host-side): zero round(token_fraction · #active tokens) tokens, then
  round(piece_fraction · #active pieces of surviving tokens) pieces, lowest importance first (or by `policy`).
  """
  for name, fraction in (("token_fraction", token_fraction), ("piece_fraction", piece_fraction)):
    if not 0.0 <= fraction <= 1.0:
      raise ValueError(f"prune_masks: {name}={fraction} must be in [0, 1]")
  token, piece = _host_masks(masks, importance, "prune_masks")
  tokens = int(round(token_fraction * np.count_nonzero(token)))
  after = prune_counts(masks, importance, tokens=tokens, policy=policy, seed=seed)
  pieces = int(round(piece_fraction * np.count_nonzero(active_pieces(after))))
  return prune_counts(after, importance, pieces=pieces, policy=policy, seed=seed + 1)


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
