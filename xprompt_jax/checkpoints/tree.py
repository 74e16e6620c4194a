"""Parameter-tree helpers shared by the checkpoint formats: '/'-joined paths and validation against the model.

Every format converts to and from the same thing: T5X's nested dict of arrays (see `xprompt_jax.models.t5`).
Validation compares a loaded tree with `abstract_params(config)` and names every missing, unexpected or
wrongly-shaped parameter by its '/'-joined path.
"""
import functools
from typing import Any, Mapping, Optional

from flax import traverse_util
import numpy as np


class CheckpointError(ValueError):
  """A checkpoint that cannot be read as the requested model (bad layout, missing file, wrong shapes)."""


def flatten(tree: Mapping[str, Any]) -> dict[str, Any]:
  """{'a': {'b': x}} -> {'a/b': x}."""
  return traverse_util.flatten_dict(tree, sep="/")


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  """{'a/b': x} -> {'a': {'b': x}}."""
  return traverse_util.unflatten_dict(dict(flat), sep="/")


@functools.lru_cache(maxsize=16)
def expected_params(config) -> dict[str, Any]:
  """The model's parameter tree as `jax.ShapeDtypeStruct`s (`xprompt_jax.models.t5.abstract_params`; cached per
  config, so treat the result as read-only)."""
  from xprompt_jax.models import t5  # Imported late: the model module pulls in flax.linen.
  return t5.abstract_params(config)


def shape_of(leaf) -> tuple:
  """The shape of an array, a `jax.ShapeDtypeStruct`, or a shape tuple itself."""
  return tuple(leaf) if isinstance(leaf, tuple) else tuple(np.shape(leaf) if not hasattr(leaf, "shape") else leaf.shape)


def mismatches(params: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
  """Differences between a tree (of arrays, ShapeDtypeStructs or shape tuples) and the expected tree, as
  human-readable lines (empty if they agree)."""
  got, want = flatten(params), flatten(expected)
  problems = [f"missing parameter {p} (expected shape {shape_of(want[p])})" for p in sorted(want.keys() - got)]
  problems += [f"unexpected parameter {p} (shape {shape_of(got[p])})" for p in sorted(got.keys() - want)]
  for p in sorted(got.keys() & want.keys()):
    have, need = shape_of(got[p]), shape_of(want[p])
    if have != need:
      problems.append(f"shape mismatch for {p}: checkpoint has {have}, model expects {need}")
  return problems


def validate(params: Mapping[str, Any], expected: Mapping[str, Any], source: str) -> None:
  """Raises CheckpointError listing every difference between `params` (read from `source`) and `expected`."""
  problems = mismatches(params, expected)
  if problems:
    raise CheckpointError(f"checkpoint {source} does not match the model configuration:\n  " +
                          "\n  ".join(problems))


def to_numpy(params: Mapping[str, Any]) -> dict[str, Any]:
  """The same tree with every leaf as a host numpy array (dtype kept).

  A `jax.Array` spread over several processes is all-gathered first, so every process must call this.
  """
  def host(leaf):
    if getattr(leaf, "is_fully_addressable", True):
      return np.asarray(leaf)
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
  return unflatten({k: host(v) for k, v in flatten(params).items()})


# ------------------------------------------------------------------------------------------- layer layouts
# Checkpoints always hold the unscanned layout (`encoder/layers_{i}/...`, as T5X writes it); a model with
# `config.scan_layers` keeps each stack as one `layers` subtree whose leaves gain a leading layer axis.
_STACKS = ("encoder", "decoder")


def unscanned(config):
  """The config whose parameter tree is the checkpoint (unscanned) layout."""
  return config.replace(scan_layers=False) if config.scan_layers else config


def stack_layers(params: Mapping[str, Any]) -> dict[str, Any]:
  """`layers_{i}` subtrees of each stack -> one `layers` subtree, leaves stacked on a new leading axis."""
  out = dict(params)
  for stack in _STACKS:
    node = params.get(stack)
    if not isinstance(node, Mapping):
      continue
    count = sum(1 for key in node if key.startswith("layers_"))
    missing = [i for i in range(count) if f"layers_{i}" not in node]
    if missing:
      raise CheckpointError(f"cannot stack {stack}: layers {missing} are missing among {count} layers")
    if not count:
      continue
    layers = [flatten(node[f"layers_{i}"]) for i in range(count)]
    stacked = {}
    for key in layers[0]:
      shapes = {shape_of(layer.get(key, ())) for layer in layers}
      if len(shapes) != 1:
        raise CheckpointError(f"cannot stack {stack}/layers_*/{key}: the layers have shapes {sorted(shapes)}")
      stacked[key] = np.stack([np.asarray(layer[key]) for layer in layers])
    out[stack] = {k: v for k, v in node.items() if not k.startswith("layers_")}
    out[stack]["layers"] = unflatten(stacked)
  return out


def unstack_layers(params: Mapping[str, Any]) -> dict[str, Any]:
  """Inverse of `stack_layers`: a stack's `layers` subtree -> `layers_{i}` subtrees."""
  out = dict(params)
  for stack in _STACKS:
    node = params.get(stack)
    if not isinstance(node, Mapping) or "layers" not in node:
      continue
    flat = {k: np.asarray(v) for k, v in flatten(node["layers"]).items()}
    counts = {v.shape[0] for v in flat.values()}
    if len(counts) != 1:
      raise CheckpointError(f"cannot unstack {stack}/layers: leading (layer) axes differ: {sorted(counts)}")
    out[stack] = {k: v for k, v in node.items() if k != "layers"}
    for i in range(counts.pop()):
      out[stack][f"layers_{i}"] = unflatten({k: v[i] for k, v in flat.items()})
  return out


def is_scanned(params: Mapping[str, Any]) -> bool:
  return any(isinstance(params.get(s), Mapping) and "layers" in params[s] for s in _STACKS)


def place(params: Mapping[str, Any], shardings: Optional[Mapping[str, Any]]) -> dict[str, Any]:
  """Host arrays -> `jax.Array`s with the given shardings (leaves without one stay as they are)."""
  import jax  # Local: keeps this module importable without initialising a backend.
  flat_shardings = flatten(shardings or {})
  out = {}
  for p, array in flatten(params).items():
    sharding = flat_shardings.get(p)
    out[p] = array if sharding is None else jax.make_array_from_callback(
        np.shape(array), sharding, lambda index, a=array: np.asarray(a[index]))
  return unflatten(out)
