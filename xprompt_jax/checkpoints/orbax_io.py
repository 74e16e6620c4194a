"""Orbax checkpoints of a parameter tree with its T5Config, so the folder is self-describing.

Layout (an orbax `CompositeCheckpointHandler` checkpoint): `<dir>/params/` (StandardCheckpointHandler: the
T5X-layout tree, dtypes kept) and `<dir>/t5_config/metadata` (JsonCheckpointHandler: the T5Config fields).
"""
import dataclasses
from typing import Any, Mapping, Optional

from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp

from xprompt_jax.checkpoints import storage
from xprompt_jax.checkpoints import tree as tree_lib
from xprompt_jax.models.config import T5Config

PARAMS_ITEM = "params"
CONFIG_ITEM = "t5_config"


def _checkpointer() -> ocp.Checkpointer:
  return ocp.Checkpointer(ocp.CompositeCheckpointHandler())


def config_to_json(config: T5Config) -> dict:
  return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def config_from_json(data: Mapping[str, Any], source: str) -> T5Config:
  known = {f.name for f in dataclasses.fields(T5Config)}
  unknown = sorted(set(data) - known)
  if unknown:
    raise tree_lib.CheckpointError(f"{source}: unknown T5Config fields {unknown}")
  return T5Config(**data)


def is_orbax(path: str) -> bool:
  """Whether `path` holds a finished checkpoint written by `write_orbax` (checked by marker files, no listing)."""
  return (storage.is_file(storage.join(path, PARAMS_ITEM, "_METADATA")) and
          storage.is_file(storage.join(path, CONFIG_ITEM, "metadata")))


def write_orbax(params: Mapping[str, Any], path: str, config: T5Config, force: bool = False) -> None:
  """Saves `params` (numpy or jax arrays) and `config` to the orbax checkpoint folder `path`."""
  _checkpointer().save(storage.absolute(path),
                       args=ocp.args.Composite(**{PARAMS_ITEM: ocp.args.StandardSave(dict(params)),
                                                  CONFIG_ITEM: ocp.args.JsonSave(config_to_json(config))}),
                       force=force)


def read_config(path: str) -> T5Config:
  """The T5Config stored next to the parameters."""
  restored = _checkpointer().restore(storage.absolute(path),
                                     args=ocp.args.Composite(**{CONFIG_ITEM: ocp.args.JsonRestore()}))
  return config_from_json(restored[CONFIG_ITEM], storage.join(path, CONFIG_ITEM))


def stored_shapes(path: str) -> dict:
  """The saved tree as `jax.ShapeDtypeStruct`s (read from orbax metadata; no array data is loaded)."""
  metadata = ocp.StandardCheckpointHandler().metadata(epath.Path(storage.absolute(path)) / PARAMS_ITEM)
  tree = getattr(metadata, "item_metadata", metadata)
  tree = getattr(tree, "tree", tree)
  return jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype), dict(tree))


def read_orbax(path: str, shardings: Optional[Mapping[str, Any]] = None) -> tuple[dict, T5Config]:
  """(params, config) from an orbax folder written by `write_orbax`.

  Leaves keep their stored dtype. With `shardings` (tree of `jax.sharding.Sharding`, same paths) every leaf is
  restored straight into its sharding (each host reads only its shards); without, leaves are numpy arrays.
  """
  config = read_config(path)
  shapes = tree_lib.flatten(stored_shapes(path))
  flat_shardings = tree_lib.flatten(shardings) if shardings else {}
  unknown = sorted(set(flat_shardings) - set(shapes))
  if unknown:
    raise tree_lib.CheckpointError(f"{path}: shardings given for parameters the checkpoint lacks: {unknown}")
  restore_args = {}
  for p, shape in shapes.items():
    sharding = flat_shardings.get(p)
    restore_args[p] = (ocp.ArrayRestoreArgs(sharding=sharding, global_shape=shape.shape, dtype=shape.dtype)
                       if sharding is not None else ocp.RestoreArgs(restore_type=np.ndarray))
  restored = _checkpointer().restore(storage.absolute(path), args=ocp.args.Composite(
      **{PARAMS_ITEM: ocp.args.PyTreeRestore(restore_args=tree_lib.unflatten(restore_args))}))
  return dict(restored[PARAMS_ITEM]), config
