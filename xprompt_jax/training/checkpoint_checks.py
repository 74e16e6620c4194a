"""The errors of train checkpoints and the checks a checkpoint goes through, apart from the checkpointer itself
(training/checkpointing.py re-exports what callers use): non-finite leaves, the frozen model's fingerprint,
the stored tree against the state it is restored into, the ranking value of a `best_metric`, and the one-writer
lock on a model_dir."""
import dataclasses
import datetime
import fcntl
import logging
import math
import os
import socket
from typing import Any, Mapping, Optional

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np


class CheckpointingError(Exception):
  """Base class of the errors raised by this module."""


class ModelDirError(CheckpointingError):
  """The model_dir (or its checkpoints folder) cannot be created or written."""


class CheckpointLockedError(CheckpointingError):
  """Another process holds the model_dir lock."""


class FrozenModelMismatchError(CheckpointingError):
  """The checkpoint was trained against a different frozen base model."""


class NonFiniteStateError(CheckpointingError, ValueError):
  """The state to save holds NaN or Inf values."""


class StateMismatchError(CheckpointingError, ValueError):
  """The abstract state given to `restore` differs from the saved tree (leaf paths or shapes)."""


class UnreadableCheckpointError(CheckpointingError, ValueError):
  """A checkpoint whose files cannot be read back (truncated or corrupt); the message names the step and folder."""


def unreadable(where: str, error: Exception, hint: str = "") -> UnreadableCheckpointError:
  """tensorstore/orbax's error on truncated or corrupt files, shortened to its first line, naming `where`."""
  first_line = (str(error).splitlines() or [type(error).__name__])[0][:400]
  return UnreadableCheckpointError(f"{where} is unreadable (truncated or corrupt files{'; ' + hint if hint else ''})"
                                   f": {first_line}")


def _leaf_name(path) -> str:
  """'opt_state.0.v.prompt': the dotted key path orbax uses for the same leaf in its metadata."""
  return jax.tree_util.keystr(path, simple=True, separator=".")


@jax.jit
def _all_finite(leaves: list) -> jax.Array:
  return jnp.stack([jnp.isfinite(x).all() for x in leaves])


def nonfinite_leaves(tree: Any) -> list[str]:
  """Dotted paths of the floating-point leaves of `tree` holding a NaN or Inf (works on sharded arrays)."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  names, leaves = [], []
  for path, leaf in flat:
    dtype = getattr(leaf, "dtype", None)
    if dtype is None:
      dtype = np.asarray(leaf).dtype
    if jnp.issubdtype(dtype, jnp.inexact):
      names.append(_leaf_name(path))
      leaves.append(leaf)
  if not leaves:
    return []
  flags = _all_finite(leaves)
  if not flags.is_fully_addressable:
    flags = multihost_utils.process_allgather(flags, tiled=True)
  return [n for n, ok in zip(names, np.asarray(flags)) if not ok]


def check_frozen(saved: Optional[Mapping[str, Any]], path: Optional[str], fingerprint: Optional[str], *,
                 checkpoint: str = "the checkpoint", allow_mismatch: bool = False) -> bool:
  """Whether `saved` ({"path", "fingerprint"} from a checkpoint's metadata) matches the given base model.

  Returns True when both fingerprints are known and equal, False when either is unknown (nothing to compare; a
  warning is logged when only one is known) or they differ with `allow_mismatch`. Raises
  `FrozenModelMismatchError` naming both paths
  and both fingerprints when they differ. Paths alone never decide: a copy of the same checkpoint elsewhere
  (another disk or bucket) has the same fingerprint and is accepted.
  """
  saved_fp = (saved or {}).get("fingerprint")
  if not saved_fp and not fingerprint:
    return False
  if not saved_fp or not fingerprint:
    logging.warning("%s: cannot verify the frozen base model (recorded fingerprint %s, current fingerprint %s)",
                    checkpoint, saved_fp, fingerprint)
    return False
  if saved_fp == fingerprint:
    return True
  message = (f"{checkpoint} was trained against the frozen model at {saved.get('path')} "
             f"(fingerprint {saved_fp}), but the frozen model now given is {path} (fingerprint {fingerprint})")
  if allow_mismatch:
    logging.warning("%s; continuing because allow_frozen_mismatch=True", message)
    return False
  raise FrozenModelMismatchError(message + "; pass allow_frozen_mismatch=True to restore it anyway")


def _json_metrics(metrics: Optional[Mapping[str, Any]]) -> Optional[dict]:
  if metrics is None:
    return None
  if not isinstance(metrics, Mapping):
    raise TypeError(f"metrics must be a mapping of metric name to number, got {type(metrics).__name__}")
  out = {}
  for name, value in metrics.items():
    try:
      out[str(name)] = float(np.asarray(value))
    except (TypeError, ValueError) as e:
      raise TypeError(f"metric {name!r} is not a number: {value!r}") from e
  return out


def _signed_metric(metrics: Optional[Mapping[str, Any]], name: str, mode: str) -> float:
  """The ranking value of a checkpoint (larger is better); a missing or NaN metric ranks last. A checkpoint saved
  when the metric had its old name (before the T5 names, `metrics.RENAMED_KEYS`) is ranked by that."""
  value = (metrics or {}).get(name)
  if value is None and metrics:
    from xprompt_jax.evaluation.metrics import former_keys
    value = next((metrics[old] for old in former_keys(name) if old in metrics), None)
  if value is None or math.isnan(value):
    return -math.inf
  return value if mode == "max" else -value


def _shape_dtype(leaf: Any) -> jax.ShapeDtypeStruct:
  if isinstance(leaf, jax.ShapeDtypeStruct):
    return leaf
  if isinstance(leaf, jax.Array):
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
  array = np.asarray(leaf)
  return jax.ShapeDtypeStruct(array.shape, array.dtype)


def restore_target(abstract_state: Any, shardings: Any = None) -> Any:
  """`abstract_state` as `jax.ShapeDtypeStruct`s carrying `shardings` (a matching tree, or one Sharding for all).

  Leaves may be ShapeDtypeStructs, arrays (their sharding is kept unless overridden) or numpy values.
  """
  target = jax.tree.map(_shape_dtype, abstract_state)
  if shardings is None:
    return target
  if isinstance(shardings, jax.sharding.Sharding):
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=shardings), target)
  try:
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), target, shardings)
  except ValueError as e:
    raise StateMismatchError(f"shardings do not have the tree structure of abstract_state: {e}") from e


def _stored_shape(target: jax.ShapeDtypeStruct) -> tuple:
  """The shape orbax stores for a leaf: a typed PRNG key is stored as its uint32 key data."""
  if jnp.issubdtype(target.dtype, jax.dtypes.prng_key):
    return tuple(jax.eval_shape(jax.random.key_data, target).shape)
  return tuple(target.shape)


def compare_trees(stored: Mapping[str, tuple], target: Any, checkpoint: str) -> None:
  """Raises `StateMismatchError` naming every leaf missing, unexpected or shaped differently."""
  flat, _ = jax.tree_util.tree_flatten_with_path(target)
  wanted = {_leaf_name(p): _stored_shape(leaf) for p, leaf in flat}
  problems = []
  missing = sorted(set(wanted) - set(stored))
  unexpected = sorted(set(stored) - set(wanted))
  if missing:
    problems.append(f"leaves the abstract state has but {checkpoint} lacks: {missing}")
  if unexpected:
    problems.append(f"leaves {checkpoint} has but the abstract state lacks: {unexpected}")
  for name in sorted(set(wanted) & set(stored)):
    if tuple(stored[name]) != wanted[name]:
      problems.append(f"leaf {name}: saved shape {tuple(stored[name])}, abstract state shape {wanted[name]}")
  if problems:
    raise StateMismatchError(f"the abstract state does not match {checkpoint}:\n  " + "\n  ".join(problems))


@dataclasses.dataclass
class _Lock:
  """An exclusive `flock` on a file, with the holder's pid/host/start time written in it."""
  path: str
  handle: Any = None

  def acquire(self) -> None:
    try:
      handle = open(self.path, "a+", encoding="utf-8")
    except OSError as e:
      raise ModelDirError(f"cannot create the lock file {self.path}: model_dir is not writable ({e})") from e
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      handle.seek(0)
      holder = handle.read().strip() or "an unknown process"
      handle.close()
      raise CheckpointLockedError(
          f"{os.path.dirname(self.path)} is in use by another training run ({holder}; lock file {self.path}). "
          "Two runs writing one model_dir would corrupt each other: stop that run or choose another model_dir."
      ) from None
    handle.seek(0)
    handle.truncate()
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    handle.write(f"pid {os.getpid()} on host {socket.gethostname()}, started {started}\n")
    handle.flush()
    self.handle = handle

  def release(self) -> None:
    if self.handle is not None:
      fcntl.flock(self.handle, fcntl.LOCK_UN)
      self.handle.close()
      self.handle = None


def _prepare_local_dir(folder: str) -> None:
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as e:
    raise ModelDirError(f"cannot create the checkpoint folder {folder}: {e}") from e
  if not os.access(folder, os.W_OK | os.X_OK):
    raise ModelDirError(f"the checkpoint folder {folder} is not writable by this user")


def leaf_checksums(tree: Any) -> dict[str, Optional[str]]:
  """{dotted leaf path: sha256 of its dtype, shape and bytes} of a state tree, recorded with each checkpoint and
  compared on restore (`verify_checksums`). A leaf this process cannot read whole (sharded over several hosts) has
  None: it is not checked."""
  import hashlib
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      out[_leaf_name(path)] = None
      continue
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      leaf = jax.random.key_data(leaf)  # Typed PRNG keys: their integer words.
    value = np.ascontiguousarray(np.asarray(jax.device_get(leaf)))
    digest = hashlib.sha256(f"{value.dtype.str}{value.shape}".encode())
    digest.update(value.tobytes())
    out[_leaf_name(path)] = digest.hexdigest()
  return out


def verify_checksums(tree: Any, recorded: Optional[Mapping[str, Optional[str]]], where: str) -> None:
  """Raises ValueError naming the first leaf of a restored `tree` whose checksum differs from the one recorded at
  save time, or that holds a NaN/Inf (checkpoints are never saved so); `recorded` None (a checkpoint from before
  checksums were recorded) checks finiteness only."""
  bad = nonfinite_leaves(tree)
  if bad:
    raise ValueError(f"{where}: the restored leaves {bad[:3]} hold NaN/Inf, which no checkpoint is saved with: the "
                     "files were changed or damaged")
  if not recorded:
    return
  actual = leaf_checksums(tree)
  for name, digest in recorded.items():
    if digest is None or name not in actual or actual[name] is None:
      continue
    if actual[name] != digest:
      raise ValueError(f"{where}: leaf {name} does not match the checksum recorded when it was saved: the files were "
                       "changed or damaged")
