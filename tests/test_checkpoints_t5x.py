"""T5X reader/writer: the shared tiny checkpoints (zarr directory and legacy msgpack), sharded reads, round trips."""
import os
import shutil

from flax import serialization
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import ml_dtypes
import msgpack
import numpy as np
import pytest
import tensorstore as ts

from xprompt_jax.checkpoints import t5x
from xprompt_jax.checkpoints import tree
from xprompt_jax.models.config import PRESETS, T5Config

TINY_RANDOM = T5Config(emb_dim=4, num_heads=2, head_dim=2, mlp_dim=8, num_encoder_layers=2, num_decoder_layers=2,
                       relpos_num_buckets=4, relpos_max_distance=8)
LEGACY = PRESETS["t5_1_1_tiny"]


def _shapes(params):
  return {k: tuple(v.shape) for k, v in tree.flatten(params).items()}


def _expected_shapes(config):
  return _shapes(tree.expected_params(config))


def _random_params(config, seed=0, dtype=None):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(dtype or s.dtype), tree.expected_params(config))


@pytest.fixture(scope="module")
def tiny_dir(shared):
  return str(shared / "checkpoints" / "t5x_t5_1_1_tiny_random" / "checkpoint_3")


@pytest.fixture(scope="module")
def legacy_file(shared):
  return str(shared / "checkpoints" / "t5x_legacy_msgpack_tiny.checkpoint_0")


def test_tiny_random_directory_loads_with_values_of_msgpack_and_zarr(tiny_dir):
  params = t5x.read_t5x(tiny_dir)
  assert _shapes(params) == _expected_shapes(TINY_RANDOM)
  raw = serialization.msgpack_restore(open(os.path.join(tiny_dir, "checkpoint"), "rb").read())
  raw_target = tree.flatten(raw["optimizer"]["target"])
  flat = tree.flatten(params)
  # Inline arrays come straight from the msgpack.
  for key in ("encoder/relpos_bias/rel_embedding", "decoder/decoder_norm/scale"):
    np.testing.assert_array_equal(flat[key], raw_target[key])
  # Tensorstore arrays equal what the zarr folder holds, read independently.
  for key in ("token_embedder/embedding", "decoder/logits_dense/kernel", "encoder/layers_1/mlp/wo/kernel"):
    folder = os.path.join(tiny_dir, "target." + key.replace("/", "."))
    direct = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": folder}}).result().read().result()
    np.testing.assert_array_equal(flat[key], direct)
    assert flat[key].dtype == np.float32
  assert flat["token_embedder/embedding"].shape == (32128, 4)
  assert flat["encoder/relpos_bias/rel_embedding"].shape == (2, 4)


def test_legacy_msgpack_loads_with_inline_values(legacy_file):
  params = t5x.read_t5x(legacy_file)
  assert _shapes(params) == _expected_shapes(LEGACY)
  raw = tree.flatten(serialization.msgpack_restore(open(legacy_file, "rb").read())["optimizer"]["target"])
  for key, value in tree.flatten(params).items():
    np.testing.assert_array_equal(value, raw[key])
  assert tree.flatten(params)["encoder/layers_0/attention/query/kernel"].shape == (8, 12)
  assert tree.flatten(params)["decoder/relpos_bias/rel_embedding"].shape == (4, 32)


def test_stored_shapes_reads_no_data(tiny_dir):
  shapes = tree.flatten(t5x.stored_shapes(tiny_dir))
  assert isinstance(shapes["token_embedder/embedding"], jax.ShapeDtypeStruct)
  assert {k: v.shape for k, v in shapes.items()} == _expected_shapes(TINY_RANDOM)


def _mesh_sharding(shape, mesh):
  if len(shape) != 2:
    return NamedSharding(mesh, P())
  return NamedSharding(mesh, P("data" if shape[0] % 2 == 0 else None, "model" if shape[1] % 4 == 0 else None))


def test_sharded_read_places_each_slice(tiny_dir):
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "model"))
  shardings = jax.tree.map(lambda s: _mesh_sharding(s.shape, mesh), tree.expected_params(TINY_RANDOM))
  sharded = tree.flatten(t5x.read_t5x(tiny_dir, shardings))
  host = tree.flatten(t5x.read_t5x(tiny_dir))
  flat_shardings = tree.flatten(shardings)
  for key, array in sharded.items():
    assert isinstance(array, jax.Array)
    assert array.sharding == flat_shardings[key], key
    np.testing.assert_array_equal(np.asarray(array), host[key])
    for shard in array.addressable_shards:
      np.testing.assert_array_equal(np.asarray(shard.data), host[key][shard.index])
  embedding = sharded["token_embedder/embedding"]
  assert embedding.addressable_shards[0].data.shape == (32128 // 2, 1)


def test_write_read_round_trip_keeps_dtypes_and_layout(tmp_path):
  config = T5Config(vocab_size=40, emb_dim=6, num_heads=2, head_dim=5, mlp_dim=7, num_encoder_layers=1,
                    num_decoder_layers=3, mlp_activations=("relu",), logits_via_embedding=True)
  params = _random_params(config, dtype=ml_dtypes.bfloat16)
  params["encoder"]["encoder_norm"]["scale"] = params["encoder"]["encoder_norm"]["scale"].astype(np.float32)
  path = str(tmp_path / "ckpt")
  t5x.write_t5x(params, path, step=7)
  back = tree.flatten(t5x.read_t5x(path))
  for key, value in tree.flatten(params).items():
    assert back[key].dtype == value.dtype, key
    np.testing.assert_array_equal(back[key], value)
  raw = serialization.msgpack_restore(open(os.path.join(path, "checkpoint"), "rb").read())
  assert raw["version"] == 3 and int(raw["optimizer"]["state"]["step"]) == 7
  spec = raw["optimizer"]["target"]["token_embedder"]["embedding"]
  assert spec["driver"] == "zarr" and spec["kvstore"]["path"] == "target.token_embedder.embedding"
  assert spec["metadata"]["shape"] == [40, 6] and spec["metadata"]["compressor"]["id"] == "gzip"
  assert isinstance(raw["optimizer"]["target"]["decoder"]["relpos_bias"]["rel_embedding"], np.ndarray)
  assert os.path.isdir(os.path.join(path, "target.decoder.layers_2.mlp.wi.kernel"))


def test_optimizer_state_is_neither_decoded_nor_opened(tmp_path):
  """param_states pointing at zarr folders that do not exist, and inline state that cannot even be decoded, must
  not matter: only optimizer/target is read."""
  config = T5Config(vocab_size=16, emb_dim=4, num_heads=2, head_dim=2, mlp_dim=4, num_encoder_layers=1,
                    num_decoder_layers=1)
  params = _random_params(config)
  path = str(tmp_path / "ckpt")
  t5x.write_t5x(params, path)
  file = os.path.join(path, "checkpoint")
  target = serialization.msgpack_restore(open(file, "rb").read())["optimizer"]["target"]
  state = {"step": 3, "undecodable": msgpack.ExtType(1, b"not an array"),
           "param_states": {"token_embedder": {"embedding": {"v": {
               "driver": "zarr", "kvstore": {"driver": "file", "path": "state.param_states.token_embedder.v"},
               "metadata": {"shape": [16, 4]}}}}}}
  packer = msgpack.Packer()
  data = (packer.pack_map_header(2) + packer.pack("optimizer") + packer.pack_map_header(2) + packer.pack("state") +
          msgpack.packb(state) + packer.pack("target") + serialization.msgpack_serialize(target) +
          packer.pack("version") + packer.pack(3))
  open(file, "wb").write(data)
  with pytest.raises(Exception):  # Decoding everything, as msgpack_restore does, fails on the state.
    serialization.msgpack_restore(data)
  back = tree.flatten(t5x.read_t5x(path))
  np.testing.assert_array_equal(back["token_embedder/embedding"], params["token_embedder"]["embedding"])


def test_bad_checkpoints_give_clear_errors(tmp_path):
  config = T5Config(vocab_size=16, emb_dim=4, num_heads=2, head_dim=2, mlp_dim=4, num_encoder_layers=1,
                    num_decoder_layers=1)
  path = str(tmp_path / "ckpt")
  t5x.write_t5x(_random_params(config), path)
  shutil.rmtree(os.path.join(path, "target.encoder.layers_0.mlp.wo.kernel"))
  with pytest.raises(tree.CheckpointError, match=r"encoder/layers_0/mlp/wo/kernel"):
    t5x.read_t5x(path)
  garbage = tmp_path / "garbage"
  garbage.write_bytes(b"\x00\x01not msgpack")
  with pytest.raises(tree.CheckpointError, match="not a T5X msgpack checkpoint|no optimizer/target"):
    t5x.read_t5x(str(garbage))
  wrong = tmp_path / "wrong_version"
  wrong.write_bytes(serialization.msgpack_serialize({"version": 2, "optimizer": {"target": {}}}))
  with pytest.raises(tree.CheckpointError, match="unsupported T5X checkpoint version 2"):
    t5x.read_t5x(str(wrong))
  with pytest.raises(FileNotFoundError, match="does not exist"):
    t5x.read_t5x(str(tmp_path / "absent_file"))


def test_spec_locations():
  assert t5x._spec_path({"driver": "zarr", "kvstore": {"driver": "file", "path": "target.a.kernel"}}) == \
      "target.a.kernel"
  assert t5x._spec_path({"driver": "zarr", "kvstore": {"driver": "gcs", "bucket": "b", "path": "ck/target.x"}}) == \
      "gs://b/ck/target.x"
  assert t5x._spec_path({"driver": "zarr", "path": "target.y"}) == "target.y"


def test_absolute_array_paths_of_a_copied_checkpoint_resolve_next_to_the_msgpack(tmp_path):
  config = T5Config(vocab_size=16, emb_dim=4, num_heads=2, head_dim=2, mlp_dim=4, num_encoder_layers=1,
                    num_decoder_layers=1)
  params = _random_params(config)
  path = str(tmp_path / "copied")
  t5x.write_t5x(params, path)
  file = os.path.join(path, "checkpoint")
  raw = serialization.msgpack_restore(open(file, "rb").read())
  spec = raw["optimizer"]["target"]["token_embedder"]["embedding"]
  spec["kvstore"] = {"driver": "gcs", "bucket": "gone-bucket",
                     "path": "run/checkpoint_9/target.token_embedder.embedding"}
  raw["optimizer"]["target"]["decoder"]["logits_dense"]["kernel"]["kvstore"]["path"] = (
      "/no/such/dir/target.decoder.logits_dense.kernel")
  open(file, "wb").write(serialization.msgpack_serialize(raw))
  back = tree.flatten(t5x.read_t5x(path))
  for key in ("token_embedder/embedding", "decoder/logits_dense/kernel"):
    np.testing.assert_array_equal(back[key], tree.flatten(params)[key])
