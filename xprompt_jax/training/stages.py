"""The one stage runner of every multi-run pipeline: a stage is a folder, done when its result record exists.

    record = stages.run(stage_dir, lambda: {"metric": train_and_evaluate(stage_dir)})

A stage runs at most once to completion. `run` returns the stage's `result.json` when the folder has one (a finished
stage is never redone); otherwise it calls the stage function, which trains (resuming from the folder's own
checkpoints when an earlier attempt was interrupted) and returns a json-able record, and writes that record
atomically (a stage stopped while saving is rerun, not read half-written). A stage whose training was preempted
raises `Preempted` (`check_preempted`), which leaves no record, so rerunning the same command resumes it. XPrompt's
stages (`pipelines.xprompt`), MPT's (`pipelines.mpt`), the method comparison's runs (`pipelines.compare`) and the
paper tables' runs (`xprompt_jax.tables`) all go through here. Folders may be local or `gs://`.
"""
import json
import os
from typing import Any, Callable, Mapping, Optional

from xprompt_jax import jsonl_io
from xprompt_jax.checkpoints import storage

RESULT = "result.json"


class Preempted(RuntimeError):
  """A stage's training was preempted (SIGTERM) and saved its checkpoint; rerunning the same command resumes it."""


def result_path(stage_dir: str) -> str:
  return storage.join(stage_dir, RESULT)


def read_result(stage_dir: str) -> Optional[Any]:
  """The stage's record, or None while it is not finished."""
  path = result_path(stage_dir)
  if storage.is_gcs(path):
    return json.loads(storage.read_bytes(path)) if storage.is_file(path) else None
  return jsonl_io.read_json_if_exists(path)


def write_result(stage_dir: str, record: Any) -> Any:
  """Marks the stage finished with `record` (atomic: the record is either absent or complete)."""
  path = result_path(stage_dir)
  if storage.is_gcs(path):
    storage.write_bytes(path, json.dumps(record, indent=1, sort_keys=True).encode())  # One object write: atomic.
  else:
    jsonl_io.write_json_atomic(path, record)
  return record


def is_done(stage_dir: str) -> bool:
  return read_result(stage_dir) is not None


def run(stage_dir: str, fn: Callable[[], Any], *, label: Optional[str] = None) -> Any:
  """The finished stage's record; else `fn()` (the stage's work, resuming its own checkpoints), recorded."""
  done = read_result(stage_dir)
  if done is not None:
    return done
  if label:
    print(label, flush=True)
  if not storage.is_gcs(stage_dir):
    os.makedirs(stage_dir, exist_ok=True)
  return write_result(stage_dir, fn())


def check_preempted(train_result: Mapping[str, Any], where: str) -> Mapping[str, Any]:
  """`training.loop.train`'s result, or `Preempted` naming the stage and step when its run was preempted."""
  if train_result.get("preempted"):
    raise Preempted(f"preempted in {where} at step {train_result.get('step')}; its checkpoint is saved: rerun the "
                    "same command to resume")
  return train_result
