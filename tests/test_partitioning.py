"""Mesh construction, the logical-axis rule table, and batch placement on 8 simulated CPU devices."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import numerics
import pytest
import xla_env

from xprompt_jax.training import partitioning as pt


@pytest.mark.parametrize("data,model,shape", [(8, 1, (8, 1)), (2, 4, (2, 4)), (1, 1, (1, 1)), (-1, 2, (4, 2)),
                                              (-1, 1, (8, 1))])
def test_mesh_shapes(data, model, shape):
  mesh = pt.make_mesh(pt.MeshConfig(data=data, model=model))
  assert mesh.axis_names == ("data", "model")
  assert mesh.devices.shape == shape
  assert len(set(mesh.devices.flat)) == shape[0] * shape[1]


def test_mesh_errors_are_clear():
  with pytest.raises(ValueError, match=r"data=3 x model=3 needs 9 devices but only 8 exist"):
    pt.make_mesh(pt.MeshConfig(data=3, model=3))
  with pytest.raises(ValueError, match=r"needs 16 devices but only 8 exist"):
    pt.make_mesh(pt.MeshConfig(data=16, model=1))
  with pytest.raises(ValueError, match=r"= 3 devices does not divide the 8 available devices"):
    pt.make_mesh(pt.MeshConfig(data=3, model=1))
  with pytest.raises(ValueError, match=r"model=3\) does not divide the 8 available devices"):
    pt.make_mesh(pt.MeshConfig(data=-1, model=3))
  with pytest.raises(ValueError, match=r"mesh model=16 needs at least 16 devices but only 8 exist"):
    pt.make_mesh(pt.MeshConfig(model=16))
  with pytest.raises(ValueError, match=r"unknown logical-axis rule set 'XXL'"):
    pt.MeshConfig(rules="XXL")
  with pytest.raises(ValueError, match=r"MeshConfig.model must be positive, got 0"):
    pt.make_mesh(pt.MeshConfig(data=1, model=0))
  with pytest.raises(ValueError, match=r"MeshConfig.data must be positive or -1"):
    pt.make_mesh(pt.MeshConfig(data=-2, model=1))


def test_mesh_over_given_devices():
  devices = jax.devices()[:4]
  mesh = pt.make_mesh(pt.MeshConfig(data=-1, model=2), devices=devices)
  assert mesh.devices.shape == (2, 2)
  assert set(mesh.devices.flat) == set(devices)


@dataclasses.dataclass(frozen=True)
class _SliceDevice:
  """A stand-in for a TPU device of a multislice job (CPU devices have no slice_index)."""
  id: int
  slice_index: int
  process_index: int = 0
  platform: str = "cpu"
  device_kind: str = "cpu"


def test_multislice_mesh_keeps_model_inside_a_slice_and_splits_data_over_slices():
  devices = [_SliceDevice(i, slice_index=i // 8, process_index=i // 4) for i in range(16)][::-1]  # Any order.
  grid = pt.device_grid(pt.MeshConfig(data=-1, model=4, dcn_data=2), devices)
  assert grid.shape == (4, 4)
  assert [{d.slice_index for d in row} for row in grid] == [{0}, {0}, {1}, {1}]  # model (ICI) within a slice.
  assert {d.id for d in grid.flat} == set(range(16))
  with pytest.raises(ValueError, match=r"dcn_data=4 but the devices belong to 2 slices: set it to the launch's "
                                       r"--node_count"):
    pt.device_grid(pt.MeshConfig(model=4, dcn_data=4), devices)
  with pytest.raises(ValueError, match=r"`data` must be a multiple of dcn_data"):
    pt.device_grid(pt.MeshConfig(model=16, dcn_data=2), devices)
  with pytest.raises(ValueError, match=r"MeshConfig.dcn_data must be a positive number of slices, got 0"):
    pt.MeshConfig(dcn_data=0)
  # Devices without slice_index (CPU, GPU): each process stands for a slice.
  assert pt.make_mesh(pt.MeshConfig(model=2), jax.devices()[:4]).devices.shape == (2, 2)
  with pytest.raises(ValueError, match=r"belong to 1 processes \(no slice_index on these devices\)"):
    pt.make_mesh(pt.MeshConfig(model=2, dcn_data=2), jax.devices()[:4])


# A T5X-like parameter tree (a scanned encoder block, an unscanned decoder block, prompt parameters).
T5X_AXES = {
    "token_embedder": {"embedding": ("vocab", "embed")},
    "encoder": {
        "layers": {
            "attention": {"query": {"kernel": ("layers", "embed", "joined_kv")},
                          "out": {"kernel": ("layers", "joined_kv", "embed")}},
            "mlp": {"wi_0": {"kernel": ("layers", "embed", "mlp")}, "wo": {"kernel": ("layers", "mlp", "embed")}},
            "pre_attention_layer_norm": {"scale": ("layers", "embed")},
        },
        "relpos_bias": {"rel_embedding": ("heads", "relpos_buckets")},
    },
    "decoder": {"logits_dense": {"kernel": ("embed", "vocab")}},
    "prompt": {"prompt": ("prompt_length", "prompt_embed")},
    "mpt": {"u": ("tasks", "prompt_length", "rank"), "xprompt_mask": ("prompt_length", "pieces")},
}

DEFAULT_SPECS = {
    "token_embedder": {"embedding": P("model", None)},
    "encoder": {
        "layers": {
            "attention": {"query": {"kernel": P(None, None, "model")}, "out": {"kernel": P(None, "model", None)}},
            "mlp": {"wi_0": {"kernel": P(None, None, "model")}, "wo": {"kernel": P(None, "model", None)}},
            "pre_attention_layer_norm": {"scale": P(None, None)},
        },
        "relpos_bias": {"rel_embedding": P("model", None)},
    },
    "decoder": {"logits_dense": {"kernel": P(None, "model")}},
    "prompt": {"prompt": P(None, None)},
    "mpt": {"u": P(None, None, None), "xprompt_mask": P(None, None)},
}


def test_default_rules_map_t5x_tree():
  assert pt.logical_to_mesh_axes(T5X_AXES) == DEFAULT_SPECS


def test_xxl_and_fsdp_rule_sets_shard_embed():
  xxl = pt.logical_to_mesh_axes(T5X_AXES, "xxl")
  # 'model' already taken by joined_kv/mlp/vocab: embed stays replicated there, but 1-D embed params shard.
  assert xxl["encoder"]["layers"]["attention"]["query"]["kernel"] == P(None, None, "model")
  assert xxl["token_embedder"]["embedding"] == P("model", None)
  assert xxl["encoder"]["layers"]["pre_attention_layer_norm"]["scale"] == P(None, "model")
  assert pt.logical_to_mesh_axes(("batch", "length", "embed"), "xxl") == P("data", None, "model")
  fsdp = pt.logical_to_mesh_axes(T5X_AXES, "fsdp")
  assert fsdp["encoder"]["layers"]["mlp"]["wi_0"]["kernel"] == P(None, "data", "model")
  assert fsdp["token_embedder"]["embedding"] == P("model", "data")
  assert pt.logical_to_mesh_axes(("batch", "length", "embed"), "fsdp") == P("data", None, None)
  with pytest.raises(ValueError, match=r"unknown logical-axis rule set 'xxxl'; known: default, xxl, fsdp"):
    pt.get_rules("xxxl")


def test_rule_table_is_ordered_and_complete():
  names = [name for name, _ in pt.LOGICAL_AXIS_RULES]
  assert len(names) == len(set(names)), "default table lists each logical name once"
  for required in ("batch", "vocab", "embed", "mlp", "heads", "kv", "joined_kv", "relpos_buckets", "layers",
                   "length", "prompt_length", "prompt_embed", "prefix_length", "tasks", "rank", "pieces",
                   "cache_batch", "cache_length", "cache_heads", "cache_kv"):
    assert required in names
  assert all(axis in (None, "data", "model") for _, axis in pt.LOGICAL_AXIS_RULES)


def test_unknown_axis_names_parameter_path():
  tree = {"encoder": {"layers_3": {"mlp": {"wi": {"kernel": ("embed", "hidden")}}}}}
  with pytest.raises(ValueError, match=r"parameter encoder/layers_3/mlp/wi/kernel: logical axis name\(s\) "
                     r"\['hidden'\].*known names: .*joined_kv"):
    pt.logical_to_mesh_axes(tree)


def test_indivisible_dimension_errors_or_replicates():
  mesh = pt.make_mesh(pt.MeshConfig(data=2, model=4))
  axes = {"relpos": {"rel_embedding": ("heads", "relpos_buckets")}, "wo": ("mlp", "embed")}
  shapes = {"relpos": {"rel_embedding": jax.ShapeDtypeStruct((6, 32), jnp.float32)},
            "wo": jax.ShapeDtypeStruct((16, 8), jnp.float32)}
  with pytest.raises(ValueError, match=r"parameter relpos/rel_embedding: dimension 0 \('heads'\) of shape "
                     r"\(6, 32\) has size 6, not divisible by mesh axis 'model' of size 4"):
    pt.logical_to_sharding(axes, mesh, shapes=shapes)
  shardings = pt.logical_to_sharding(axes, mesh, shapes=shapes, replicate_indivisible=True)
  assert shardings["relpos"]["rel_embedding"] == NamedSharding(mesh, P(None, None))
  assert shardings["wo"] == NamedSharding(mesh, P("model", None))


def test_rank_mismatch_and_bad_leaf():
  with pytest.raises(ValueError, match=r"parameter w: 2 logical axes \('embed', 'mlp'\) for an array of shape "
                     r"\(4,\)"):
    pt.logical_to_mesh_axes({"w": ("embed", "mlp")}, shapes={"w": np.zeros(4)})
  with pytest.raises(TypeError, match=r"parameter w: expected a tuple of logical axis names"):
    pt.logical_to_mesh_axes({"w": 3})
  with pytest.raises(ValueError, match=r"parameter w: logical axis name\(s\) \['embed'\] occur more than once"):
    pt.logical_to_mesh_axes({"w": ("embed", "embed")})


class _Boxed(nn.Module):
  """A tiny flax module with logically annotated parameters, as the T5 model provides them."""
  features: int = 16

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", "mlp")),
                        (x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    return x @ kernel + bias


def test_flax_boxed_metadata_is_accepted():
  mesh = pt.make_mesh(pt.MeshConfig(data=2, model=4))
  abstract = jax.eval_shape(_Boxed().init, jax.random.PRNGKey(0), jnp.zeros((2, 8)))
  specs = pt.logical_to_mesh_axes(abstract)
  assert specs == {"params": {"kernel": P(None, "model"), "bias": P()}}
  assert pt.logical_to_mesh_axes(nn.get_partition_spec(abstract)) == specs
  shardings = pt.logical_to_sharding(abstract, mesh)
  params = jax.jit(_Boxed().init, out_shardings=shardings)(jax.random.PRNGKey(0), jnp.zeros((2, 8)))
  params = nn.unbox(params)
  assert params["params"]["kernel"].sharding.spec == P(None, "model")
  bad = jax.eval_shape(_Boxed(features=12).init, jax.random.PRNGKey(0), jnp.zeros((2, 8)))
  with pytest.raises(ValueError, match=r"parameter params/kernel: dimension 1 \('mlp'\) of shape \(8, 12\) has "
                     r"size 12, not divisible by mesh axis 'model' of size 8"):
    pt.logical_to_sharding(bad, pt.make_mesh(pt.MeshConfig(data=-1, model=8)))


def test_shard_batch_places_leading_dim_on_data():
  mesh = pt.make_mesh(pt.MeshConfig(data=4, model=2))
  batch = {"inputs": np.arange(8 * 5).reshape(8, 5), "weights": np.ones(8, np.float32)}
  out = pt.shard_batch(batch, mesh)
  for key, value in out.items():
    assert value.sharding == NamedSharding(mesh, P("data"))
    np.testing.assert_array_equal(np.asarray(value), batch[key])
  assert {s.data.shape for s in out["inputs"].addressable_shards} == {(2, 5)}
  with pytest.raises(ValueError, match=r"batch\['weights'\] has batch size 6 .*not divisible by the 'data' mesh "
                     r"axis size 4"):
    pt.shard_batch({"weights": np.ones(6)}, mesh)
  with pytest.raises(ValueError, match=r"batch\['step'\] is a scalar"):
    pt.shard_batch({"step": np.int32(3)}, mesh)


def test_sharded_matmul_matches_unsharded():
  mesh = pt.make_mesh(pt.MeshConfig(data=2, model=4))
  rng = np.random.default_rng(0)
  x = rng.standard_normal((8, 16)).astype(np.float32)
  w = rng.standard_normal((16, 32)).astype(np.float32)
  (w_sharding,) = jax.tree_util.tree_leaves(pt.logical_to_sharding([("embed", "mlp")], mesh, shapes=[w]))
  xs = pt.shard_batch({"x": x}, mesh)["x"]
  ws = jax.device_put(w, w_sharding)

  @jax.jit
  def f(a, b):
    y = a @ b
    return pt.with_logical_constraint(y, ("batch", "mlp"), mesh)

  y = f(xs, ws)
  assert y.sharding.spec == P("data", "model")
  # One 16-term contraction per entry, on the scale of its terms (sum |x_i w_i|).
  numerics.assert_close(np.asarray(y), x @ w, roundings=numerics.sum_of(16), scale=float((np.abs(x) @ np.abs(w)).max()))


def test_activation_constraint_errors_name_the_activation():
  mesh = pt.make_mesh(pt.MeshConfig(data=2, model=4))
  with pytest.raises(ValueError, match=r"parameter activation: dimension 0 \('batch'\) of shape \(3, 8\)"):
    pt.with_logical_constraint(jnp.zeros((3, 8)), ("batch", "mlp"), mesh)


def test_mesh_config_binds_with_gin_and_custom_rules_validate():
  import gin
  try:
    gin.parse_config("MeshConfig.model = 4\nMeshConfig.rules = 'fsdp'")
    cfg = pt.MeshConfig()
  finally:
    gin.clear_config()
  assert (cfg.data, cfg.model, cfg.rules) == (-1, 4, "fsdp")
  assert pt.make_mesh(cfg).devices.shape == (2, 4)
  assert pt.get_rules([("batch", ["data", "model"])]) == (("batch", ("data", "model")),)
  assert pt.logical_to_mesh_axes(("batch", "embed"), [("batch", ("data", "model")), ("embed", None)]) == P(
      ("data", "model"), None)
  with pytest.raises(ValueError, match=r"logical-axis rule #1 \('embed',\) is not a \(logical_name, "):
    pt.get_rules([("batch", "data"), ("embed",)])
  with pytest.raises(ValueError, match=r"parameter w: rules map \('batch',\) to mesh axis 'pipe', which the mesh"):
    pt.logical_to_sharding({"w": ("batch",)}, pt.make_mesh(), [("batch", "pipe")])


def test_axis_rules_context_feeds_flax_helpers():
  with pt.axis_rules("xxl"):
    assert nn.logical_to_mesh_axes(("batch", "length", "embed")) == P("data", None, "model")


@pytest.mark.parametrize("scan", [False, True])
def test_t5_model_axes_all_have_rules(scan):
  from xprompt_jax.models import config, t5
  cfg = config.PRESETS["t5_1_1_tiny"].replace(scan_layers=scan)
  mesh = pt.make_mesh(pt.MeshConfig(data=2, model=4))
  for rules in pt.RULE_SETS:
    shardings = pt.logical_to_sharding(t5.param_logical_axes(cfg), mesh, rules, shapes=t5.abstract_params(cfg))
    assert shardings["token_embedder"]["embedding"].spec[0] == "model"


def test_xxl_per_device_parameter_bytes():
  from xprompt_jax.models import config, t5
  cfg = config.PRESETS["t5_1_1_xxl"].replace(scan_layers=True)
  axes, shapes = t5.param_logical_axes(cfg), t5.abstract_params(cfg)
  total = cfg.num_params() * 4
  model8 = pt.logical_to_sharding(axes, pt.make_mesh(pt.MeshConfig(data=1, model=8)), shapes=shapes)
  assert total / 8 <= pt.per_device_bytes(shapes, model8) < 1.01 * total / 8
  data_only = pt.logical_to_sharding(axes, pt.make_mesh(pt.MeshConfig(data=8, model=1)), shapes=shapes)
  assert pt.per_device_bytes(shapes, data_only) == total
  fsdp = pt.logical_to_sharding(axes, pt.make_mesh(pt.MeshConfig(data=2, model=4)), "fsdp", shapes=shapes)
  assert pt.per_device_bytes(shapes, fsdp) < 1.01 * total / 8


_TWO_PROCESS_WORKER = r'''
import os, sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(f"localhost:{sys.argv[2]}", num_processes=2, process_id=int(sys.argv[1]))
import numpy as np
from jax.experimental import multihost_utils
from xprompt_jax.training import partitioning as pt
pid = jax.process_index()
mesh = pt.make_mesh(pt.MeshConfig(data=-1, model=2))
local = np.arange(4 * 3).reshape(4, 3) + 100 * pid  # This process's rows of a global batch of 8.
out = pt.shard_batch({"x": local}, mesh)["x"]
full = multihost_utils.process_allgather(out, tiled=True)
print("RESULT", mesh.devices.shape, out.shape, full[:, 0].tolist())
try:
  pt.shard_batch({"x": local[:3]}, mesh)
except ValueError as e:
  print("ERROR", e)
'''


def test_shard_batch_two_processes(tmp_path):
  """Two CPU processes (4 devices each) build one 4x2 mesh and each feed their own half of the batch."""
  import subprocess
  import sys
  port = str(xla_env.free_port())
  script = tmp_path / "worker.py"
  script.write_text(_TWO_PROCESS_WORKER)
  procs = [subprocess.Popen([sys.executable, str(script), str(i), port], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=xla_env.env(4)) for i in range(2)]
  outputs = [p.communicate(timeout=120) for p in procs]
  for p, (out, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
    assert "RESULT (4, 2) (8, 3) [0, 3, 6, 9, 100, 103, 106, 109]" in out
    assert ("ERROR batch['x'] has batch size 3 (shape (3, 3)), not divisible by the 'data' mesh axis size 4 "
            "(2 data shards on this process)") in out
