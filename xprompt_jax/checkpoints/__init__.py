"""Checkpoint I/O: one entry point over T5X (directory and legacy msgpack), Hugging Face safetensors and Orbax.

`load_params(path, config=None, shardings=None) -> (params, config)` returns T5X's parameter tree (the tree of
`xprompt_jax.models.t5.abstract_params(config)`), checked parameter by parameter against the model.
Hugging Face and Orbax folders carry their config; T5X checkpoints need `config` (from gin / a preset).
"""
from typing import Any, Mapping, Optional

import jax

from xprompt_jax.checkpoints import hf
from xprompt_jax.checkpoints import orbax_io
from xprompt_jax.checkpoints import storage
from xprompt_jax.checkpoints import t5x
from xprompt_jax.checkpoints import tree as tree_lib
from xprompt_jax.checkpoints.tree import CheckpointError
from xprompt_jax.models.config import T5Config

FORMATS = ("t5x", "t5x_legacy", "hf", "orbax")
WRITABLE_FORMATS = ("t5x", "hf", "orbax")
_EXPECTED_FILES = {
    "t5x": f"a directory with a msgpack '{t5x.MSGPACK_NAME}' file (plus 'target.*' zarr folders)",
    "t5x_legacy": "a single msgpack file (e.g. 'checkpoint_0') with optimizer/target",
    "hf": f"a directory with '{hf.CONFIG_NAME}' and '{hf.WEIGHTS_NAME}' or '{hf.INDEX_NAME}'",
    "orbax": f"a directory with '{orbax_io.PARAMS_ITEM}/' and '{orbax_io.CONFIG_ITEM}/' written by xprompt-jax",
}

__all__ = ["CheckpointError", "FORMATS", "detect_format", "load_params", "save_params", "stored_shapes"]


def detect_format(path: str) -> str:
  """'t5x' | 't5x_legacy' | 'hf' | 'orbax' from the files at `path`; a clear error when it is none of them."""
  path = str(path)
  # Marker files first: on gs:// a file probe is one read, while listing a prefix can be slow.
  if storage.is_file(storage.join(path, t5x.MSGPACK_NAME)):
    return "t5x"
  if storage.is_file(storage.join(path, hf.CONFIG_NAME)) and (
      storage.is_file(storage.join(path, hf.WEIGHTS_NAME)) or storage.is_file(storage.join(path, hf.INDEX_NAME))):
    return "hf"
  if orbax_io.is_orbax(path):
    return "orbax"
  if storage.is_file(path):
    return "t5x_legacy"
  if not storage.is_dir(path):
    raise FileNotFoundError(f"checkpoint path {path} does not exist")
  expected = "\n  ".join(f"{fmt}: {files}" for fmt, files in _EXPECTED_FILES.items())
  raise CheckpointError(f"{path} is not a checkpoint in any known format; expected one of:\n  {expected}")


def stored_shapes(path: str, fmt: Optional[str] = None) -> dict:
  """The stored tree as `jax.ShapeDtypeStruct`s without reading array data (T5X and Orbax only)."""
  fmt = fmt or detect_format(path)
  if fmt in ("t5x", "t5x_legacy"):
    return t5x.stored_shapes(path)
  if fmt == "orbax":
    return orbax_io.stored_shapes(path)
  raise ValueError(f"stored_shapes supports t5x, t5x_legacy and orbax, not {fmt!r}")


def load_params(path: str, config: Optional[T5Config] = None,
                shardings: Optional[Mapping[str, Any]] = None) -> tuple[dict, T5Config]:
  """(params, config) of the checkpoint at `path`, validated against `abstract_params(config)`.

  `config` is required for T5X checkpoints; for HF/Orbax it overrides the stored one (shapes must still match).
  `shardings`: a tree of `jax.sharding.Sharding` (same paths as the params) to restore straight onto devices.
  With `config.scan_layers` the per-layer checkpoint is stacked into the scanned layout (then placed from host
  memory). Raises CheckpointError naming every missing, unexpected or wrongly shaped parameter.
  """
  path = str(path)
  fmt = detect_format(path)
  if fmt in ("t5x", "t5x_legacy") and config is None:
    raise ValueError(f"{path} is a T5X checkpoint, which stores no model configuration: pass a T5Config "
                     "(e.g. --gin_file=models/t5_1_1_base.gin or --model=<preset>)")
  scanned = bool(config and config.scan_layers)
  read_config = tree_lib.unscanned(config) if config else None
  direct = None if scanned else shardings
  if fmt == "hf":
    params, stored_config = hf.read_hf(path, read_config, direct)
  elif fmt in ("t5x", "t5x_legacy"):
    tree_lib.validate(t5x.stored_shapes(path), tree_lib.expected_params(read_config), path)
    params, stored_config = t5x.read_t5x(path, direct), config
  else:
    stored_config = orbax_io.read_config(path)
    tree_lib.validate(orbax_io.stored_shapes(path),
                      tree_lib.expected_params(read_config or tree_lib.unscanned(stored_config)), path)
    params, _ = orbax_io.read_orbax(path, direct)
  config = config or stored_config
  if config.scan_layers:
    params = tree_lib.stack_layers(params)
    tree_lib.validate(params, tree_lib.expected_params(config), path)
    params = tree_lib.place(params, shardings)
  return params, config


def save_params(params: Mapping[str, Any], path: str, fmt: str, config: T5Config, **kwargs) -> None:
  """Writes `params` (checked against `config`) as `fmt` in 't5x' | 'hf' | 'orbax' at `path`.

  Scanned trees (`config.scan_layers`) are written in the per-layer layout every format uses. In a multi-process
  run every process must call this (T5X/HF gather the arrays and process 0 writes; Orbax writes collectively).
  kwargs go to the writer: `max_shard_bytes` for hf, `step` for t5x, `force` for orbax.
  """
  if fmt not in WRITABLE_FORMATS:
    raise ValueError(f"cannot write checkpoint format {fmt!r}; choose one of {WRITABLE_FORMATS}")
  tree_lib.validate(params, tree_lib.expected_params(config), f"to be written to {path}")
  if fmt in ("t5x", "hf"):  # Single-writer formats: gather on every process, write from process 0 only.
    params = tree_lib.to_numpy(params)
    if jax.process_index() != 0:
      return
  if tree_lib.is_scanned(params):
    params = tree_lib.unstack_layers(params)
  if fmt == "t5x":
    t5x.write_t5x(params, str(path), **kwargs)
  elif fmt == "hf":
    hf.write_hf(params, str(path), config, **kwargs)
  else:
    orbax_io.write_orbax(params, str(path), config, **kwargs)
