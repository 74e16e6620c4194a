"""Checkpoints of the *trainable* training state with Orbax: never the frozen model.

`TrainCheckpointer(model_dir, ...)` wraps `orbax.checkpoint.CheckpointManager` over `<model_dir>/checkpoints/`.
Each step folder holds two orbax items:

  * `state/` (StandardCheckpointHandler): the trainer's pytree `{"step", "trainable", "opt_state", "aux", "rng"}`
    -- only these keys are accepted, so the frozen model can never end up in a training checkpoint.
  * `meta/` (JsonCheckpointHandler): `step`, `data_position` (batches consumed, for a deterministic resume),
    `frozen` = {"path", "fingerprint"} of the base model, `metrics` of that step, when and where it was saved, and
    the caller's `extra_meta` (the method name and its gin config string).

Guarantees, each tested in tests/test_checkpointing.py:

  * Atomicity (orbax 0.12): a step is written into `<step>.orbax-checkpoint-tmp*` and renamed to `<step>` only
    when complete (local disks; on GCS a `commit_success.txt` marks completion instead), and both `latest_step`
    and `all_steps` list only finished steps. Half-written folders left by a crash are deleted when a checkpointer
    is next opened (`cleanup_tmp_directories`).
  * Non-finite guard: `save` raises `NonFiniteStateError` naming every leaf holding a NaN/Inf; nothing is written.
  * Frozen-model integrity: `restore` raises `FrozenModelMismatchError` (both paths, both fingerprints) when the
    checkpoint was made against a base model whose fingerprint differs from this checkpointer's, unless
    `allow_frozen_mismatch=True`.
  * One writer per model_dir: process 0 holds an exclusive `fcntl.flock` on `<model_dir>/.lock` (pid, host and
    start time written in it) while the checkpointer is open; a second one raises `CheckpointLockedError` naming
    the holder. The kernel drops the lock when its process dies, even by `kill -9`, so a stale file never blocks.
    flock needs a local (or NFS) path: on gs:// the lock is not taken and a warning says so. A `read_only`
    checkpointer (evaluating or exporting while training runs) takes no lock and can neither save nor delete.

Retention: with `best_metric` the `keep` best checkpoints by that metric are kept plus always the latest (for
resume); without, the `keep` latest. `keep_period=N` additionally keeps every step divisible by N. `keep=None`
keeps everything.
"""
import datetime
import json
import logging
import os
import socket
from typing import Any, Mapping, Optional

from etils import epath
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

from xprompt_jax.training.checkpoint_checks import (
    CheckpointingError, CheckpointLockedError, FrozenModelMismatchError, ModelDirError, NonFiniteStateError,
    StateMismatchError, UnreadableCheckpointError, _Lock, _json_metrics, _prepare_local_dir, _signed_metric,
    check_frozen, compare_trees, leaf_checksums, nonfinite_leaves, restore_target, unreadable, verify_checksums)
from xprompt_jax.training.fingerprint import fingerprint_checkpoint

__all__ = [
    "CheckpointingError", "CheckpointLockedError", "FrozenModelMismatchError", "ModelDirError",
    "NonFiniteStateError", "StateMismatchError", "TrainCheckpointer", "check_frozen", "fingerprint_checkpoint",
    "nonfinite_leaves", "restore_target", "compare_trees", "unreadable", "UnreadableCheckpointError", "STATE_KEYS",
]

CHECKPOINTS_SUBDIR = "checkpoints"
LOCK_NAME = ".lock"
STATE_ITEM = "state"
META_ITEM = "meta"
META_FORMAT = "xprompt_jax.train_checkpoint.v1"
STATE_KEYS = ("step", "trainable", "opt_state", "aux", "rng")
_REQUIRED_STATE_KEYS = ("step", "trainable")
_RESERVED_META_KEYS = ("format", "step", "data_position", "frozen", "metrics", "saved_at", "host", "process_count",
                       "checksums")


class TrainCheckpointer:
  """Saves and restores the trainable training state under `<model_dir>/checkpoints/` (see the module docstring).

  Args:
    model_dir: the run's folder (local or gs://).
    keep: how many checkpoints to keep (the best ones with `best_metric`, else the latest); None keeps all.
    keep_period: also keep every checkpoint whose step is a multiple of this.
    best_metric: name of the metric (in `save(metrics=...)`) ranking checkpoints; `best_mode` "max" or "min".
    async_save: write in a background thread (`save` returns after the device-to-host copy; `wait()` blocks).
    frozen_path, frozen_fingerprint: the base model this run trains against. The fingerprint is computed from
      `frozen_path` (on process 0, then broadcast) when only the path is given.
    read_only: open existing checkpoints for restoring only (no lock, no saving, no deletion, no cleanup).
  """

  def __init__(self, model_dir: str, *, keep: Optional[int] = 3, keep_period: Optional[int] = None,
               best_metric: Optional[str] = None, best_mode: str = "max", async_save: bool = True,
               frozen_path: Optional[str] = None, frozen_fingerprint: Optional[str] = None, read_only: bool = False):
    if keep is not None and keep < 1:
      raise ValueError(f"keep must be >= 1 or None (keep everything), got {keep}")
    if keep_period is not None and keep_period < 1:
      raise ValueError(f"keep_period must be >= 1 or None, got {keep_period}")
    if best_mode not in ("max", "min"):
      raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
    self.model_dir = str(model_dir)
    self.directory = _join(self.model_dir, CHECKPOINTS_SUBDIR)
    self.best_metric = best_metric
    self.best_mode = best_mode
    self.frozen_path = str(frozen_path) if frozen_path is not None else None
    if frozen_fingerprint is None and frozen_path is not None:
      frozen_fingerprint = _fingerprint_on_primary(self.frozen_path)
    self.frozen_fingerprint = frozen_fingerprint
    self.read_only = read_only
    self._lock = None
    self._manager = None
    if read_only:
      if not _absolute(self.directory).is_dir():
        raise FileNotFoundError(f"no checkpoint folder {self.directory} to open read-only")
      options = ocp.CheckpointManagerOptions(
          preservation_policy=ocm.LatestN(n=None), read_only=True, create=False,
          best_fn=self._rank if best_metric is not None else None, best_mode="max")
    else:
      options = self._options(keep, keep_period, async_save)
      if jax.process_index() == 0:
        self._take_lock()
    try:
      self._manager = ocp.CheckpointManager(
          _absolute(self.directory),
          item_handlers={STATE_ITEM: ocp.StandardCheckpointHandler(), META_ITEM: ocp.JsonCheckpointHandler()},
          options=options)
    except BaseException:
      self._release_lock()
      raise

  # --- construction helpers -------------------------------------------------------------------------------
  def _take_lock(self) -> None:
    if _is_remote(self.model_dir):
      logging.warning("%s is not a local path: the one-run-per-model_dir lock cannot be taken there (flock); "
                      "make sure no other run writes to it", self.model_dir)
      return
    _prepare_local_dir(self.directory)
    lock = _Lock(os.path.join(self.model_dir, LOCK_NAME))
    lock.acquire()
    self._lock = lock

  def _release_lock(self) -> None:
    if self._lock is not None:
      self._lock.release()
      self._lock = None

  def _options(self, keep, keep_period, async_save) -> ocp.CheckpointManagerOptions:
    if keep is None:
      policies = [ocm.LatestN(n=None)]
    elif self.best_metric is None:
      policies = [ocm.LatestN(n=keep)]
    else:
      policies = [ocm.LatestN(n=1),
                  ocm.BestN(get_metric_fn=self._rank, n=keep, keep_checkpoints_without_metrics=False)]
    if keep_period is not None:
      policies.append(ocm.EveryNSteps(interval_steps=keep_period))
    # orbax writes metrics (and ranks by them) only when it has a best_fn; `_rank` is "larger is better".
    return ocp.CheckpointManagerOptions(
        preservation_policy=ocm.AnyPreservationPolicy(policies),
        best_fn=self._rank if self.best_metric is not None else None, best_mode="max",
        keep_checkpoints_without_metrics=False,
        enable_async_checkpointing=async_save, cleanup_tmp_directories=True, create=True)

  def _rank(self, metrics) -> float:
    return _signed_metric(metrics, self.best_metric, self.best_mode)

  # --- queries ----------------------------------------------------------------------------------------------
  def all_steps(self) -> list[int]:
    """The finished checkpoint steps, ascending (folders still being written are never listed)."""
    return sorted(self._open_manager().all_steps())

  def checkpoint_dir(self, step: int) -> str:
    """The folder of checkpoint `step` (orbax names it by the step number)."""
    return _join(self.directory, str(int(step)))

  def latest_step(self) -> Optional[int]:
    """The newest finished step (what a resume restores), or None when there is none."""
    return self._open_manager().latest_step()

  def best_step(self) -> Optional[int]:
    """The step with the best `best_metric`; None without `best_metric` or when no checkpoint has metrics."""
    if self.best_metric is None:
      return None
    return self._open_manager().best_step()

  # --- save -------------------------------------------------------------------------------------------------
  def save(self, step: int, state: Mapping[str, Any], *, data_position: int,
           metrics: Optional[Mapping[str, Any]] = None, extra_meta: Optional[Mapping[str, Any]] = None,
           force: bool = False) -> bool:
    """Saves `state` as checkpoint `step`; True when written (asynchronously with `async_save`).

    `state` must be the trainer's dict with keys among STATE_KEYS ("step" and "trainable" required) and
    `state["step"] == step`. Saving a step that already has a checkpoint returns False, unless `force`, which
    replaces it (the old folder is deleted first: a crash in between loses that step, not earlier ones).
    Raises NonFiniteStateError (leaf paths) before anything is written when a float leaf is NaN/Inf.
    """
    manager = self._open_manager()
    if self.read_only:
      raise CheckpointingError(f"the checkpointer of {self.directory} is read-only: it cannot save")
    step = int(step)
    self._check_state_keys(state)
    if int(np.asarray(jax.device_get(state["step"]))) != step:
      raise ValueError(f"save(step={step}) but state['step'] is {int(np.asarray(jax.device_get(state['step'])))}: "
                       "the checkpoint step must be the state's step so a resume continues where it stopped")
    latest = manager.latest_step()
    if latest is not None and step < latest:
      later = [s for s in manager.all_steps() if s > step]
      raise ValueError(f"cannot save step {step} in {self.directory}: it already holds later steps {later}, and "
                       "a resume would pick those. Use a fresh model_dir to branch from an older checkpoint.")
    if step in manager.all_steps():
      if not force:
        logging.info("checkpoint %d already exists in %s; not saved again", step, self.directory)
        return False
      manager.wait_until_finished()
      manager.delete(step)
    bad = nonfinite_leaves(state)
    if bad:
      raise NonFiniteStateError(f"refusing to save step {step}: NaN/Inf in state leaves {bad}")
    metrics = _json_metrics(metrics)
    if self.best_metric is not None and metrics is not None and self.best_metric not in metrics:
      raise KeyError(f"metrics of step {step} lack best_metric {self.best_metric!r}; "
                     f"they have {sorted(metrics)}")
    meta = self._meta(step, data_position, metrics, extra_meta)
    meta["checksums"] = leaf_checksums(dict(state))  # Verified on restore: damaged files are not used silently.
    return bool(manager.save(
        step, args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardSave(dict(state)),
                                         META_ITEM: ocp.args.JsonSave(meta)}),
        metrics=metrics, force=True))

  @staticmethod
  def _check_state_keys(state: Mapping[str, Any]) -> None:
    if not isinstance(state, Mapping):
      raise TypeError(f"state must be a dict with keys {STATE_KEYS}, got {type(state).__name__}")
    unknown = sorted(set(state) - set(STATE_KEYS))
    if unknown:
      raise ValueError(f"state has keys {unknown} besides {STATE_KEYS}: training checkpoints hold only the "
                       "trainable state (the frozen model is never saved)")
    missing = [k for k in _REQUIRED_STATE_KEYS if k not in state]
    if missing:
      raise ValueError(f"state lacks the keys {missing} (expected {STATE_KEYS})")

  def _meta(self, step, data_position, metrics, extra_meta) -> dict:
    data_position = int(data_position)
    if data_position < 0:
      raise ValueError(f"data_position must be >= 0 (batches consumed), got {data_position}")
    extra = dict(extra_meta or {})
    clash = sorted(set(extra) & set(_RESERVED_META_KEYS))
    if clash:
      raise ValueError(f"extra_meta may not set the reserved keys {clash}")
    meta = {
        "format": META_FORMAT,
        "step": step,
        "data_position": data_position,
        "frozen": {"path": self.frozen_path, "fingerprint": self.frozen_fingerprint},
        "metrics": metrics,
        "saved_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "process_count": jax.process_count(),
        **extra,
    }
    try:
      json.dumps(meta)
    except (TypeError, ValueError) as e:
      raise TypeError(f"extra_meta must be JSON-serialisable: {e}") from e
    return meta

  # --- restore ----------------------------------------------------------------------------------------------
  def _resolve_step(self, step: Optional[int]) -> int:
    manager = self._open_manager()
    available = sorted(manager.all_steps())
    if step is None:
      if not available:
        raise FileNotFoundError(f"no finished checkpoint in {self.directory}")
      return available[-1]
    if int(step) not in available:
      raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory}; available steps: {available}")
    return int(step)

  def read_meta(self, step: Optional[int] = None) -> dict:
    """The json metadata of `step` (default: the latest), without reading the state."""
    step = self._resolve_step(step)
    return self._open_manager().restore(step, args=ocp.args.Composite(**{META_ITEM: ocp.args.JsonRestore()}))[
        META_ITEM]

  def stored_shapes(self, step: Optional[int] = None) -> dict[str, tuple]:
    """{dotted leaf path: shape} of the saved state of `step` (default: the latest), from orbax metadata."""
    step = self._resolve_step(step)
    metadata = self._open_manager().item_metadata(step)[STATE_ITEM]
    tree = getattr(metadata, "tree", metadata)
    leaves = jax.tree.leaves(tree, is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "name"))
    return {leaf.name: tuple(leaf.shape) for leaf in leaves}

  def check_frozen(self, path: Optional[str] = None, fingerprint: Optional[str] = None,
                   step: Optional[int] = None, *, allow_mismatch: bool = False) -> bool:
    """`check_frozen` of step `step` (default: latest) against `path`/`fingerprint` (default: this run's)."""
    step = self._resolve_step(step)
    path = self.frozen_path if path is None else path
    fingerprint = self.frozen_fingerprint if fingerprint is None else fingerprint
    return check_frozen(self.read_meta(step).get("frozen"), path, fingerprint,
                        checkpoint=f"checkpoint {step} in {self.directory}", allow_mismatch=allow_mismatch)

  def restore(self, step: Optional[int] = None, abstract_state: Any = None, shardings: Any = None, *,
              allow_frozen_mismatch: bool = False, unreadable_hint: str = "") -> tuple[Any, dict]:
    """(state, meta) of `step` (default: the latest finished one).

    `abstract_state`: the state's tree (ShapeDtypeStructs or arrays, e.g. `jax.eval_shape` of the initial state);
    it is checked leaf by leaf against the saved tree and gives the restored tree its types (optax namedtuples).
    Without it the saved tree comes back as nested dicts/lists. `shardings` (a matching tree of Shardings, or one
    Sharding for every leaf) or shardings already on the abstract leaves make every leaf restore straight into
    its sharding, so each host reads only its own shards. Truncated or corrupt files (and restored values that differ
    from the checksums recorded at save time, or hold NaN/Inf) raise
    `UnreadableCheckpointError` naming the step and model_dir, followed by `unreadable_hint` (what to do instead).
    """
    step = self._resolve_step(step)
    where = f"checkpoint {step} in {self.directory}"
    if abstract_state is None and shardings is not None:
      raise ValueError("restore(shardings=...) needs abstract_state (the tree the shardings belong to)")
    try:
      meta = self.read_meta(step)
      check_frozen(meta.get("frozen"), self.frozen_path, self.frozen_fingerprint, checkpoint=where,
                   allow_mismatch=allow_frozen_mismatch)
      target = None if abstract_state is None else restore_target(abstract_state, shardings)
      if target is not None:
        compare_trees(self.stored_shapes(step), target, where)
      restored = self._open_manager().restore(
          step, args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardRestore(target)}))
      verify_checksums(restored[STATE_ITEM], meta.get("checksums"), where)
    except CheckpointingError:  # Another base model, another tree: already clear.
      raise
    except (ValueError, OSError) as e:  # tensorstore / orbax / json on truncated or corrupt files.
      raise unreadable(f"checkpoint {step} in {self.model_dir}", e, unreadable_hint) from e
    return restored[STATE_ITEM], meta

  # --- lifecycle --------------------------------------------------------------------------------------------
  def _open_manager(self) -> ocp.CheckpointManager:
    if self._manager is None:
      raise CheckpointingError(f"the checkpointer of {self.directory} is closed")
    return self._manager

  def wait(self) -> None:
    """Blocks until an asynchronous save has finished (and re-raises its error, if it failed)."""
    self._open_manager().wait_until_finished()

  def close(self) -> None:
    """Finishes pending saves, then releases the model_dir lock. Safe to call twice."""
    try:
      if self._manager is not None:
        self._manager.close()
    finally:
      self._manager = None
      self._release_lock()

  def __enter__(self) -> "TrainCheckpointer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _is_remote(path: str) -> bool:
  return "://" in str(path)


def _join(base: str, name: str) -> str:
  return f"{base.rstrip('/')}/{name}" if _is_remote(base) else os.path.join(base, name)


def _absolute(path: str) -> epath.Path:
  return epath.Path(path if _is_remote(path) else os.path.abspath(path))


def _fingerprint_on_primary(path: str) -> str:
  """The fingerprint computed once (process 0) and shared, so hosts do not all re-read the frozen model."""
  if jax.process_count() == 1:
    return fingerprint_checkpoint(path)
  digest = np.zeros(64, np.uint8)
  if jax.process_index() == 0:
    digest = np.frombuffer(fingerprint_checkpoint(path).split(":", 1)[1].encode(), np.uint8).copy()
  digest = multihost_utils.broadcast_one_to_all(digest)
  return "sha256:" + bytes(np.asarray(digest)).decode()
