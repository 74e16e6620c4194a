"""Importance scores (pipelines.importance): E_x |∂L(x)/∂mask| equals a per-example finite-difference estimate of
the loss change, padding rows do not count, and the scores average over batches."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numerics
from xprompt_jax.methods.xprompt import MASKS_KEY, XPrompt
from xprompt_jax.models.config import T5Config
from xprompt_jax.models.t5 import T5, init_params
from xprompt_jax.pipelines import examples as examples_lib
from xprompt_jax.pipelines import importance as importance_lib
from xprompt_jax.training import step as step_lib

CFG = T5Config(vocab_size=64, emb_dim=16, num_heads=2, head_dim=4, mlp_dim=32, num_encoder_layers=2,
               num_decoder_layers=2, relpos_num_buckets=8, relpos_max_distance=16, dtype="float32")
METHOD = XPrompt(length=3, pieces=4, prompt_init="random_uniform")
LOSS = step_lib.LossConfig(z_loss=1e-4)


def _examples(n=5, seed=0):
  rng = np.random.default_rng(seed)
  targets = rng.integers(2, 64, (n, 3)).astype(np.int32)
  weights = np.ones((n, 3), np.float32)
  weights[0, 2] = 0.0  # A shorter target: its loss is normalised by its own 2 tokens.
  return {"encoder_input_tokens": rng.integers(2, 64, (n, 5)).astype(np.int32),
          "decoder_input_tokens": np.concatenate([np.zeros((n, 1), np.int32), targets[:, :-1]], axis=1),
          "decoder_target_tokens": targets, "decoder_loss_weights": weights}


@pytest.fixture(scope="module")
def setup():
  frozen = jax.jit(init_params, static_argnums=0)(CFG, jax.random.PRNGKey(1))
  prompt = METHOD.init(jax.random.PRNGKey(2), frozen, CFG)["prompt"]
  masks = METHOD.ones_masks()
  masks = masks.replace(token=masks.token.at[1].set(0.7), piece=masks.piece.at[2, 3].set(0.4))  # Not only γ = 1.
  step_fn = jax.jit(importance_lib.make_importance_step(T5(CFG), METHOD, CFG, LOSS))  # One compile (batch 4).
  return frozen, prompt, masks, step_fn


def test_importance_matches_per_example_finite_differences(setup):
  frozen, prompt, masks, step_fn = setup
  examples = _examples()
  scores, count = importance_lib.importance_scores(
      examples_lib.epoch_batches(examples, 4), model=T5(CFG), method=METHOD, config=CFG, loss_cfg=LOSS,
      frozen=frozen, prompt=prompt, masks=masks, step_fn=step_fn)
  assert count == 5 and scores.token.shape == (3,) and scores.piece.shape == (3, 4)

  @jax.jit
  def example_loss(m, example):
    batch = jax.tree.map(lambda x: jnp.asarray(x)[None], example)
    logits = step_lib.forward(T5(CFG), METHOD, CFG, frozen, {"prompt": prompt}, batch, {MASKS_KEY: m})
    return step_lib.token_loss(logits, batch, LOSS)[0]

  eps = 1e-2
  # Float32 central differences with h = 1e-2 are off by the truncation h^2 |f'''| / 6 plus the losses' rounding over
  # 2h; 2e-2 of the scores' scale bounds both, and a wrong score is off by O(1) of that scale.
  fd_tol = 2e-2 * max(float(np.max(np.abs(scores.token))), float(np.max(np.abs(scores.piece))))
  for field, index in (("token", (0,)), ("token", (1,)), ("piece", (2, 3)), ("piece", (0, 1))):
    value = getattr(masks, field)
    plus = masks.replace(**{field: value.at[index].add(eps)})
    minus = masks.replace(**{field: value.at[index].add(-eps)})
    estimate = np.mean([abs(float(example_loss(plus, ex)) - float(example_loss(minus, ex))) / (2 * eps)
                        for ex in (jax.tree.map(lambda x, i=i: x[i], examples) for i in range(5))])
    assert abs(float(getattr(scores, field)[index]) - estimate) <= fd_tol, (field, index, estimate)
  assert float(np.min(scores.piece)) > 0


def test_padding_rows_do_not_count_and_batches_average(setup):
  frozen, prompt, masks, step_fn = setup
  examples = _examples()
  kwargs = dict(model=T5(CFG), method=METHOD, config=CFG, loss_cfg=LOSS, frozen=frozen, prompt=prompt, masks=masks,
                step_fn=step_fn)
  whole, n_whole = importance_lib.importance_scores(examples_lib.epoch_batches(examples, 4), **kwargs)
  assert n_whole == 5  # 4 + 1 real rows; the 3 padding rows of the second batch do not count.
  # The count-weighted mean over the first 2 and the last 3 examples (each batch padded) is the mean over all 5.
  first, n_first = importance_lib.importance_scores(
      examples_lib.epoch_batches(examples_lib.take(examples, np.arange(2)), 4), **kwargs)
  last, n_last = importance_lib.importance_scores(
      examples_lib.epoch_batches(examples_lib.take(examples, np.arange(2, 5)), 4), **kwargs)
  assert (n_first, n_last) == (2, 3)
  # Per-example gradients of one network, batched differently (NETWORK), then averaged over 5 examples.
  numerics.assert_close((2 * first.token + 3 * last.token) / 5, whole.token, roundings=numerics.NETWORK)
  numerics.assert_close((2 * first.piece + 3 * last.piece) / 5, whole.piece, roundings=numerics.NETWORK)
  with pytest.raises(ValueError, match="yielded no examples"):
    importance_lib.importance_scores(iter(()), **kwargs)
