"""Device mesh, the logical-axis rule table, and placement of parameters and batches on the mesh.

The mesh has two axes, `('data', 'model')`. Parameters and activations are annotated with *logical* axis names
(`('embed', 'joined_kv')`, `('batch', 'length', 'embed')`, ...) and one ordered rule table maps those names to mesh
axes, as in T5X/flax: for each array the rules are visited in order and a rule `(logical, mesh_axis)` assigns
`mesh_axis` to the dimension named `logical` if that dimension is still unassigned and `mesh_axis` is not yet used
by another dimension of the same array. Earlier rules therefore win, a logical name may appear in several rules
(fallbacks), and a name whose every rule is blocked stays replicated.

Three rule sets are shipped, selectable by name (`MeshConfig.rules`, `get_rules`):

* `"default"` (`LOGICAL_AXIS_RULES`): data parallelism on 'data', Megatron-style tensor parallelism on 'model'
  (vocab, MLP hidden units, attention heads); `embed` is replicated.
* `"xxl"` (`XXL_LOGICAL_AXIS_RULES`): as default, plus `embed -> 'model'` wherever the 'model' axis is still free
  (layer-norm scales, activations `('batch', 'length', 'embed')`), which cuts activation memory for T5 XXL.
* `"fsdp"` (`FSDP_LOGICAL_AXIS_RULES`): as default, plus `embed -> 'data'` for parameters, i.e. frozen weights are
  sharded over the data axis too (T5X `parameter_partitioning_dims=2`); activations keep `batch` on 'data'.
"""
import collections
import dataclasses
import logging
import math
from typing import Any, Optional, Sequence, Union

import flax.linen as nn
import gin
import jax
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import numpy as np

MESH_AXES = ("data", "model")

Rules = tuple[tuple[str, Union[str, tuple[str, ...], None]], ...]

# One entry per logical axis name used by the T5 backbone and the tuning methods; comments say what it indexes.
LOGICAL_AXIS_RULES: Rules = (
    # Inputs and activations.
    ("batch", "data"),  # Examples of a batch: data parallelism.
    ("length", None),  # Token positions (encoder and decoder sequences).
    # Frozen T5 weights (tensor parallelism on 'model').
    ("vocab", "model"),  # Token-embedding rows and logits (32128 = 8 x 4016).
    ("mlp", "model"),  # FFN hidden units: wi kernels (embed, mlp), wo kernels (mlp, embed).
    ("heads", "model"),  # Attention heads (per-head activations, relative-position bias tables).
    ("joined_kv", "model"),  # Fused heads x head_dim of the q/k/v/o kernels (embed, joined_kv).
    ("kv", None),  # Per-head feature dimension (head_dim).
    ("embed", None),  # Model width d_model: replicated in the default set.
    ("mlp_activations", None),  # Stacked gated-GELU branches when the wi kernels are fused.
    ("relpos_buckets", None),  # Relative-position buckets of the bias table (heads, buckets).
    ("layers", None),  # Leading axis of nn.scan-ned layer stacks.
    # Tuning-method parameters (small: replicated).
    ("prompt_length", None),  # Soft-prompt tokens (prompt tuning, MPT, XPrompt).
    ("prompt_embed", None),  # Soft-prompt width (= d_model, but never sharded: prompts are tiny).
    ("prefix_length", None),  # Prefix-tuning key/value positions.
    ("prefix_hidden", None),  # Hidden units of the prefix-tuning reparametrisation MLP.
    ("tasks", None),  # Task index of MPT's per-task factors and of multi-task prompt banks.
    ("rank", None),  # Low-rank factors (MPT's rank-r u/v, low-rank prompt reparametrisations).
    ("pieces", None),  # XPrompt: pieces a prompt token is split into for piece-level masks.
    # Decoding cache.
    ("cache_batch", "data"),  # Batch of the autoregressive key/value cache.
    ("cache_length", None),  # Positions of the cache.
    ("cache_heads", "model"),  # Heads of the cache (follow the attention heads).
    ("cache_kv", None),  # Per-head feature dimension of the cache.
)



def _embed_on(mesh_axis: str) -> Rules:
  """The default table with `("embed", None)` replaced by `("embed", mesh_axis)` moved to the end (lowest priority)."""
  return tuple(rule for rule in LOGICAL_AXIS_RULES if rule[0] != "embed") + (("embed", mesh_axis),)


# Last, so 'model' only goes to `embed` where vocab/mlp/heads/joined_kv did not take it.
XXL_LOGICAL_AXIS_RULES: Rules = _embed_on("model")
# `batch -> data` comes first, so activations keep data parallelism and only parameters shard `embed` on 'data'.
FSDP_LOGICAL_AXIS_RULES: Rules = _embed_on("data")

RULE_SETS: dict[str, Rules] = {
    "default": LOGICAL_AXIS_RULES,
    "xxl": XXL_LOGICAL_AXIS_RULES,
    "fsdp": FSDP_LOGICAL_AXIS_RULES,
}


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Mesh shape and rule set. `data=-1` takes all devices left after `model`.

  `replicate_indivisible`: a dimension that the mesh axis does not divide is replicated (with a warning) instead of
  raising; off by default so that a bad mesh for a model fails loudly.
  """

  data: int = -1
  model: int = 1
  rules: str = "default"
  replicate_indivisible: bool = False
  # Multislice (`xprompt-jax launch ... --node_count=N`): `data` is split into dcn_data groups, one per slice, over
  # the data-centre network; the rest of `data` and all of `model` stay inside a slice (ICI). 1: one slice.
  dcn_data: int = 1

  def __post_init__(self):
    get_rules(self.rules)  # A misspelt rule-set name fails when the config is built, not at the first shard.
    if not isinstance(self.dcn_data, int) or isinstance(self.dcn_data, bool) or self.dcn_data < 1:
      raise ValueError(f"MeshConfig.dcn_data must be a positive number of slices, got {self.dcn_data!r}")


def get_rules(rules: Union[str, Sequence[tuple[str, Any]]] = "default") -> Rules:
  """A rule table from its name in `RULE_SETS`, or validated as given."""
  if isinstance(rules, str):
    if rules not in RULE_SETS:
      raise ValueError(f"unknown logical-axis rule set {rules!r}; known: {', '.join(RULE_SETS)}")
    return RULE_SETS[rules]
  out = []
  for i, rule in enumerate(rules):
    if not (isinstance(rule, (tuple, list)) and len(rule) == 2 and isinstance(rule[0], str)):
      raise ValueError(f"logical-axis rule #{i} {rule!r} is not a (logical_name, mesh_axis_or_None) pair")
    out.append((rule[0], tuple(rule[1]) if isinstance(rule[1], list) else rule[1]))
  return tuple(out)


def _resolve_shape(cfg: MeshConfig, num_devices: int, multiprocess: bool) -> tuple[int, int]:
  for field in ("data", "model"):
    value = getattr(cfg, field)
    if not isinstance(value, int) or isinstance(value, bool):
      raise ValueError(f"MeshConfig.{field} must be an int, got {value!r}")
  if cfg.model <= 0:
    raise ValueError(f"MeshConfig.model must be positive, got {cfg.model}")
  if cfg.data == 0 or cfg.data < -1:
    raise ValueError(f"MeshConfig.data must be positive or -1 (all remaining devices), got {cfg.data}")
  if cfg.data == -1:
    if cfg.model > num_devices:
      raise ValueError(f"mesh model={cfg.model} needs at least {cfg.model} devices but only {num_devices} exist")
    if num_devices % cfg.model:
      raise ValueError(f"MeshConfig(model={cfg.model}) does not divide the {num_devices} available devices, so "
                       "data=-1 cannot take the rest; pick a model size that divides the device count")
    return num_devices // cfg.model, cfg.model
  size = cfg.data * cfg.model
  if size > num_devices:
    raise ValueError(f"mesh data={cfg.data} x model={cfg.model} needs {size} devices but only {num_devices} "
                     "exist")
  if num_devices % size:
    raise ValueError(f"mesh data={cfg.data} x model={cfg.model} = {size} devices does not divide the "
                     f"{num_devices} available devices")
  if multiprocess and size != num_devices:
    raise ValueError(f"mesh data={cfg.data} x model={cfg.model} = {size} devices must use all {num_devices} "
                     f"devices of a {jax.process_count()}-process job (use data=-1)")
  return cfg.data, cfg.model


def make_mesh(cfg: Optional[MeshConfig] = None, devices: Optional[Sequence[Any]] = None) -> Mesh:
  """A ('data', 'model') mesh over `devices` (all devices of all processes by default).

  A mesh smaller than the device count (it must divide it) uses the first devices; single-process only. Meshes
  over all devices are laid out with `mesh_utils.create_device_mesh` (ICI-friendly on TPU), else reshaped; with
  `dcn_data > 1` (multislice) by `mesh_utils.create_hybrid_device_mesh`, each slice holding its own rows of `data`.
  """
  cfg = MeshConfig() if cfg is None else cfg
  devices = list(jax.devices() if devices is None else devices)
  return Mesh(device_grid(cfg, devices), MESH_AXES)


def _hybrid_grid(cfg: MeshConfig, devices: Sequence[Any], data: int, model: int) -> np.ndarray:
  """The (data, model) grid of a multislice job: slice s holds rows s*data/dcn_data ... of `data`."""
  dcn = cfg.dcn_data
  if data * model != len(devices) or data % dcn:
    raise ValueError(f"MeshConfig(data={data}, model={model}, dcn_data={dcn}): a multislice mesh uses every one of "
                     f"the {len(devices)} devices and `data` must be a multiple of dcn_data (one share per slice)")
  by_slice = hasattr(devices[0], "slice_index")  # TPU slices; elsewhere each process stands for one.
  granules = len({getattr(d, "slice_index" if by_slice else "process_index") for d in devices})
  if granules != dcn:
    raise ValueError(f"MeshConfig.dcn_data={dcn} but the devices belong to {granules} "
                     f"{'slices' if by_slice else 'processes (no slice_index on these devices)'}: set it to the "
                     "launch's --node_count")
  return mesh_utils.create_hybrid_device_mesh((data // dcn, model), (dcn, 1), devices,
                                              process_is_granule=not by_slice, allow_split_physical_axes=True)


def device_grid(cfg: MeshConfig, devices: Sequence[Any]) -> np.ndarray:
  """The devices laid out as the (data, model) array of `make_mesh`."""
  data, model = _resolve_shape(cfg, len(devices), multiprocess=jax.process_count() > 1)
  if cfg.dcn_data > 1:
    return _hybrid_grid(cfg, devices, data, model)
  if data * model == len(devices):
    try:
      grid = mesh_utils.create_device_mesh((data, model), devices, allow_split_physical_axes=True)
    except (ValueError, NotImplementedError, AssertionError) as e:
      logging.info("create_device_mesh(%s) failed (%s); using a plain reshape", (data, model), e)
      grid = np.asarray(devices, dtype=object).reshape(data, model)
  else:
    grid = np.asarray(devices[:data * model], dtype=object).reshape(data, model)
  return grid


def _path_str(path) -> str:
  return jax.tree_util.keystr(path, simple=True, separator="/") or "<root>"


def _is_names_tuple(x) -> bool:
  return isinstance(x, tuple) and not isinstance(x, PartitionSpec) and all(
      isinstance(e, str) or e is None for e in x)


def _is_spec_leaf(x) -> bool:
  return isinstance(x, (nn.Partitioned, PartitionSpec)) or _is_names_tuple(x)


def _names_and_shape(path: str, leaf, shape_leaf):
  """(logical names or None if unannotated, shape or None) of one leaf."""
  shape = getattr(shape_leaf, "shape", None) if shape_leaf is not None else None
  if isinstance(leaf, nn.Partitioned):
    names = tuple(leaf.names)
    shape = getattr(leaf.value, "shape", shape)
  elif isinstance(leaf, PartitionSpec) or _is_names_tuple(leaf):
    names = tuple(leaf)
  elif hasattr(leaf, "shape"):
    return None, tuple(leaf.shape)  # An unannotated array: replicated.
  else:
    raise TypeError(f"parameter {path}: expected a tuple of logical axis names, a PartitionSpec of logical names "
                    f"or an nn.LogicallyPartitioned box, got {type(leaf).__name__}: {leaf!r}")
  for name in names:
    if not (name is None or isinstance(name, str)):
      raise TypeError(f"parameter {path}: logical axis entry {name!r} is not a name or None (logical specs "
                      "name one logical axis per dimension)")
  if shape is not None and len(names) != len(shape):
    raise ValueError(f"parameter {path}: {len(names)} logical axes {names} for an array of shape {tuple(shape)}")
  return names, (tuple(shape) if shape is not None else None)


def _axis_size(mesh_shape: dict[str, int], axis) -> int:
  return math.prod(mesh_shape[a] for a in (axis if isinstance(axis, tuple) else (axis,)))


def _leaf_spec(path: str, names, shape, rules: Rules, mesh_shape, replicate_indivisible: bool) -> PartitionSpec:
  if names is None:
    return PartitionSpec()
  known = {name for name, _ in rules}
  unknown = [n for n in names if n is not None and n not in known]
  if unknown:
    raise ValueError(f"parameter {path}: logical axis name(s) {unknown} (of {names}) have no sharding rule; known "
                     f"names: {', '.join(sorted(known))}")
  dups = [n for n, c in collections.Counter(n for n in names if n is not None).items() if c > 1]
  if dups:
    raise ValueError(f"parameter {path}: logical axis name(s) {dups} occur more than once in {names}")
  spec = list(nn.logical_to_mesh_axes(names, rules))
  if mesh_shape is not None:
    for axis in spec:
      for a in (axis if isinstance(axis, tuple) else (axis,)):
        if a is not None and a not in mesh_shape:
          raise ValueError(f"parameter {path}: rules map {names} to mesh axis {a!r}, which the mesh "
                           f"{dict(mesh_shape)} lacks")
    if shape is not None:
      for i, axis in enumerate(spec):
        if axis is None or shape[i] % _axis_size(mesh_shape, axis) == 0:
          continue
        size = _axis_size(mesh_shape, axis)
        message = (f"parameter {path}: dimension {i} ({names[i]!r}) of shape {shape} has size {shape[i]}, not "
                   f"divisible by mesh axis {axis!r} of size {size}")
        if not replicate_indivisible:
          raise ValueError(message + " (pick another mesh, or set MeshConfig.replicate_indivisible=True to "
                           "replicate such dimensions)")
        logging.warning("%s; replicating that dimension", message)
        spec[i] = None
  return PartitionSpec(*spec)


def logical_to_mesh_axes(logical_axes_tree, rules: Union[str, Rules] = "default", *, mesh: Optional[Mesh] = None,
                         shapes=None, replicate_indivisible: bool = False):
  """Maps a tree of logical axis annotations to a tree of mesh-axis PartitionSpecs.

  Leaves of `logical_axes_tree` are tuples of logical names (`('embed', 'joined_kv')`), PartitionSpecs of logical
  names (`nn.get_partition_spec` output) or `nn.LogicallyPartitioned` boxes (`jax.eval_shape(model.init, ...)`;
  they are replaced by their spec, so the result mirrors the unboxed params). Unannotated arrays are replicated.
  With `mesh`, each dimension is checked against its mesh axis size; shapes come from boxes or from `shapes`
  (a tree of arrays / ShapeDtypeStructs with the same structure).
  """
  rules = get_rules(rules)
  mesh_shape = dict(mesh.shape) if mesh is not None else None

  def one(path, leaf, shape_leaf=None):
    p = _path_str(path)
    names, shape = _names_and_shape(p, leaf, shape_leaf)
    return _leaf_spec(p, names, shape, rules, mesh_shape, replicate_indivisible)

  if shapes is None:
    return jax.tree_util.tree_map_with_path(one, logical_axes_tree, is_leaf=_is_spec_leaf)
  return jax.tree_util.tree_map_with_path(one, logical_axes_tree, shapes, is_leaf=_is_spec_leaf)


def logical_to_sharding(logical_axes_tree, mesh: Mesh, rules: Union[str, Rules] = "default", *, shapes=None,
                        replicate_indivisible: bool = False):
  """Like `logical_to_mesh_axes`, but NamedShardings on `mesh` (with the divisibility check)."""
  specs = logical_to_mesh_axes(logical_axes_tree, rules, mesh=mesh, shapes=shapes,
                               replicate_indivisible=replicate_indivisible)
  return jax.tree_util.tree_map(lambda s: NamedSharding(mesh, s), specs,
                                is_leaf=lambda x: isinstance(x, PartitionSpec))


def replicated(mesh: Mesh) -> NamedSharding:
  """Fully replicated placement (scalars, step counters, small prompt parameters)."""
  return NamedSharding(mesh, PartitionSpec())


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension on 'data', all other dimensions replicated."""
  return NamedSharding(mesh, PartitionSpec("data"))


def _local_data_shards(mesh: Mesh) -> int:
  """How many 'data' rows of the mesh hold a device of this process (= the data axis size on one process)."""
  me = jax.process_index()
  rows = sum(any(d.process_index == me for d in row) for row in mesh.devices)
  return rows or mesh.shape["data"]


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Global arrays from this process's slice of the batch, split over 'data' along the leading dimension.

  Each process passes its own rows (`jax.make_array_from_process_local_data`); on one process that is the whole
  batch. The local batch must split evenly over the data shards this process feeds.
  """
  sharding = data_sharding(mesh)
  local_shards = _local_data_shards(mesh)
  data_size = mesh.shape["data"]
  out = {}
  for key, value in batch.items():
    value = np.asarray(value)
    if value.ndim == 0:
      raise ValueError(f"batch[{key!r}] is a scalar; every batch feature needs a leading batch dimension")
    if value.shape[0] % local_shards:
      raise ValueError(f"batch[{key!r}] has batch size {value.shape[0]} (shape {value.shape}), not divisible by "
                       f"the 'data' mesh axis size {data_size}"
                       + (f" ({local_shards} data shards on this process)" if local_shards != data_size else ""))
    out[key] = jax.make_array_from_process_local_data(sharding, value)
  return out


def with_logical_constraint(x: jax.Array, logical_axes: Sequence[Optional[str]], mesh: Mesh,
                            rules: Union[str, Rules] = "default") -> jax.Array:
  """`jax.lax.with_sharding_constraint` for an activation annotated with logical axis names."""
  spec = logical_to_mesh_axes({"activation": tuple(logical_axes)}, rules, mesh=mesh, shapes={"activation": x})
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec["activation"]))


def axis_rules(rules: Union[str, Rules] = "default"):
  """Context manager installing the rule table for flax's `nn.with_logical_constraint` / `nn.logical_*` helpers."""
  return nn.logical_axis_rules(get_rules(rules))


def per_device_bytes(abstract_tree, shardings) -> int:
  """Bytes each device holds for a tree of arrays / ShapeDtypeStructs placed with `shardings` (a matching tree)."""
  sizes = jax.tree_util.tree_map(
      lambda x, s: math.prod(s.shard_shape(tuple(x.shape))) * np.dtype(x.dtype).itemsize, abstract_tree, shardings)
  return int(sum(jax.tree_util.tree_leaves(sizes)))
