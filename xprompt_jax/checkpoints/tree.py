"""Parameter-tree helpers shared by the checkpoint formats: '/'-joined paths and validation against the model.

Every format converts to and from the same thing: T5X's nested dict of arrays (see `xprompt_jax.models.t5`).
Validation compares a loaded tree with `abstract_params(config)` and names every missing, unexpected or
wrongly-shaped parameter by its '/'-joined path.
"""
import functools
from typing import Any, Mapping

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
  """The same tree with every leaf as a host numpy array (dtype kept)."""
  return unflatten({k: np.asarray(v) for k, v in flatten(params).items()})
