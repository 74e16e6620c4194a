"""Queued resources without a human: wait until the slice is ACTIVE, and keep a job going through Spot preemptions.

`queued-wait` polls the request's state until it is ACTIVE (a FAILED request, or more than `--wait_s` seconds,
is an error). `supervise` runs a whole job from the launching machine:

  1. request the slice as a queued resource (unless a request of that id exists: then it is reused, so a
     supervisor that was itself stopped can be started again), and wait until it is ACTIVE;
  2. `setup`, `preflight` and `run` on every worker (of every slice, for multislice);
  3. every `--poll_s` seconds, read the request's state and the job's status on every worker
     (`remote.status_script`): the job is done when every worker exited 0, failed when any worker exited with
     another status than 0 or `exit_status.PREEMPTED` (75; the trainer saved and stopped on SIGTERM);
  4. when the request leaves ACTIVE (SUSPENDING / SUSPENDED: the Spot capacity was reclaimed; FAILED), or the job
     stopped with status 75 while the slice stayed up (a maintenance event), the request is deleted and made
     again (or, for the latter, the job started again in place) and the same command resumes from the last
     checkpoint in `--model_dir`; at most `--max_restarts` times, each one logged with its reason.

When the job is done the request is deleted (`--keep_when_done` keeps it); when it fails, the request is kept so
that its logs can be read (`logs`), and the supervisor exits 1 naming the worker and status. Every line it logs
goes to stderr with a UTC time. Stop the supervisor (Ctrl-C) before a manual `stop`, or it restarts the job.
"""
import dataclasses
import re
import subprocess
import sys
import time
from typing import Callable, Optional, Sequence

from xprompt_jax import exit_status

from . import gcloud, remote
from .executor import RetryPolicy, Step, run_step
from .slices import LaunchError, TpuSlice

ACTIVE = "ACTIVE"
WAITING = ("CREATING", "ACCEPTED", "WAITING_FOR_RESOURCES", "PROVISIONING")
_STATUS = re.compile(rf"{remote.JOB_STATUS} (\S+): (running|absent|exited (\d+))")


@dataclasses.dataclass(frozen=True)
class SuperviseOptions:
  poll_s: float = 60.0  # Seconds between two looks at the request and the job.
  wait_s: float = 24 * 3600.0  # Longest wait for a request to become ACTIVE.
  max_restarts: int = 10  # Resubmissions (or in-place restarts) before giving up.
  keep_when_done: bool = False
  unreachable_polls: int = 15  # Consecutive polls without every worker's status (ssh down, job not started).


@dataclasses.dataclass
class Clock:
  """Time and sleep, replaceable in tests."""
  sleep: Callable[[float], None] = time.sleep
  now: Callable[[], float] = time.time


def log(message: str) -> None:
  print(f"supervise {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC: {message}", file=sys.stderr,
        flush=True)


def query(command: Sequence[str], runner=subprocess.run) -> Optional[str]:
  """The stdout of a read-only gcloud command, or None when it failed."""
  result = runner(list(command), capture_output=True, text=True)
  return result.stdout if result.returncode == 0 else None


def request_state(tpu: TpuSlice, runner=subprocess.run) -> Optional[str]:
  """The queued resource's state, or None when there is no such request (or gcloud could not say)."""
  out = query(gcloud.queued_describe_command(tpu, state_only=True), runner)
  return out.strip() or None if out is not None else None


def wait_active(tpu: TpuSlice, options: SuperviseOptions, runner=subprocess.run, clock: Clock = Clock()) -> None:
  """Returns once the request is ACTIVE; LaunchError when it FAILED, disappeared, or `wait_s` passed."""
  start, last = clock.now(), None
  while True:
    state = request_state(tpu, runner)
    if state == ACTIVE:
      log(f"{tpu.queued_resource} is ACTIVE after {clock.now() - start:.0f} s")
      return
    if state != last:
      log(f"{tpu.queued_resource}: {state or 'no answer'}")
      last = state
    if state not in WAITING and state is not None:
      raise LaunchError(f"queued resource {tpu.queued_resource} is {state}, not waiting for capacity: "
                        "`queued-describe` shows why; `queued-delete` removes it")
    if clock.now() - start > options.wait_s:
      raise LaunchError(f"queued resource {tpu.queued_resource} is still {state} after {options.wait_s:.0f} s "
                        "(--wait_s); it stays queued: `queued-delete` withdraws it")
    clock.sleep(options.poll_s)


def job_status(tpu: TpuSlice, model_dir: str, runner=subprocess.run) -> Optional[dict[str, str]]:
  """{worker hostname: 'running' | 'absent' | 'exited N'} from every worker, or None when not all answered."""
  out = query(gcloud.ssh_command(tpu, remote.status_script(model_dir)), runner)
  if out is None:
    return None
  found = {m.group(1): m.group(2) for m in _STATUS.finditer(out)}
  return found if len(found) >= tpu.hosts * tpu.node_count else None


def verdict(statuses: dict[str, str]) -> str:
  """'done', 'running', 'preempted' (some worker exited 75, none failed) or 'failed: HOST exited N'."""
  codes = {host: int(s.split()[1]) for host, s in statuses.items() if s.startswith("exited")}
  failed = {h: c for h, c in codes.items() if c not in (0, exit_status.PREEMPTED)}
  if failed:
    host, code = sorted(failed.items())[0]
    return f"failed: {host} exited {code}"
  if exit_status.PREEMPTED in codes.values():
    return "preempted"
  if len(codes) == len(statuses):
    return "done"
  return "running"


@dataclasses.dataclass(frozen=True)
class Job:
  """What `supervise` runs: the steps that install and start the job (setup, preflight, run) and its model_dir."""
  start_steps: Callable[[int], list[Step]]  # Attempt number -> steps (the run id changes per attempt).
  model_dir: str
  create: Step  # queued-create, with its cleanup (queued-delete).


def _run_steps(steps: Sequence[Step], policy: RetryPolicy, runner, clock: Clock) -> None:
  for step in steps:
    run_step(step, policy=policy, runner=runner, sleep=clock.sleep)


def _watch(tpu: TpuSlice, job: Job, options: SuperviseOptions, runner, clock: Clock) -> str:
  """Polls until the job is done, failed, or its slice went away: 'done', 'failed: ...', 'lost: STATE',
  'preempted'."""
  unreachable = 0
  while True:
    clock.sleep(options.poll_s)
    state = request_state(tpu, runner)
    if state is not None and state != ACTIVE:
      return f"lost: {state}"
    statuses = job_status(tpu, job.model_dir, runner)
    if statuses is None or all(s == "absent" for s in statuses.values()):
      unreachable += 1
      if unreachable >= options.unreachable_polls:
        if state is None:
          return "lost: no answer"
        raise LaunchError(f"no job status from every worker of {tpu.queued_resource} for {unreachable} polls "
                          f"({unreachable * options.poll_s:.0f} s) while it is ACTIVE; look with `logs`")
      continue
    unreachable = 0
    result = verdict(statuses)
    if result != "running":
      return result


def supervise(tpu: TpuSlice, job: Job, options: SuperviseOptions = SuperviseOptions(),
              policy: RetryPolicy = RetryPolicy(), runner=subprocess.run, clock: Clock = Clock()) -> None:
  """See the module docstring."""
  restarts, reason, state = 0, "", request_state(tpu, runner)
  recreate = state is None
  if state is not None and state != ACTIVE and state not in WAITING:
    log(f"{tpu.queued_resource} exists but is {state}: deleting it to request it again")
    run_step(Step(tuple(gcloud.queued_delete_command(tpu))), policy=policy, runner=runner, sleep=clock.sleep)
    recreate = True
  while True:
    if recreate:
      log(f"requesting {tpu.queued_resource} ({tpu.node_count} x {tpu.accelerator_type})"
          + (f" again: {reason}; restart {restarts} of {options.max_restarts}" if restarts else ""))
      run_step(job.create, policy=policy, runner=runner, sleep=clock.sleep)
    else:
      log(f"{tpu.queued_resource} exists; using it" if not restarts else
          f"starting the job again in place: {reason}; restart {restarts} of {options.max_restarts}")
    wait_active(tpu, options, runner, clock)
    _run_steps(job.start_steps(restarts), policy, runner, clock)
    log(f"job started on every worker; model_dir {job.model_dir}; polling every {options.poll_s:g} s")
    result = _watch(tpu, job, options, runner, clock)
    if result == "done":
      log("every worker exited 0: the job is done")
      if not options.keep_when_done:
        run_step(Step(tuple(gcloud.queued_delete_command(tpu))), policy=policy, runner=runner, sleep=clock.sleep)
        log(f"deleted {tpu.queued_resource}")
      return
    if result.startswith("failed"):
      raise LaunchError(f"the job {result[len('failed: '):]} (not a preemption); {tpu.queued_resource} is kept so "
                        f"that `logs` can show why (logs also in {job.model_dir}/logs); `queued-delete` removes it")
    restarts += 1
    lost = result.startswith("lost")
    reason = (f"the request went {result[len('lost: '):]} (preempted)" if lost else
              "the job stopped on SIGTERM (status 75) while the slice stayed ACTIVE")
    log(reason)
    if restarts > options.max_restarts:
      if lost:
        run_step(Step(tuple(gcloud.queued_delete_command(tpu))), policy=policy, runner=runner, sleep=clock.sleep)
      raise LaunchError(f"{reason}; giving up after {options.max_restarts} restarts (--max_restarts); the "
                        f"checkpoints in {job.model_dir} remain, and `supervise` again resumes from them")
    if lost:
      run_step(Step(tuple(gcloud.queued_delete_command(tpu))), policy=policy, runner=runner, sleep=clock.sleep)
    recreate = lost
