"""XPrompt: token/piece masks multiply the right entries, stay out of the trainable tree, and have true gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numerics
from xprompt_jax.methods.xprompt import (MASKS_KEY, XPrompt, XPromptMasks, apply_masks, mask_importance, ones_masks,
                                       prune_masks)
from xprompt_jax.models.config import PRESETS, T5Config
from xprompt_jax.models.t5 import T5, init_params

CFG = T5Config(vocab_size=64, emb_dim=16, num_heads=2, head_dim=4, mlp_dim=32, num_encoder_layers=2,
               num_decoder_layers=3, relpos_num_buckets=8, relpos_max_distance=16)
RNG = jax.random.PRNGKey(0)
ENC = jnp.asarray(np.random.default_rng(0).integers(2, 64, (2, 5)), jnp.int32)
DEC = jnp.asarray(np.random.default_rng(1).integers(2, 64, (2, 4)), jnp.int32)
WEIGHTS = jnp.asarray(np.random.default_rng(2).normal(size=(2, 4, 64)), jnp.float32)


@pytest.fixture(scope="module")
def frozen():
  return jax.jit(init_params, static_argnums=0)(CFG, jax.random.PRNGKey(42))


@jax.jit
def _logits(frozen, injection=None):
  return T5(CFG).apply({"params": frozen}, ENC, DEC, injection=injection)


def _random_masks(length, pieces, seed=3):
  rng = np.random.default_rng(seed)
  return XPromptMasks(token=jnp.asarray(rng.uniform(0.5, 1.5, length), jnp.float32),
                      piece=jnp.asarray(rng.uniform(0.5, 1.5, (length, pieces)), jnp.float32))


def test_masks_multiply_piece_j_of_token_i():
  prompt = jnp.ones((3, 8))
  masks = ones_masks(3, 4)
  masks = XPromptMasks(token=masks.token.at[2].set(0.0), piece=masks.piece.at[0, 1].set(0.0))
  out = np.asarray(apply_masks(prompt, masks))
  expected = np.ones((3, 8))
  expected[0, 2:4] = 0  # Piece 1 of token 0: columns 2..3 (D / k = 2 columns per piece).
  expected[2] = 0  # Token 2.
  np.testing.assert_array_equal(out, expected)
  # General case against an explicit loop.
  prompt = jax.random.normal(RNG, (3, 8))
  masks = _random_masks(3, 4)
  out = np.asarray(apply_masks(prompt, masks))
  for i in range(3):
    for j in range(4):
      numerics.assert_close(out[i, 2 * j:2 * j + 2],
                            np.asarray(prompt)[i, 2 * j:2 * j + 2] * masks.token[i] * masks.piece[i, j],
                            roundings=numerics.FEW)  # Two products per entry.


def test_masks_stay_outside_the_trainable_tree(frozen):
  method = XPrompt(length=4, pieces=4)
  trainable = method.init(RNG, frozen, CFG)
  assert list(trainable) == ["prompt"] and method.num_params(trainable) == 64
  assert XPrompt().num_params(XPrompt().abstract_trainable(PRESETS["t5_1_1_base"])) == 76_800
  ones = method.ones_masks()
  assert ones.token.shape == (4,) and ones.piece.shape == (4, 4)
  plain = method.inject(trainable, {}, CFG).prompt
  np.testing.assert_array_equal(plain, trainable["prompt"])
  np.testing.assert_array_equal(method.inject_with_masks(trainable, ones, {}, CFG).prompt, plain)
  masks = _random_masks(4, 4)
  by_arg = method.inject(trainable, {}, CFG, masks=masks).prompt
  by_batch = method.inject(trainable, {MASKS_KEY: masks}, CFG).prompt
  np.testing.assert_array_equal(by_arg, apply_masks(trainable["prompt"], masks))
  np.testing.assert_array_equal(by_batch, by_arg)
  exported = method.export(trainable, CFG, masks)  # Masks folded in: a plain prompt for inference.
  np.testing.assert_array_equal(method.inject(exported, {}, CFG).prompt, by_arg)
  grads = jax.jit(jax.grad(lambda t: jnp.sum(_logits(frozen, method.inject(t, {}, CFG, masks=masks)))))(trainable)
  assert list(grads) == ["prompt"] and float(jnp.max(jnp.abs(grads["prompt"]))) > 0


def test_mask_gradient_matches_finite_differences(frozen):
  method = XPrompt(length=3, pieces=4, prompt_init="random_uniform")
  trainable = method.init(RNG, frozen, CFG)
  masks = _random_masks(3, 4)

  @jax.jit
  def loss(m):
    return jnp.sum(WEIGHTS * _logits(frozen, method.inject_with_masks(trainable, m, {}, CFG)))

  grads = jax.jit(jax.grad(loss))(masks)
  assert grads.token.shape == (3,) and grads.piece.shape == (3, 4)
  eps = 1e-2
  # Float32 central differences with h = 1e-2 are off by the truncation h^2 |f'''| / 6 plus the loss's rounding over
  # 2h; 2e-2 of the gradient's scale bounds both, and a wrong gradient is off by O(1) of that scale.
  fd_tol = 2e-2 * max(float(jnp.max(jnp.abs(grads.token))), float(jnp.max(jnp.abs(grads.piece))))
  for field, index in (("token", (0,)), ("token", (2,)), ("piece", (1, 3)), ("piece", (2, 0))):
    value = getattr(masks, field)
    plus = masks.replace(**{field: value.at[index].add(eps)})
    minus = masks.replace(**{field: value.at[index].add(-eps)})
    estimate = (float(loss(plus)) - float(loss(minus))) / (2 * eps)
    assert abs(float(getattr(grads, field)[index]) - estimate) <= fd_tol, (field, index, estimate)
  importance = mask_importance(loss, masks)  # The same backward pass, compiled in another program.
  numerics.assert_close(importance.token, np.abs(grads.token), roundings=numerics.NETWORK)
  numerics.assert_close(importance.piece, np.abs(grads.piece), roundings=numerics.NETWORK)
  assert float(jnp.max(importance.piece)) > 0


def test_width_not_divisible_into_pieces_errors(frozen):
  with pytest.raises(ValueError, match="D=16 is not divisible into k=3 equal pieces"):
    XPrompt(length=4, pieces=3).init(RNG, frozen, CFG)
  with pytest.raises(ValueError, match="D=10 is not divisible into k=4"):
    apply_masks(jnp.ones((2, 10)), ones_masks(2, 4))
  with pytest.raises(ValueError, match=r"token \(3,\) and piece \(3, 4\) do not fit a prompt of shape \(2, 8\)"):
    apply_masks(jnp.ones((2, 8)), ones_masks(3, 4))
  XPrompt(length=4, pieces=16).init(RNG, frozen, CFG)  # The paper's k = 16 divides emb 16 (pieces of width 1).


def test_prune_masks_zeroes_the_lowest_scores_first():
  masks = ones_masks(4, 2)
  importance = XPromptMasks(token=jnp.array([0.3, 0.1, 0.4, 0.2]),
                            piece=jnp.array([[0.5, 0.1], [0.0, 0.0], [0.2, 0.9], [0.3, 0.05]]))
  pruned = prune_masks(masks, importance, token_fraction=0.5)
  np.testing.assert_array_equal(pruned.token, [1, 0, 1, 0])  # Tokens 1 and 3 score lowest.
  np.testing.assert_array_equal(pruned.piece, np.ones((4, 2)))
  # Pieces: only those of surviving tokens 0 and 2 compete; half of those 4 go, lowest first (0.1, then 0.2).
  pruned = prune_masks(pruned, importance, piece_fraction=0.5)
  np.testing.assert_array_equal(pruned.piece, [[1, 0], [1, 1], [0, 1], [1, 1]])
  # A further round only considers entries still active.
  again = prune_masks(pruned, importance, token_fraction=0.5)
  np.testing.assert_array_equal(again.token, [0, 0, 1, 0])
  with pytest.raises(ValueError, match="token_fraction=1.5 must be in"):
    prune_masks(masks, importance, token_fraction=1.5)
  with pytest.raises(ValueError, match=r"importance.piece has shape \(4, 3\); the masks' piece has shape \(4, 2\)"):
    prune_masks(masks, importance.replace(piece=jnp.zeros((4, 3))))


# Pruning policies with exact counts (used by pipelines.xprompt).
from xprompt_jax.methods.xprompt import active_pieces, prune_counts, prune_to_ratio  # noqa: E402


def _scores(length=6, pieces=4, seed=0):
  rng = np.random.default_rng(seed)
  return XPromptMasks(token=jnp.asarray(rng.permutation(length) / length, jnp.float32),
                      piece=jnp.asarray(rng.permutation(length * pieces).reshape(length, pieces), jnp.float32))


@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.5, 0.7, 0.9])
def test_prune_to_ratio_keeps_exact_numbers_and_never_a_lower_score(ratio):
  importance = _scores()
  masks = prune_to_ratio(ones_masks(6, 4), importance, ratio)
  kept = active_pieces(masks)
  assert kept.sum() == round((1 - ratio) * 24)
  dropped_tokens = int(round(6 * (1 - (1 - ratio) ** 0.5)))
  assert (np.asarray(masks.token) == 0).sum() == min(dropped_tokens, 5)
  token, piece = np.asarray(importance.token), np.asarray(importance.piece)
  alive = np.asarray(masks.token) != 0
  assert token[~alive].max(initial=-1) <= token[alive].min()  # No kept token scores below a pruned one.
  pruned_in_alive = alive[:, None] & ~kept
  assert piece[pruned_in_alive].max(initial=-1) <= piece[kept].min()  # Likewise for pieces of kept tokens.
  reversed_masks = prune_to_ratio(ones_masks(6, 4), importance, ratio, policy="highest")
  r_alive, r_kept = np.asarray(reversed_masks.token) != 0, active_pieces(reversed_masks)
  assert r_kept.sum() == kept.sum() and r_alive.sum() == alive.sum()
  assert token[~r_alive].min(initial=2) >= token[r_alive].max()  # Reversed: the most important went first.
  assert piece[r_alive[:, None] & ~r_kept].min(initial=99) >= piece[r_kept].max()
  random_masks = prune_to_ratio(ones_masks(6, 4), importance, ratio, policy="random", seed=3)
  assert active_pieces(random_masks).sum() == kept.sum()
  assert (np.asarray(random_masks.token) != 0).sum() == alive.sum()
  again = prune_to_ratio(ones_masks(6, 4), importance, ratio, policy="random", seed=3)
  np.testing.assert_array_equal(again.piece, random_masks.piece)  # Same seed, same subset.


def test_prune_granularities_ties_and_errors():
  importance = _scores()
  token_only = prune_to_ratio(ones_masks(6, 4), importance, 0.5, granularity="token")
  assert (np.asarray(token_only.token) == 0).sum() == 3 and np.asarray(token_only.piece).all()
  piece_only = prune_to_ratio(ones_masks(6, 4), importance, 0.5, granularity="piece")
  assert np.asarray(piece_only.token).all() and active_pieces(piece_only).sum() == 12
  # Ties: equal scores are pruned in increasing index order, for both score policies.
  flat = XPromptMasks(token=jnp.zeros(4), piece=jnp.zeros((4, 2)))
  lowest = prune_counts(ones_masks(4, 2), flat, tokens=2, pieces=1)
  np.testing.assert_array_equal(lowest.token, [0, 0, 1, 1])
  np.testing.assert_array_equal(lowest.piece, [[1, 1], [1, 1], [0, 1], [1, 1]])
  highest = prune_counts(ones_masks(4, 2), flat, tokens=2, policy="highest")
  np.testing.assert_array_equal(highest.token, [0, 0, 1, 1])
  for bad in (0.0, 1.0, -0.2, 1.3):
    with pytest.raises(ValueError, match=f"pruning ratio {bad} must be in the open interval"):
      prune_to_ratio(ones_masks(4, 2), flat, bad)
  with pytest.raises(ValueError, match="pruning policy 'middle' is not one of"):
    prune_counts(ones_masks(4, 2), flat, tokens=1, policy="middle")
  with pytest.raises(ValueError, match="cannot prune 5 entries: only 4 are still active"):
    prune_counts(ones_masks(4, 2), flat, tokens=5)
  with pytest.raises(ValueError, match="granularity 'tokens' is not one of"):
    prune_to_ratio(ones_masks(4, 2), flat, 0.5, granularity="tokens")
