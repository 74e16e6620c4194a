"""Invariants of the Flax T5: T5 1.0/1.1 layouts, injection equivalences, masking, packing, scan/remat, dtypes.

Numerical parity with the reference PyTorch T5 lives in tests/test_parity_golden.py.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numerics
from xprompt_jax.models import layers as L
from xprompt_jax.models.config import PRESETS, T5Config
from xprompt_jax.models.injection import Injection
from xprompt_jax.models.t5 import T5, abstract_params, init_params, param_logical_axes

# Unequal depths and heads*head_dim (8) != emb_dim (16): the general model, not one fixture.
CFG = T5Config(vocab_size=64, emb_dim=16, num_heads=2, head_dim=4, mlp_dim=32, num_encoder_layers=2,
               num_decoder_layers=3, relpos_num_buckets=8, relpos_max_distance=16)
CFG_10 = CFG.replace(mlp_activations=("relu",), logits_via_embedding=True)


def _tokens(rng, shape, low=2, high=64):
  return jnp.asarray(np.random.default_rng(rng).integers(low, high, shape), jnp.int32)


def _shift(targets):
  return jnp.pad(targets, ((0, 0), (1, 0)))[:, :-1]


@pytest.fixture(scope="module")
def params():
  return init_params(CFG, jax.random.PRNGKey(0))


def _apply(params, cfg=CFG, *args, **kwargs):
  """Jitted forward (eager flax dispatch is slow); configs are hashable, so each compiles once per shape."""
  return jax.jit(T5(cfg).apply, static_argnames=("enable_dropout", "return_hidden"))({"params": params}, *args,
                                                                                     **kwargs)


def test_t5x_names_and_shapes():
  shapes = abstract_params(CFG)
  enc = shapes["encoder"]
  assert shapes["token_embedder"]["embedding"].shape == (64, 16)
  assert enc["relpos_bias"]["rel_embedding"].shape == (2, 8)
  assert enc["layers_0"]["attention"]["query"]["kernel"].shape == (16, 8)
  assert enc["layers_0"]["attention"]["out"]["kernel"].shape == (8, 16)
  assert set(enc["layers_1"]["mlp"]) == {"wi_0", "wi_1", "wo"}
  assert set(shapes["decoder"]) == {"layers_0", "layers_1", "layers_2", "relpos_bias", "decoder_norm", "logits_dense"}
  assert set(shapes["decoder"]["layers_2"]) == {"pre_self_attention_layer_norm", "self_attention",
                                                "pre_cross_attention_layer_norm", "encoder_decoder_attention",
                                                "pre_mlp_layer_norm", "mlp"}
  assert shapes["decoder"]["logits_dense"]["kernel"].shape == (16, 64)


def test_t5_1_0_layout_ties_logits_to_the_embedding():
  shapes = abstract_params(CFG_10)
  assert "logits_dense" not in shapes["decoder"]
  assert set(shapes["encoder"]["layers_0"]["mlp"]) == {"wi", "wo"}
  p = init_params(CFG_10, jax.random.PRNGKey(1))
  x, t = _tokens(0, (2, 7)), _tokens(1, (2, 5))
  logits, hidden = _apply(p, CFG_10, x, _shift(t), return_hidden=True)
  embedding = p["token_embedder"]["embedding"]
  expected = hidden["decoder"] @ embedding.T * 16**-0.5
  # One 16-term contraction of the same hidden state (x 1/4, exact) on each side, on the scale of its terms.
  terms = (np.abs(np.asarray(hidden["decoder"])) @ np.abs(np.asarray(embedding)).T).max() * 16**-0.5
  numerics.assert_close(logits, expected, roundings=numerics.sum_of(16), scale=terms)


def test_every_parameter_has_logical_axes():
  axes = param_logical_axes(CFG)
  known = {"vocab", "embed", "mlp", "heads", "kv", "joined_kv", "relpos_buckets"}
  leaves = jax.tree.leaves(axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  assert len(leaves) == len(jax.tree.leaves(abstract_params(CFG)))
  for spec in leaves:
    assert spec and set(spec) <= known, spec


def test_param_count_matches_config_formula():
  for cfg in (CFG, CFG_10, PRESETS["t5_1_1_tiny"]):
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract_params(cfg)))
    assert n == cfg.num_params()
  # T5 1.1 XXL: published ~11B parameters.
  assert 10.5e9 < PRESETS["t5_1_1_xxl"].num_params() < 11.5e9


def test_prompt_of_embedded_tokens_equals_prepending_those_tokens(params):
  """Lester-style prompts are prepended to the embedded input: masks and relative positions cover them."""
  x, prefix_tokens, t = _tokens(0, (2, 6)), _tokens(2, (3,)), _tokens(1, (2, 4))
  prompt = params["token_embedder"]["embedding"][prefix_tokens]
  with_prompt = _apply(params, CFG, x, _shift(t), injection=Injection(prompt=prompt))
  concatenated = jnp.concatenate([jnp.broadcast_to(prefix_tokens, (2, 3)), x], axis=1)
  numerics.assert_close(with_prompt, _apply(params, CFG, concatenated, _shift(t)))
  per_example = _apply(params, CFG, x, _shift(t), injection=Injection(prompt=jnp.stack([prompt, prompt])))
  numerics.assert_close(per_example, with_prompt)


def test_cross_prefix_equals_extra_encoder_positions(params):
  """Cross-attention has no position bias, so a K/V prefix equals appending encoder outputs it projects from."""
  x, t = _tokens(0, (2, 6)), _tokens(1, (2, 4))
  model = T5(CFG)
  encoded, valid = model.apply({"params": params}, x, method=T5.encode)
  extra = jax.random.normal(jax.random.PRNGKey(3), (2, 2, 16))
  ks, vs = [], []
  for i in range(CFG.num_decoder_layers):
    a = params["decoder"][f"layers_{i}"]["encoder_decoder_attention"]
    ks.append((extra @ a["key"]["kernel"]).reshape(2, 2, 2, 4))
    vs.append((extra @ a["value"]["kernel"]).reshape(2, 2, 2, 4))
  inj = Injection(cross_prefix=(jnp.stack(ks), jnp.stack(vs)))
  got = model.apply({"params": params}, encoded, valid, _shift(t), inj, method=T5.decode)
  want = model.apply({"params": params}, jnp.concatenate([extra, encoded], 1),
                     jnp.concatenate([jnp.ones((2, 2), bool), valid], 1), _shift(t), method=T5.decode)
  numerics.assert_close(got, want)


def test_prefixes_change_the_output_and_are_shape_checked(params):
  x, t = _tokens(0, (2, 6)), _tokens(1, (2, 4))
  base = _apply(params, CFG, x, _shift(t))
  kv = jax.random.normal(jax.random.PRNGKey(0), (2, CFG.num_encoder_layers, 1, 3, 2, 4))
  enc = _apply(params, CFG, x, _shift(t), injection=Injection(encoder_prefix=(kv[0], kv[1])))
  numerics.assert_differs(enc, base)
  dkv = jax.random.normal(jax.random.PRNGKey(1), (2, CFG.num_decoder_layers, 2, 3, 2, 4))
  dec = _apply(params, CFG, x, _shift(t), injection=Injection(decoder_prefix=(dkv[0], dkv[1])))
  numerics.assert_differs(dec, base)
  with pytest.raises(ValueError, match=r"Injection.encoder_prefix keys has shape \(3, 1, 3, 2, 4\); expected \[2, "):
    _apply(params, CFG, x, _shift(t), injection=Injection(encoder_prefix=(dkv[0][:, :1], dkv[1][:, :1])))
  with pytest.raises(ValueError, match=r"Injection.prompt has shape \(3, 5\); expected \[P, 16\]"):
    _apply(params, CFG, x, _shift(t), injection=Injection(prompt=jnp.zeros((3, 5))))


def test_padding_does_not_change_real_positions(params):
  x, t = _tokens(0, (1, 6)), _tokens(1, (1, 4))
  padded_x = jnp.pad(x, ((0, 0), (0, 5)))
  padded_t = jnp.pad(t, ((0, 0), (0, 3)))
  a = _apply(params, CFG, x, _shift(t))
  b = _apply(params, CFG, padded_x, _shift(padded_t))[:, :4]
  numerics.assert_close(b, a)


def test_packed_segments_equal_separate_examples(params):
  x1, x2, t1, t2 = _tokens(0, (1, 5)), _tokens(1, (1, 4)), _tokens(2, (1, 3)), _tokens(3, (1, 4))
  packed_x = jnp.concatenate([x1, x2], 1)
  packed_dec = jnp.concatenate([_shift(t1), _shift(t2)], 1)
  enc_seg = jnp.array([[1] * 5 + [2] * 4])
  dec_seg = jnp.array([[1] * 3 + [2] * 4])
  packed = _apply(params, CFG, packed_x, packed_dec, encoder_segment_ids=enc_seg, decoder_segment_ids=dec_seg)
  numerics.assert_close(packed[:, :3], _apply(params, CFG, x1, _shift(t1)))
  numerics.assert_close(packed[:, 3:], _apply(params, CFG, x2, _shift(t2)))


def _stack_layers(params, cfg):
  """Unscanned `layers_{i}` → scanned `layers` with a leading axis (what the checkpoint converter does)."""
  out = jax.tree.map(lambda x: x, params)
  for stack, n in (("encoder", cfg.num_encoder_layers), ("decoder", cfg.num_decoder_layers)):
    layers = [out[stack].pop(f"layers_{i}") for i in range(n)]
    out[stack]["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)
  return out


@pytest.mark.parametrize("scan,remat", [(True, "none"), (False, "full"), (True, "dots")])
def test_scan_and_remat_give_the_same_logits_and_gradients(params, scan, remat):
  cfg = CFG.replace(scan_layers=scan, remat_policy=remat)
  p = _stack_layers(params, cfg) if scan else params
  if scan:
    assert jax.tree.map(lambda a: a.shape, p) == jax.tree.map(lambda a: a.shape, abstract_params(cfg))
  x, t = _tokens(0, (2, 6)), _tokens(1, (2, 4))
  prompt = jax.random.normal(jax.random.PRNGKey(5), (3, 16))
  ref = _apply(params, CFG, x, _shift(t), injection=Injection(prompt=prompt))
  got = _apply(p, cfg, x, _shift(t), injection=Injection(prompt=prompt))
  numerics.assert_close(got, ref)
  loss = lambda c, pp: lambda pr: T5(c).apply({"params": pp}, x, _shift(t), injection=Injection(prompt=pr)).sum()
  numerics.assert_close(jax.jit(jax.grad(loss(cfg, p)))(prompt), jax.jit(jax.grad(loss(CFG, params)))(prompt))


def test_dropout_is_off_by_default_and_uses_the_rng(params):
  cfg = CFG.replace(dropout_rate=0.3)
  x, t = _tokens(0, (2, 6)), _tokens(1, (2, 4))
  det = _apply(params, cfg, x, _shift(t))
  # The same program as without a rate (dropout is the identity when deterministic): a handful of roundings at most.
  numerics.assert_close(det, _apply(params, CFG, x, _shift(t)), roundings=numerics.FEW)
  d1 = _apply(params, cfg, x, _shift(t), enable_dropout=True, rngs={"dropout": jax.random.PRNGKey(1)})
  d2 = _apply(params, cfg, x, _shift(t), enable_dropout=True, rngs={"dropout": jax.random.PRNGKey(2)})
  numerics.assert_differs(d1, det)
  numerics.assert_differs(d1, d2)


def test_bfloat16_activations_keep_fp32_params_and_logits(params):
  cfg = CFG.replace(dtype="bfloat16")
  x, t = _tokens(0, (2, 6)), _tokens(1, (2, 4))
  logits = _apply(params, cfg, x, _shift(t))
  assert logits.dtype == jnp.float32
  # 32 bf16 roundings of the logits' scale: each of the 13 sublayers (2 encoder x 2, 3 decoder x 3) hands the
  # residual stream two bf16 roundings at its scale (its normed input, its output into the residual sum), plus the
  # embedding, the final norm and the logits: 29 -> 32.
  numerics.assert_close(logits, _apply(params, CFG, x, _shift(t)), roundings=32, dtype=jnp.bfloat16)
  assert all(l.dtype == jnp.float32 for l in jax.tree.leaves(init_params(cfg, jax.random.PRNGKey(0))))


def test_relative_position_buckets_match_t5():
  rel = np.arange(-300, 300)
  b = np.asarray(L.relative_position_bucket(jnp.asarray(rel), True, 32, 128))
  assert b[300] == 0 and b[301] == 17 and b[299] == 1  # 0 → 0; key after query → upper half.
  assert b.max() == 31 and b.min() == 0
  assert b[300 + 127] == b[300 + 299] == 31  # Beyond max distance: last bucket.
  uni = np.asarray(L.relative_position_bucket(jnp.asarray(rel), False, 32, 128))
  assert (uni[301:] == 0).all() and uni[299] == 1 and uni.max() == 31


def test_config_rejects_bad_values():
  with pytest.raises(ValueError, match="T5Config.num_heads must be a positive int"):
    T5Config(num_heads=0)
  with pytest.raises(ValueError, match="mlp_activations"):
    T5Config(mlp_activations=("tanhh",))
  with pytest.raises(ValueError, match="remat_policy"):
    T5Config(remat_policy="some")
