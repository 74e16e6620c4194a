"""Orbax save/restore of the parameter tree with its T5Config: dtypes kept, restore straight into shardings."""
import os

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import ml_dtypes
import numpy as np
import pytest

from xprompt_jax.checkpoints import orbax_io
from xprompt_jax.checkpoints import tree
from xprompt_jax.models.config import T5Config

CONFIG = T5Config(vocab_size=32, emb_dim=8, num_heads=4, head_dim=3, mlp_dim=16, num_encoder_layers=2,
                  num_decoder_layers=1, relpos_num_buckets=8, relpos_max_distance=16, name="orbax_test")


def _random_params(config, seed=0):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), tree.expected_params(config))


def test_round_trip_keeps_values_dtypes_and_config(tmp_path):
  params = _random_params(CONFIG)
  params["token_embedder"]["embedding"] = params["token_embedder"]["embedding"].astype(ml_dtypes.bfloat16)
  path = str(tmp_path / "orbax")
  orbax_io.write_orbax(params, path, CONFIG)
  assert orbax_io.is_orbax(path) and not orbax_io.is_orbax(str(tmp_path))
  assert {"params", "t5_config"} <= set(os.listdir(path))
  assert orbax_io.read_config(path) == CONFIG
  shapes = tree.flatten(orbax_io.stored_shapes(path))
  assert shapes["token_embedder/embedding"] == jax.ShapeDtypeStruct((32, 8), ml_dtypes.bfloat16)
  back, config = orbax_io.read_orbax(path)
  assert config == CONFIG
  flat = tree.flatten(back)
  for key, value in tree.flatten(params).items():
    assert isinstance(flat[key], np.ndarray) and flat[key].dtype == value.dtype, key
    np.testing.assert_array_equal(flat[key], value)


def test_config_json_rejects_unknown_fields():
  data = orbax_io.config_to_json(CONFIG)
  assert orbax_io.config_from_json(data, "x") == CONFIG
  with pytest.raises(tree.CheckpointError, match=r"x: unknown T5Config fields \['bogus'\]"):
    orbax_io.config_from_json({**data, "bogus": 1}, "x")


def test_restore_into_named_shardings_on_a_2x4_mesh(tmp_path):
  params = _random_params(CONFIG)
  path = str(tmp_path / "orbax")
  orbax_io.write_orbax(params, path, CONFIG)
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "model"))

  def sharding(s):
    if len(s.shape) != 2:
      return NamedSharding(mesh, P())
    return NamedSharding(mesh, P("data" if s.shape[0] % 2 == 0 else None, "model" if s.shape[1] % 4 == 0 else None))

  shardings = jax.tree.map(sharding, tree.expected_params(CONFIG))
  back, _ = orbax_io.read_orbax(path, shardings)
  flat, flat_shardings = tree.flatten(back), tree.flatten(shardings)
  for key, value in tree.flatten(params).items():
    assert flat[key].sharding == flat_shardings[key], key
    np.testing.assert_array_equal(np.asarray(flat[key]), value)
  assert flat["encoder/layers_0/attention/query/kernel"].addressable_shards[0].data.shape == (4, 3)
  with pytest.raises(tree.CheckpointError, match=r"shardings given for parameters the checkpoint lacks: \['nope/x'\]"):
    orbax_io.read_orbax(path, {"nope": {"x": NamedSharding(mesh, P())}})
