"""Hugging Face safetensors: name mapping, config translation, the golden t5_1_1_mini model, sharded files."""
import json
import os

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from xprompt_jax.checkpoints import hf
from xprompt_jax.checkpoints import tree
from xprompt_jax.models.config import T5Config

T5_1_0 = T5Config(vocab_size=24, emb_dim=6, num_heads=2, head_dim=4, mlp_dim=10, num_encoder_layers=3,
                  num_decoder_layers=1, mlp_activations=("relu",), logits_via_embedding=True, relpos_num_buckets=8,
                  relpos_max_distance=16, dropout_rate=0.0)


def _random_params(config, seed=0):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), tree.expected_params(config))


@pytest.fixture(scope="module")
def mini_dir(shared):
  return str(shared / "golden" / "t5_1_1_mini")


# Written out by hand (not via hf.hf_name) so the mapping is checked against an independent table.
_GOLDEN_PAIRS = [
    ("shared.weight", "token_embedder/embedding", False),
    ("lm_head.weight", "decoder/logits_dense/kernel", True),
    ("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", "encoder/relpos_bias/rel_embedding", True),
    ("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", "decoder/relpos_bias/rel_embedding", True),
    ("encoder.block.1.layer.0.SelfAttention.q.weight", "encoder/layers_1/attention/query/kernel", True),
    ("encoder.block.0.layer.0.SelfAttention.o.weight", "encoder/layers_0/attention/out/kernel", True),
    ("encoder.block.1.layer.0.layer_norm.weight", "encoder/layers_1/pre_attention_layer_norm/scale", False),
    ("encoder.block.0.layer.1.DenseReluDense.wi_0.weight", "encoder/layers_0/mlp/wi_0/kernel", True),
    ("encoder.block.0.layer.1.DenseReluDense.wi_1.weight", "encoder/layers_0/mlp/wi_1/kernel", True),
    ("encoder.block.1.layer.1.DenseReluDense.wo.weight", "encoder/layers_1/mlp/wo/kernel", True),
    ("encoder.block.1.layer.1.layer_norm.weight", "encoder/layers_1/pre_mlp_layer_norm/scale", False),
    ("encoder.final_layer_norm.weight", "encoder/encoder_norm/scale", False),
    ("decoder.block.1.layer.0.SelfAttention.k.weight", "decoder/layers_1/self_attention/key/kernel", True),
    ("decoder.block.1.layer.0.layer_norm.weight", "decoder/layers_1/pre_self_attention_layer_norm/scale", False),
    ("decoder.block.0.layer.1.EncDecAttention.v.weight", "decoder/layers_0/encoder_decoder_attention/value/kernel",
     True),
    ("decoder.block.0.layer.1.layer_norm.weight", "decoder/layers_0/pre_cross_attention_layer_norm/scale", False),
    ("decoder.block.1.layer.2.DenseReluDense.wo.weight", "decoder/layers_1/mlp/wo/kernel", True),
    ("decoder.block.1.layer.2.layer_norm.weight", "decoder/layers_1/pre_mlp_layer_norm/scale", False),
    ("decoder.final_layer_norm.weight", "decoder/decoder_norm/scale", False),
]


def test_golden_mini_every_tensor_lands_at_its_path(mini_dir):
  params, config = hf.read_hf(mini_dir)
  assert config == T5Config(vocab_size=32128, emb_dim=64, num_heads=4, head_dim=16, mlp_dim=96,
                            num_encoder_layers=2, num_decoder_layers=2, mlp_activations=("gelu", "linear"),
                            logits_via_embedding=False, dropout_rate=0.0)
  tensors = load_file(os.path.join(mini_dir, "model.safetensors"))
  flat = tree.flatten(params)
  assert len(flat) == len(tensors)
  for name, path, transposed in _GOLDEN_PAIRS:
    np.testing.assert_array_equal(flat[path], tensors[name].T if transposed else tensors[name])
  for name, tensor in tensors.items():
    path, transposed = next((p, t) for p, (n, t) in ((p, hf.hf_name(p)) for p in flat) if n == name)
    np.testing.assert_array_equal(flat[path], tensor.T if transposed else tensor)
  assert flat["encoder/layers_0/attention/query/kernel"].shape == (64, 64)
  assert flat["decoder/logits_dense/kernel"].shape == (64, 32128)
  assert flat["decoder/relpos_bias/rel_embedding"].shape == (4, 32)


def test_golden_mini_written_back_is_identical(mini_dir, tmp_path):
  params, config = hf.read_hf(mini_dir)
  hf.write_hf(params, str(tmp_path), config)
  original = load_file(os.path.join(mini_dir, "model.safetensors"))
  written = load_file(str(tmp_path / "model.safetensors"))
  assert sorted(original) == sorted(written)
  for name in original:
    assert original[name].dtype == written[name].dtype
    np.testing.assert_array_equal(original[name], written[name])
  ours = json.loads((tmp_path / "config.json").read_text())
  theirs = json.loads(open(os.path.join(mini_dir, "config.json")).read())
  for key in ("d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads", "feed_forward_proj",
              "dense_act_fn", "tie_word_embeddings", "relative_attention_num_buckets",
              "relative_attention_max_distance", "vocab_size", "is_gated_act"):
    assert ours[key] == theirs[key], key
  assert hf.read_config(str(tmp_path)) == config


def test_config_translation():
  c = hf.config_from_hf({"d_model": 8, "d_kv": 3, "d_ff": 16, "num_layers": 2, "num_heads": 4,
                         "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False, "vocab_size": 100})
  assert c.mlp_activations == ("gelu", "linear") and not c.logits_via_embedding
  assert c.num_decoder_layers == 2 and c.head_dim == 3 and c.inner_dim == 12
  c = hf.config_from_hf({"feed_forward_proj": "relu", "num_layers": 3, "num_decoder_layers": 1})
  assert c.mlp_activations == ("relu",) and c.logits_via_embedding  # HF default: tied (T5 1.0).
  assert (c.num_encoder_layers, c.num_decoder_layers) == (3, 1)
  assert hf.config_from_hf({"feed_forward_proj": "gelu"}).mlp_activations == ("gelu_exact",)
  for config in (T5_1_0, T5_1_0.replace(mlp_activations=("silu", "linear"), logits_via_embedding=False)):
    assert hf.config_from_hf(hf.config_to_hf(config)) == config
  with pytest.raises(tree.CheckpointError, match="unsupported activation 'tanh'"):
    hf.config_from_hf({"feed_forward_proj": "tanh"})
  with pytest.raises(tree.CheckpointError, match="model_type 'bart' is not a T5 model"):
    hf.config_from_hf({"model_type": "bart"})
  with pytest.raises(ValueError, match="no Hugging Face T5 equivalent"):
    hf.config_to_hf(T5_1_0.replace(mlp_activations=("gelu", "relu")))


def test_hf_name_rejects_unknown_paths():
  assert hf.hf_name("decoder/layers_12/encoder_decoder_attention/out/kernel") == (
      "decoder.block.12.layer.1.EncDecAttention.o.weight", True)
  with pytest.raises(ValueError, match="encoder/layers_0/bogus/kernel has no Hugging Face"):
    hf.hf_name("encoder/layers_0/bogus/kernel")


def test_t5_1_0_round_trip_with_shards_and_tied_copies(tmp_path):
  params = _random_params(T5_1_0)
  path = str(tmp_path / "hf")
  hf.write_hf(params, path, T5_1_0, max_shard_bytes=200)
  index = json.loads(open(os.path.join(path, hf.INDEX_NAME)).read())
  assert len(set(index["weight_map"].values())) > 2 and "lm_head.weight" not in index["weight_map"]
  assert not os.path.exists(os.path.join(path, hf.WEIGHTS_NAME))
  back, config = hf.read_hf(path)
  assert config == T5_1_0
  for key, value in tree.flatten(params).items():
    np.testing.assert_array_equal(tree.flatten(back)[key], value)
  # Tied copies (as older HF exports write them) are accepted when equal to shared.weight, refused otherwise.
  single = str(tmp_path / "single")
  hf.write_hf(params, single, T5_1_0)
  tensors = load_file(os.path.join(single, hf.WEIGHTS_NAME))
  tensors["encoder.embed_tokens.weight"] = tensors["shared.weight"]
  tensors["lm_head.weight"] = tensors["shared.weight"]
  save_file(tensors, os.path.join(single, hf.WEIGHTS_NAME))
  hf.read_hf(single)
  tensors["decoder.embed_tokens.weight"] = tensors["shared.weight"] + 1
  save_file(tensors, os.path.join(single, hf.WEIGHTS_NAME))
  with pytest.raises(tree.CheckpointError, match="decoder.embed_tokens.weight differs from shared.weight"):
    hf.read_hf(single)


def test_missing_and_unexpected_tensors_are_named(tmp_path):
  params = _random_params(T5_1_0)
  path = str(tmp_path)
  hf.write_hf(params, path, T5_1_0)
  tensors = load_file(os.path.join(path, hf.WEIGHTS_NAME))
  del tensors["encoder.block.2.layer.1.DenseReluDense.wo.weight"]
  tensors["encoder.block.7.layer.0.layer_norm.weight"] = np.ones(6, np.float32)
  save_file(tensors, os.path.join(path, hf.WEIGHTS_NAME))
  with pytest.raises(tree.CheckpointError) as e:
    hf.read_hf(path)
  assert "missing tensor encoder.block.2.layer.1.DenseReluDense.wo.weight (for encoder/layers_2/mlp/wo/kernel, " \
         "expected shape (6, 10))" in str(e.value)
  assert "unexpected tensor encoder.block.7.layer.0.layer_norm.weight" in str(e.value)
  hf.write_hf(params, path, T5_1_0)
  with pytest.raises(tree.CheckpointError, match=r"shape mismatch for decoder/layers_0/mlp/wi/kernel: checkpoint "
                     r"has \(6, 10\), model expects \(6, 12\)"):
    hf.read_hf(path, T5_1_0.replace(mlp_dim=12))
  os.remove(os.path.join(path, hf.WEIGHTS_NAME))
  with pytest.raises(FileNotFoundError, match="neither model.safetensors nor model.safetensors.index.json"):
    hf.read_hf(path)


def test_read_into_shardings(tmp_path):
  params = _random_params(T5_1_0)
  hf.write_hf(params, str(tmp_path), T5_1_0)
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "model"))
  shardings = {"token_embedder": {"embedding": NamedSharding(mesh, P("data", None))},
               "encoder": {"layers_1": {"attention": {"query": {"kernel": NamedSharding(mesh, P("data", "model"))}}}}}
  back, _ = hf.read_hf(str(tmp_path), shardings=shardings)
  flat, flat_params, flat_shardings = tree.flatten(back), tree.flatten(params), tree.flatten(shardings)
  for key, sharding in flat_shardings.items():
    assert flat[key].sharding == sharding
    np.testing.assert_array_equal(np.asarray(flat[key]), flat_params[key])
    for shard in flat[key].addressable_shards:
      np.testing.assert_array_equal(np.asarray(shard.data), flat_params[key][shard.index])
  assert flat["encoder/layers_1/attention/query/kernel"].addressable_shards[0].data.shape == (3, 2)
  assert isinstance(back["encoder"]["encoder_norm"]["scale"], np.ndarray)
