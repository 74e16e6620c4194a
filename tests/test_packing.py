"""Prompt-aware packing: layout of packed rows, and a packed batch giving the unpacked per-example losses."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numerics
from xprompt_jax.methods.prompt import PromptTuning
from xprompt_jax.models.config import T5Config
from xprompt_jax.models.t5 import T5, init_params
from xprompt_jax.training import bucketing, losses, packing
from xprompt_jax.training.step import forward

CFG = T5Config(vocab_size=64, emb_dim=16, num_heads=2, head_dim=4, mlp_dim=32, num_encoder_layers=2,
               num_decoder_layers=2, relpos_num_buckets=8, relpos_max_distance=16)
P = 3


def _examples(lengths, seed=0):
  rng = np.random.default_rng(seed)
  return [{"inputs": np.append(rng.integers(2, 64, n - 1), 1).astype(np.int32),
           "targets": np.append(rng.integers(2, 64, m - 1), 1).astype(np.int32)} for n, m in lengths]


def test_rows_reserve_a_prompt_per_segment():
  ex = _examples([(4, 2), (3, 3), (6, 2)])
  rows = list(packing.pack_examples(ex, encoder_length=15, decoder_length=6, prompt_length=P))
  assert len(rows) == 2  # 7 + 6 positions fit 15; the third (9) opens a new row.
  r = rows[0]
  np.testing.assert_array_equal(r["encoder_prompt_positions"], [0, 1, 2, -1, -1, -1, -1, 0, 1, 2, -1, -1, -1, -1, -1])
  np.testing.assert_array_equal(r["encoder_segment_ids"], [1] * 7 + [2] * 6 + [0, 0])
  np.testing.assert_array_equal(r["encoder_positions"][:13], list(range(7)) + list(range(6)))
  np.testing.assert_array_equal(r["encoder_input_tokens"][3:7], ex[0]["inputs"])
  np.testing.assert_array_equal(r["encoder_input_tokens"][:3], [0, 0, 0])
  np.testing.assert_array_equal(r["decoder_target_tokens"][:5], np.concatenate([ex[0]["targets"], ex[1]["targets"]]))
  np.testing.assert_array_equal(r["decoder_input_tokens"][:5], [0, ex[0]["targets"][0], 0] + list(ex[1]["targets"][:2]))
  np.testing.assert_array_equal(r["decoder_segment_ids"], [1, 1, 2, 2, 2, 0])


def test_max_segments_and_too_long_example():
  ex = _examples([(2, 2)] * 5)
  rows = list(packing.pack_examples(ex, 100, 100, P, max_segments=2))
  assert [int(r["decoder_segment_ids"].max()) for r in rows] == [2, 2, 1]
  with pytest.raises(ValueError, match="example 1: prompt 3 \\+ inputs 20"):
    list(packing.pack_examples(_examples([(2, 2), (20, 2)]), 16, 8, P))
  with pytest.raises(ValueError, match="no 'targets'"):
    list(packing.pack_examples([{"inputs": np.ones(3)}], 16, 8, P))


def test_batches_are_completed_with_empty_rows():
  ex = _examples([(5, 3)] * 3)
  batches = list(packing.packed_batches(ex, batch_size=2, encoder_length=8, decoder_length=3, prompt_length=P))
  assert len(batches) == 2 and all(b["encoder_input_tokens"].shape == (2, 8) for b in batches)
  assert packing.num_segments(batches[1]) == 1
  np.testing.assert_array_equal(batches[1]["encoder_prompt_positions"][1], -1)


def _per_example_unpacked(model, method, frozen, trainable, examples, enc_len, dec_len):
  batch = bucketing.pad_batch(examples, len(examples), enc_len, dec_len)
  logits = forward(model, method, CFG, frozen, trainable, batch, {})
  _, _, per_token = losses.cross_entropy_with_z_loss(logits, batch["decoder_target_tokens"],
                                                     batch["decoder_loss_weights"])
  return jnp.sum(per_token, -1)


def _per_example_packed(model, method, frozen, trainable, batch, max_segments):
  logits = forward(model, method, CFG, frozen, trainable, batch, {})
  _, _, per_token = losses.cross_entropy_with_z_loss(logits, batch["decoder_target_tokens"],
                                                     batch["decoder_loss_weights"])
  return packing.segment_losses(per_token, batch["decoder_segment_ids"], max_segments)


def test_packed_batch_gives_unpacked_losses_and_gradients():
  frozen = init_params(CFG, jax.random.PRNGKey(0))
  model, method = T5(CFG), PromptTuning(length=P, prompt_init="random_uniform")
  trainable = method.init(jax.random.PRNGKey(1), frozen, CFG)
  examples = _examples([(5, 3), (9, 2), (3, 4), (7, 3), (4, 2)], seed=3)
  batch = next(packing.packed_batches(examples, 2, encoder_length=24, decoder_length=9, prompt_length=P))
  assert packing.num_segments(batch) == 5
  # Compiled, as the train step is (op by op, the two passes and their gradients took over a minute on CPU).
  packed_fn = jax.jit(lambda t: _per_example_packed(model, method, frozen, t, batch, 4))
  unpacked_fn = jax.jit(lambda t: _per_example_unpacked(model, method, frozen, t, examples, 9, 4))
  packed = np.asarray(packed_fn(trainable))
  got = packed[packed != 0]
  want = unpacked_fn(trainable)
  numerics.assert_close(got, want)  # Forward passes of one network, rows laid out differently.

  g_packed = jax.jit(jax.grad(lambda t: jnp.sum(packed_fn(t))))(trainable)
  g_unpacked = jax.jit(jax.grad(lambda t: jnp.sum(unpacked_fn(t))))(trainable)
  numerics.assert_close(g_packed["prompt"], g_unpacked["prompt"])  # Backward passes: near-zero entries included.


def test_model_rejects_bad_prompt_positions():
  frozen = init_params(CFG, jax.random.PRNGKey(0))
  tokens = jnp.ones((2, 6), jnp.int32)
  with pytest.raises(ValueError, match="expected the encoder input tokens' shape"):
    T5(CFG).apply({"params": frozen}, tokens, tokens, injection=PromptTuning(length=P).inject(
        {"prompt": jnp.zeros((P, 16))}, {}, CFG), encoder_prompt_positions=jnp.zeros((2, 5), jnp.int32))
  with pytest.raises(ValueError, match="no prompt"):
    T5(CFG).apply({"params": frozen}, tokens, tokens, encoder_prompt_positions=jnp.zeros((2, 6), jnp.int32))
