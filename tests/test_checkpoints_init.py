"""The entry point: format detection, load_params validation messages, save_params, bit-exact round trips."""
import os

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import ml_dtypes
import numpy as np
import pytest

from xprompt_jax import checkpoints
from xprompt_jax.checkpoints import tree
from xprompt_jax.models.config import PRESETS, T5Config

TINY_RANDOM = T5Config(emb_dim=4, num_heads=2, head_dim=2, mlp_dim=8, num_encoder_layers=2, num_decoder_layers=2,
                       relpos_num_buckets=4, relpos_max_distance=8)
ROUND_TRIP_CONFIGS = {
    "t5_1_0": T5Config(vocab_size=40, emb_dim=6, num_heads=2, head_dim=4, mlp_dim=10, num_encoder_layers=2,
                       num_decoder_layers=2, mlp_activations=("relu",), logits_via_embedding=True,
                       relpos_num_buckets=8, relpos_max_distance=16, dropout_rate=0.0),
    # Unequal depths and heads*head_dim (15) != emb_dim (8).
    "unequal": T5Config(vocab_size=40, emb_dim=8, num_heads=3, head_dim=5, mlp_dim=12, num_encoder_layers=1,
                        num_decoder_layers=3, relpos_num_buckets=8, relpos_max_distance=16, dropout_rate=0.0),
}


def _random_params(config, seed=0, dtype=None):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(dtype or s.dtype), tree.expected_params(config))


def _assert_bit_exact(a, b):
  fa, fb = tree.flatten(a), tree.flatten(b)
  assert sorted(fa) == sorted(fb)
  for key in fa:
    assert np.asarray(fb[key]).dtype == np.asarray(fa[key]).dtype, key
    assert np.array_equal(np.asarray(fa[key]), np.asarray(fb[key])), key


@pytest.fixture(scope="module")
def tiny_dir(shared):
  return str(shared / "checkpoints" / "t5x_t5_1_1_tiny_random" / "checkpoint_3")


def test_detect_format(tiny_dir, shared, tmp_path):
  assert checkpoints.detect_format(tiny_dir) == "t5x"
  assert checkpoints.detect_format(str(shared / "checkpoints" / "t5x_legacy_msgpack_tiny.checkpoint_0")) == \
      "t5x_legacy"
  assert checkpoints.detect_format(str(shared / "golden" / "t5_1_1_mini")) == "hf"
  config = ROUND_TRIP_CONFIGS["t5_1_0"]
  checkpoints.save_params(_random_params(config), str(tmp_path / "o"), "orbax", config)
  assert checkpoints.detect_format(str(tmp_path / "o")) == "orbax"


def test_not_a_checkpoint_lists_expected_files(tmp_path):
  (tmp_path / "notes.txt").write_text("hello")
  with pytest.raises(checkpoints.CheckpointError) as e:
    checkpoints.load_params(str(tmp_path))
  message = str(e.value)
  assert "is not a checkpoint in any known format" in message
  for expected in ("'checkpoint'", "config.json", "model.safetensors", "model.safetensors.index.json",
                   "params/", "t5_config/", "single msgpack file"):
    assert expected in message
  with pytest.raises(FileNotFoundError, match="does_not_exist does not exist"):
    checkpoints.load_params(str(tmp_path / "does_not_exist"), TINY_RANDOM)


def test_shared_t5x_checkpoints_load_through_entry_point(tiny_dir, shared):
  params, config = checkpoints.load_params(tiny_dir, TINY_RANDOM)
  assert config is TINY_RANDOM
  assert tree.flatten(params)["decoder/logits_dense/kernel"].shape == (4, 32128)
  legacy, _ = checkpoints.load_params(str(shared / "checkpoints" / "t5x_legacy_msgpack_tiny.checkpoint_0"),
                                      PRESETS["t5_1_1_tiny"])
  assert tree.flatten(legacy)["encoder/layers_1/attention/out/kernel"].shape == (12, 8)
  with pytest.raises(ValueError, match="stores no model configuration: pass a T5Config"):
    checkpoints.load_params(tiny_dir)


def test_validation_names_paths_and_shapes(tiny_dir):
  with pytest.raises(checkpoints.CheckpointError) as e:
    checkpoints.load_params(tiny_dir, TINY_RANDOM.replace(mlp_dim=16))
  assert "shape mismatch for encoder/layers_0/mlp/wi_0/kernel: checkpoint has (4, 8), model expects (4, 16)" \
      in str(e.value)
  with pytest.raises(checkpoints.CheckpointError, match=r"missing parameter encoder/layers_2/attention/key/kernel "
                     r"\(expected shape \(4, 4\)\)"):
    checkpoints.load_params(tiny_dir, TINY_RANDOM.replace(num_encoder_layers=3))
  with pytest.raises(checkpoints.CheckpointError, match=r"unexpected parameter decoder/layers_1/mlp/wo/kernel "
                     r"\(shape \(8, 4\)\)"):
    checkpoints.load_params(tiny_dir, TINY_RANDOM.replace(num_decoder_layers=1))
  with pytest.raises(checkpoints.CheckpointError, match=r"unexpected parameter decoder/logits_dense/kernel"):
    checkpoints.load_params(tiny_dir, TINY_RANDOM.replace(logits_via_embedding=True))


def test_shared_checkpoint_round_trips_t5x_hf_orbax_t5x(tiny_dir, tmp_path):
  params, config = checkpoints.load_params(tiny_dir, TINY_RANDOM)
  checkpoints.save_params(params, str(tmp_path / "hf"), "hf", config)
  from_hf, hf_config = checkpoints.load_params(str(tmp_path / "hf"))
  checkpoints.save_params(from_hf, str(tmp_path / "orbax"), "orbax", hf_config)
  from_orbax, orbax_config = checkpoints.load_params(str(tmp_path / "orbax"))
  checkpoints.save_params(from_orbax, str(tmp_path / "t5x"), "t5x", orbax_config)
  final, _ = checkpoints.load_params(str(tmp_path / "t5x"), orbax_config)
  assert hf_config == orbax_config == TINY_RANDOM
  _assert_bit_exact(params, final)
  _assert_bit_exact(params, from_hf)


@pytest.mark.parametrize("name", sorted(ROUND_TRIP_CONFIGS))
@pytest.mark.parametrize("dtype", [None, ml_dtypes.bfloat16])
def test_random_round_trips_are_bit_exact(name, dtype, tmp_path):
  config = ROUND_TRIP_CONFIGS[name]
  params = _random_params(config, dtype=dtype)
  checkpoints.save_params(params, str(tmp_path / "t5x0"), "t5x", config)
  current, current_config = checkpoints.load_params(str(tmp_path / "t5x0"), config)
  for fmt in ("hf", "orbax", "t5x"):
    checkpoints.save_params(current, str(tmp_path / fmt), fmt, current_config)
    current, current_config = checkpoints.load_params(str(tmp_path / fmt), None if fmt != "t5x" else config)
    assert current_config == config, fmt
    _assert_bit_exact(params, current)


def test_save_params_checks_format_and_tree(tmp_path):
  config = ROUND_TRIP_CONFIGS["unequal"]
  params = _random_params(config)
  with pytest.raises(ValueError, match=r"cannot write checkpoint format 't5x_legacy'"):
    checkpoints.save_params(params, str(tmp_path / "x"), "t5x_legacy", config)
  with pytest.raises(checkpoints.CheckpointError, match=r"missing parameter decoder/layers_3/"):
    checkpoints.save_params(params, str(tmp_path / "x"), "hf", config.replace(num_decoder_layers=4))
  assert not os.path.exists(tmp_path / "x")


@pytest.mark.parametrize("fmt", ["t5x", "orbax", "hf"])
def test_load_params_into_shardings(fmt, tmp_path):
  config = ROUND_TRIP_CONFIGS["unequal"]
  params = _random_params(config)
  checkpoints.save_params(params, str(tmp_path / fmt), fmt, config)
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "model"))
  shardings = jax.tree.map(
      lambda s: NamedSharding(mesh, P("data", "model") if s.shape == (8, 12) else P()), tree.expected_params(config))
  loaded, _ = checkpoints.load_params(str(tmp_path / fmt), config, shardings)
  flat, flat_shardings = tree.flatten(loaded), tree.flatten(shardings)
  for key, value in tree.flatten(params).items():
    assert flat[key].sharding == flat_shardings[key]
    np.testing.assert_array_equal(np.asarray(flat[key]), value)
  wi = flat["encoder/layers_0/mlp/wi_0/kernel"]
  assert wi.addressable_shards[0].data.shape == (4, 3)


def test_scanned_layout_loads_saves_and_shards(tiny_dir, tmp_path):
  scan_config = TINY_RANDOM.replace(scan_layers=True)
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "model"))
  shardings = jax.tree.map(lambda s: NamedSharding(mesh, P(None, "data", "model") if len(s.shape) == 3 else P()),
                           tree.expected_params(scan_config))
  scanned, config = checkpoints.load_params(tiny_dir, scan_config, shardings)
  assert config == scan_config
  kernel = scanned["encoder"]["layers"]["attention"]["query"]["kernel"]
  assert kernel.shape == (2, 4, 4) and kernel.sharding == tree.flatten(shardings)[
      "encoder/layers/attention/query/kernel"]
  unscanned, _ = checkpoints.load_params(tiny_dir, TINY_RANDOM)
  np.testing.assert_array_equal(np.asarray(kernel)[1], unscanned["encoder"]["layers_1"]["attention"]["query"]["kernel"])
  for fmt in ("hf", "orbax", "t5x"):
    checkpoints.save_params(scanned, str(tmp_path / fmt), fmt, scan_config)
    if fmt != "hf":  # Written per layer, as T5X does (HF is per block by construction).
      assert "layers_1" in checkpoints.stored_shapes(str(tmp_path / fmt))["encoder"]
    back, back_config = checkpoints.load_params(str(tmp_path / fmt), None if fmt == "orbax" else scan_config)
    assert back_config == scan_config
    _assert_bit_exact(jax.tree.map(np.asarray, scanned), back)
