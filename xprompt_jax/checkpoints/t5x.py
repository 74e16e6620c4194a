"""T5X checkpoints: read the `target` parameters, write a target-only checkpoint in the same layout.

A T5X checkpoint directory holds a msgpack file `checkpoint` = {'version': 3, 'optimizer': {'target': ...,
'state': {'step', 'param_states'}}}. Small arrays sit inline in the msgpack; a large array is replaced by its
tensorstore spec, a dict {'driver': 'zarr', 'kvstore': {'driver': 'file'|'gfile', 'path': 'target.a.b.c'},
'metadata': {...}}, whose path is relative to the checkpoint directory (zarr v2, gzip). The older single-file form
(`*.checkpoint_0`) is the same msgpack with every array inline. Only `optimizer/target` is touched: optimizer
state in tensorstore is never opened.
"""
import os
from typing import Any, Mapping, Optional

from flax import serialization
import jax
import msgpack
import numpy as np
import tensorstore as ts

from xprompt_jax.checkpoints import storage
from xprompt_jax.checkpoints import tree as tree_lib

MSGPACK_NAME = "checkpoint"
VERSION = 3
_TENSORSTORE_LEAVES = ("kernel", "embedding")  # As in T5X checkpoints: matrices go to zarr, scales stay inline.
_MAX_CHUNK_BYTES = 1 << 24


def msgpack_path(path: str) -> str:
  """The msgpack file of a checkpoint directory, or `path` itself for the single-file form."""
  inside = storage.join(path, MSGPACK_NAME)
  return inside if storage.is_file(inside) else str(path)


def read_target(path: str) -> Mapping[str, Any]:
  """The raw `optimizer/target` tree (inline arrays, tensorstore specs as dicts) of a checkpoint's msgpack.

  The msgpack is walked with `msgpack.Unpacker`: only the bytes of `optimizer/target` are decoded (with flax's
  `msgpack_restore`); `optimizer/state` (Adafactor/Adam statistics) is skipped without building its arrays.
  """
  file = msgpack_path(path)
  data = storage.read_bytes(file)
  try:
    version, target = _split_state(data)
  except (ValueError, msgpack.UnpackException, msgpack.ExtraData, TypeError) as e:
    raise tree_lib.CheckpointError(f"{file} is not a T5X msgpack checkpoint: {e}") from e
  if target is None:
    raise tree_lib.CheckpointError(f"{file} has no optimizer/target entry; not a T5X checkpoint")
  if version != VERSION:
    raise tree_lib.CheckpointError(f"{file}: unsupported T5X checkpoint version {version!r} (expected {VERSION})")
  return serialization.msgpack_restore(target)


def _split_state(data: bytes) -> tuple[Any, Optional[bytes]]:
  """(version, msgpack bytes of optimizer/target or None) of a T5X state dict, decoding nothing else."""
  unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=max(len(data), 1 << 20))
  unpacker.feed(data)
  version, target = None, None
  for _ in range(unpacker.read_map_header()):
    key = unpacker.unpack()
    if key == "version":
      version = unpacker.unpack()
    elif key == "optimizer":
      for _ in range(unpacker.read_map_header()):
        if unpacker.unpack() == "target":
          start = unpacker.tell()
          unpacker.skip()
          target = data[start:unpacker.tell()]
        else:
          unpacker.skip()
    else:
      unpacker.skip()
  return version, target


def _is_spec(x) -> bool:
  return isinstance(x, Mapping) and isinstance(x.get("driver"), str) and ("kvstore" in x or "path" in x)


def _leaves(node, prefix=()):
  """(path tuple, leaf) pairs where a leaf is an inline array or a tensorstore spec dict."""
  if isinstance(node, Mapping) and not _is_spec(node):
    for key, value in node.items():
      yield from _leaves(value, prefix + (key,))
  else:
    yield prefix, node


def _spec_path(spec: Mapping[str, Any]) -> str:
  """The array's location as written: relative to the checkpoint, absolute, or gs:// for a 'gcs' kvstore."""
  kvstore = spec.get("kvstore")
  if isinstance(kvstore, Mapping):
    if kvstore.get("bucket"):
      return f"gs://{kvstore['bucket']}/{kvstore['path']}"
    return kvstore["path"]
  return kvstore if isinstance(kvstore, str) else spec["path"]


def _open_spec(spec: Mapping[str, Any], folder: str):
  """(location, tensorstore future) of an array spec.

  Relative paths resolve against the checkpoint folder. An absolute path (older T5X wrote e.g. the gs:// address
  it saved to) is used as is unless the checkpoint has since been copied: then the array of the same name next
  to the msgpack wins, as T5X itself does on restore.
  """
  written = _spec_path(spec)
  if os.path.isabs(written) or storage.is_gcs(written):
    beside = storage.join(folder, written.rstrip("/").rsplit("/", 1)[-1])
    moved = storage.parent(written) != folder and storage.is_file(storage.join(beside, ".zarray"))
    location = beside if moved else written
  else:
    location = storage.join(folder, written)
  return location, ts.open({"driver": spec["driver"], "kvstore": storage.kvstore_spec(location)},
                           open=True, read=True)


def _open(path: str):
  """(file, {path tuple: inline array or opened tensorstore}) for a checkpoint; no array data is read."""
  file = msgpack_path(path)
  folder = storage.parent(file)
  leaves = dict(_leaves(read_target(path)))
  opened = {p: _open_spec(leaf, folder) for p, leaf in leaves.items() if _is_spec(leaf)}
  for p, (location, future) in opened.items():
    try:
      store = future.result()
    except Exception as e:  # tensorstore reports a missing/corrupt array as ValueError or its own status errors.
      raise tree_lib.CheckpointError(f"{file}: cannot open tensorstore array for {'/'.join(p)} at {location}: "
                                     f"{e}") from e
    want = leaves[p].get("metadata", {}).get("shape")
    if want is not None and tuple(want) != tuple(store.shape):
      raise tree_lib.CheckpointError(f"{file}: {'/'.join(p)} is declared {tuple(want)} in the msgpack but the "
                                     f"zarr array at {location} has shape {tuple(store.shape)}")
    leaves[p] = store
  return file, leaves


def stored_shapes(path: str) -> dict:
  """The target tree as `jax.ShapeDtypeStruct`s (tensorstore arrays are opened, not read)."""
  _, leaves = _open(path)
  return tree_lib.unflatten({"/".join(p): jax.ShapeDtypeStruct(tuple(leaf.shape), _dtype(leaf))
                             for p, leaf in leaves.items()})


def _dtype(leaf) -> np.dtype:
  return leaf.dtype.numpy_dtype if isinstance(leaf, ts.TensorStore) else np.asarray(leaf).dtype


def read_t5x(path: str, shardings: Optional[Mapping[str, Any]] = None) -> dict:
  """The `optimizer/target` tree of a T5X checkpoint (directory, or the legacy single msgpack file).

  Without `shardings` every leaf is a host numpy array in its stored dtype. With `shardings` (a tree of
  `jax.sharding.Sharding` with the same paths; a missing path stays numpy) each leaf is a `jax.Array` built by
  `jax.make_array_from_callback`, so every host reads only the slices its devices hold.
  """
  _, leaves = _open(path)
  flat_shardings = {tuple(k.split("/")): v for k, v in tree_lib.flatten(shardings or {}).items()}
  reads = {p: leaf.read() for p, leaf in leaves.items()
           if isinstance(leaf, ts.TensorStore) and p not in flat_shardings}
  out = {}
  for p, leaf in leaves.items():
    sharding = flat_shardings.get(p)
    if p in reads:
      out[p] = np.asarray(reads[p].result())
    elif isinstance(leaf, ts.TensorStore):
      out[p] = jax.make_array_from_callback(
          tuple(leaf.shape), sharding, lambda index, s=leaf: np.asarray(s[index].read().result()))
    else:
      array = np.asarray(leaf)
      out[p] = array if sharding is None else jax.make_array_from_callback(
          array.shape, sharding, lambda index, a=array: a[index])
  return tree_lib.unflatten({"/".join(p): v for p, v in out.items()})


def _chunks(shape, itemsize) -> list[int]:
  """Chunk shape: the whole array, the largest axis halved until one chunk is at most 16 MiB."""
  chunks = list(shape)
  while int(np.prod(chunks)) * itemsize > _MAX_CHUNK_BYTES:
    axis = int(np.argmax(chunks))
    chunks[axis] = (chunks[axis] + 1) // 2
  return chunks


def _write_zarr(array: np.ndarray, location: str):
  """Starts writing `array` as a gzip zarr v2 array; returns (metadata, write future)."""
  metadata = {"shape": list(array.shape), "chunks": _chunks(array.shape, array.dtype.itemsize),
              "compressor": {"id": "gzip", "level": 1}}
  store = ts.open({"driver": "zarr", "kvstore": storage.kvstore_spec(location), "metadata": metadata,
                   "dtype": ts.dtype(array.dtype).name}, create=True, delete_existing=True).result()
  metadata["dtype"] = store.spec().to_json()["metadata"]["dtype"]
  return metadata, store.write(array)


def write_t5x(params: Mapping[str, Any], path: str, step: int = 0) -> None:
  """Writes `params` as a T5X checkpoint directory (target only; optimizer state holds just `step`).

  Kernels and embeddings go to zarr arrays `target.<dotted.path>` next to the msgpack, the rest inline, as T5X
  does. Leaves may be numpy or fully addressable jax arrays.
  """
  if not storage.is_gcs(path):
    os.makedirs(path, exist_ok=True)
  target, writes = {}, []
  for key, leaf in tree_lib.flatten(params).items():
    array = np.asarray(leaf)
    if key.rsplit("/", 1)[-1] in _TENSORSTORE_LEAVES and array.ndim >= 2:
      name = "target." + key.replace("/", ".")
      metadata, future = _write_zarr(array, storage.join(path, name))
      writes.append(future)
      target[key] = {"driver": "zarr", "kvstore": {"driver": "file", "path": name}, "metadata": metadata}
    else:
      target[key] = array
  for future in writes:
    future.result()
  state = {"version": VERSION,
           "optimizer": {"target": tree_lib.unflatten(target), "state": {"step": np.asarray(step, np.int32)}}}
  storage.write_bytes(storage.join(path, MSGPACK_NAME), serialization.msgpack_serialize(state))
