"""Prefix tuning: shapes from the real head layout, the MLP reparametrisation and its export, per-kind effects."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numerics
from xprompt_jax.methods.prefix import PrefixTuning
from xprompt_jax.models.config import T5Config
from xprompt_jax.models.injection import Injection
from xprompt_jax.models.t5 import T5, init_params
from xprompt_jax.training import partitioning

# heads x head_dim (8) != emb_dim (16), unequal depths.
CFG = T5Config(vocab_size=64, emb_dim=16, num_heads=2, head_dim=4, mlp_dim=32, num_encoder_layers=2,
               num_decoder_layers=3, relpos_num_buckets=8, relpos_max_distance=16)
RNG = jax.random.PRNGKey(0)
ENC = jnp.asarray(np.random.default_rng(0).integers(2, 64, (2, 5)), jnp.int32)
DEC = jnp.asarray(np.random.default_rng(1).integers(2, 64, (2, 4)), jnp.int32)
ONLY = {"encoder": dict(decoder=False, cross=False), "decoder": dict(encoder=False, cross=False),
        "cross": dict(encoder=False, decoder=False)}


@pytest.fixture(scope="module")
def frozen():
  return jax.jit(init_params, static_argnums=0)(CFG, jax.random.PRNGKey(42))


@jax.jit
def _logits(frozen, injection=None):
  return T5(CFG).apply({"params": frozen}, ENC, DEC, injection=injection)


@jax.jit
def _encode(frozen, injection=None):
  return T5(CFG).apply({"params": frozen}, ENC, injection, method=T5.encode)


@jax.jit
def _decode(frozen, encoded, valid, injection=None):
  return T5(CFG).apply({"params": frozen}, encoded, valid, DEC, injection, method=T5.decode)


@pytest.mark.parametrize("reparam", [True, False])
def test_injection_shapes_follow_heads_and_head_dim(frozen, reparam):
  method = PrefixTuning(length=3, reparam=reparam, hidden_dim=7)
  inj = method.inject(method.init(RNG, frozen, CFG), {}, CFG)
  assert inj.prompt is None and method.prompt_length == 0
  for field, layers in (("encoder_prefix", 2), ("decoder_prefix", 3), ("cross_prefix", 3)):
    keys, values = getattr(inj, field)
    assert keys.shape == values.shape == (layers, 1, 3, 2, 4)


def test_trainable_layout_and_logical_axes(frozen):
  method = PrefixTuning(length=3, hidden_dim=7, reparam_embed_dim=5, cross=False)
  trainable = method.init(RNG, frozen, CFG)
  assert trainable["embedding"].shape == (3, 5)
  assert trainable["mlp"]["wi"]["kernel"].shape == (5, 7)
  assert trainable["mlp"]["decoder"]["value"]["kernel"].shape == (7, 3, 2, 4)
  assert sorted(trainable["mlp"]) == ["decoder", "encoder", "wi"]
  for m, tree in ((method, trainable), (method.inference_method(), method.export(trainable, CFG))):
    axes = m.logical_axes(CFG)
    assert jax.tree_util.tree_structure(axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)) == \
        jax.tree_util.tree_structure(tree)
    partitioning.logical_to_mesh_axes(axes, shapes=tree)  # Every name has a sharding rule.
  assert method.num_params(trainable) == 3 * 5 + 5 * 7 + 7 + 2 * (7 * 2 * 8 + 2 * 8) + 2 * (7 * 3 * 8 + 3 * 8)


def test_reparam_export_folds_exactly(frozen):
  method = PrefixTuning(length=3, hidden_dim=7)
  trainable = method.init(RNG, frozen, CFG)
  exported = method.export(trainable, CFG)
  assert "embedding" not in exported and exported["cross"]["key"].shape == (3, 3, 2, 4)
  for a, b in zip(jax.tree_util.tree_leaves(method.inject(trainable, {}, CFG)),
                  jax.tree_util.tree_leaves(method.inference_method().inject(exported, {}, CFG))):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(_logits(frozen, method.inject(trainable, {}, CFG)),
                                _logits(frozen, method.inference_method().inject(exported, {}, CFG)))
  assert method.inference_method().reparam is False


def test_prefix_changes_logits(frozen):
  method = PrefixTuning(length=3, reparam=False, init_std=1.0)
  numerics.assert_differs(_logits(frozen, method.inject(method.init(RNG, frozen, CFG), {}, CFG)), _logits(frozen),
                          roundings=numerics.NETWORK)


def test_each_kind_acts_only_where_it_is_injected(frozen):
  encoded, valid = _encode(frozen)
  base_logits = _decode(frozen, encoded, valid)
  for kind, flags in ONLY.items():
    method = PrefixTuning(length=3, reparam=False, init_std=1.0, **flags)
    inj = method.inject(method.init(RNG, frozen, CFG), {}, CFG)
    assert [f for f in ("encoder_prefix", "decoder_prefix", "cross_prefix") if getattr(inj, f) is not None] == \
        [f"{kind}_prefix"]
    enc_out, _ = _encode(frozen, inj)
    dec_out = _decode(frozen, encoded, valid, inj)  # Decoder on the un-prefixed encoder output.
    if kind == "encoder":
      numerics.assert_differs(enc_out, encoded, roundings=numerics.NETWORK)
      np.testing.assert_array_equal(dec_out, base_logits)  # The decoder never reads encoder prefixes.
    else:
      np.testing.assert_array_equal(enc_out, encoded)  # Decoder prefixes leave the encoder untouched.
      numerics.assert_differs(dec_out, base_logits, roundings=numerics.NETWORK)


@pytest.mark.parametrize("reparam", [True, False])
def test_gradient_reaches_every_leaf(frozen, reparam):
  method = PrefixTuning(length=3, reparam=reparam, hidden_dim=7)
  trainable = method.init(RNG, frozen, CFG)
  grads = jax.jit(jax.grad(lambda t: jnp.sum(_logits(frozen, method.inject(t, {}, CFG)))))(trainable)
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    assert float(jnp.max(jnp.abs(g))) > 0, jax.tree_util.keystr(path)


def test_configuration_errors(frozen):
  with pytest.raises(ValueError, match="enable at least one prefix kind"):
    PrefixTuning(encoder=False, decoder=False, cross=False)
  with pytest.raises(ValueError, match="PrefixTuning.length must be a positive int"):
    PrefixTuning(length=0)
  plain = PrefixTuning(length=3, reparam=False, cross=False).init(RNG, frozen, CFG)
  with pytest.raises(ValueError, match=r"no prefixes for \['cross'\]"):
    PrefixTuning(length=3, reparam=False).inject(plain, {}, CFG)


def test_exported_prefixes_match_a_direct_injection(frozen):
  method = PrefixTuning(length=2, hidden_dim=5, decoder=False, cross=False)
  exported = method.export(method.init(RNG, frozen, CFG), CFG)
  direct = Injection(encoder_prefix=(exported["encoder"]["key"][:, None], exported["encoder"]["value"][:, None]))
  np.testing.assert_array_equal(_logits(frozen, method.inject(method.init(RNG, frozen, CFG), {}, CFG)),
                                _logits(frozen, direct))
