"""Runs a table's jobs, each in its own folder under the results dir through the stage runner, and reads them back.

A finished job (its `result.json`) is read, never rerun; an unfinished one resumes from its own checkpoints. So
a table is resumable after preemption at the granularity of one run, and several pod jobs can share one results
dir: each runs the jobs its `--runs` patterns select (folders are disjoint), and the table command gathers
whatever is finished. A job whose inputs (`Job.needs`) are not finished waits (it is listed, not run). A job that
fails is reported in one line and the others go on; the command then exits with status 1.
"""
import fnmatch
from typing import Any, Callable, Optional, Sequence

from xprompt_jax.checkpoints import storage
from xprompt_jax.tables import base
from xprompt_jax.training import stages

KINDS = ("train", "ensemble", "lm_adapt", "xprompt", "mpt_teacher", "mpt_source", "mpt_target")
# Kinds whose pipelines (XPrompt, MPT, pretraining) write their own files with local file I/O: a gs:// results dir is
# refused up front (a gcsfuse-mounted bucket works); train and ensemble runs read and write gs:// directly.
LOCAL_FILE_KINDS = ("lm_adapt", "xprompt", "mpt_teacher", "mpt_source", "mpt_target")
Execute = Callable[[base.Job, str], Any]  # (job, its folder) -> record


def select(jobs: Sequence[base.Job], patterns: Optional[Sequence[str]]) -> list[base.Job]:
  """The jobs whose folder matches one of the glob `patterns` (all for none); a pattern matching no job is an
  error naming some of the folders."""
  if not patterns:
    return list(jobs)
  chosen = [j for j in jobs if any(fnmatch.fnmatchcase(j.folder, p) for p in patterns)]
  for p in patterns:
    if not any(fnmatch.fnmatchcase(j.folder, p) for j in jobs):
      examples = ", ".join(j.folder for j in jobs[:6])
      raise ValueError(f"--runs pattern {p!r} matches no run of this table; its runs are folders such as {examples} "
                       f"({len(jobs)} in all; `--list` prints them)")
  return chosen


def read_records(results_dir: str, jobs: Sequence[base.Job]) -> dict[str, Any]:
  """{folder: record} of every finished job."""
  out = {}
  for job in jobs:
    record = stages.read_result(storage.join(results_dir, job.folder))
    if record is not None:
      out[job.folder] = record
  return out


def run_jobs(results_dir: str, jobs: Sequence[base.Job], selected: Sequence[base.Job], execute: Execute,
             records: Optional[dict[str, Any]] = None) -> tuple[dict[str, Any], list[str], list[str]]:
  """Runs every unfinished selected job (in table order, after the jobs it needs) -> (records of all finished jobs,
  failures as "folder: message", waiting jobs as "folder (needs ...)"). `stages.Preempted` propagates: the pod
  job stops, its run is saved, and the same command resumes it."""
  for job in jobs:
    if job.kind not in KINDS:
      raise ValueError(f"table job {job.folder}: unknown kind {job.kind!r}; known: {', '.join(KINDS)}")
  records = dict(read_records(results_dir, jobs) if records is None else records)
  failures, waiting = [], []
  for job in selected:
    if job.folder in records:
      continue
    missing = [n for n in job.needs if n not in records]
    if missing:
      waiting.append(f"{job.folder} (needs {', '.join(missing)})")
      print(f"table: {job.folder} waits for {', '.join(missing)}")
      continue
    run_dir = storage.join(results_dir, job.folder)
    try:
      records[job.folder] = stages.run(run_dir, lambda: execute(job, run_dir),
                                       label=f"table: {job.folder} ({job.kind})")
    except stages.Preempted:
      raise
    except Exception as e:  # pylint: disable=broad-except  (one failed run must not stop the other runs)
      message = f"{type(e).__name__}: {e}".splitlines()[0][:400]
      failures.append(f"{job.folder}: {message}")
      print(f"table: {job.folder} FAILED: {message}")
  return records, failures, waiting
