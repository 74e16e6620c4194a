"""Queued resources without a human: wait until the slice is ACTIVE, and keep a job going through Spot preemptions.

`queued-wait` polls the request's state until it is ACTIVE (a FAILED or vanished request, or more than `--wait_s`
seconds, is an error). `supervise` runs a whole job from the launching machine:

  1. request the slice as a queued resource, unless a request of that id exists: then it is reused, and a job
     already running on it is watched, not started again (a supervisor that was itself stopped can be started
     again); wait until it is ACTIVE;
  2. `setup`, `preflight` and `run` on every worker (of every slice, for multislice);
  3. every `--poll_s` seconds, read the request's state and the job's status on every worker
     (`remote.status_script`): the job is done when every worker exited 0, failed when any worker exited with
     another status than 0 or `exit_status.PREEMPTED` (75: saved and stopped on SIGTERM), and still running while
     any worker runs;
  4. when the request is preempted (SUSPENDING: the workers got SIGTERM and save, so the supervisor waits for
     SUSPENDED; then the request is deleted), vanishes or FAILED, or when every worker stopped with status 75 while
     the slice stayed ACTIVE (a maintenance event), the request is made again (or, for the latter, the job is
     started again in place) and the same command resumes from the last checkpoint in `--model_dir`; at most
     `--max_restarts` times, each one logged with its reason. A preemption during setup is one of these too.

When the job is done the request is deleted (`--keep_when_done` keeps it). When the job fails, or a step fails
for another reason than a preemption, a request this supervisor made is deleted unless `--keep_on_failure` (the
workers' logs are in `<model_dir>/logs/`); the supervisor then exits 1 naming the worker and status. gcloud calls
that fail or hang (`QUERY_TIMEOUT_S`) count as "no answer", never as a preemption: nothing is deleted on an
answer it did not get. Every line it logs goes to stderr with a UTC time. Stop the supervisor (Ctrl-C) before a
manual `stop`, or it restarts the job.
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

ACTIVE, SUSPENDING, GONE = "ACTIVE", "SUSPENDING", "NOT_FOUND"  # GONE: no request of that id exists.
WAITING = ("CREATING", "ACCEPTED", "WAITING_FOR_RESOURCES", "PROVISIONING")
QUERY_TIMEOUT_S = 300
_STATUS = re.compile(rf"{remote.JOB_STATUS} (\S+): (running|absent|exited (\d+))")


@dataclasses.dataclass(frozen=True)
class SuperviseOptions:
  poll_s: float = 60.0  # Seconds between two looks at the request and the job.
  wait_s: float = 24 * 3600.0  # Longest wait for a request to become ACTIVE.
  max_restarts: int = 10  # Resubmissions (or in-place restarts) before giving up.
  keep_when_done: bool = False
  keep_on_failure: bool = False
  unreachable_polls: int = 15  # Consecutive polls without an answer (gcloud down, workers not answering).

  def __post_init__(self):
    for name in ("poll_s", "wait_s"):
      if not getattr(self, name) > 0:
        raise LaunchError(f"--{name}={getattr(self, name)!r} must be a positive number of seconds")
    for name in ("max_restarts", "unreachable_polls"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < (0 if name == "max_restarts" else 1):
        raise LaunchError(f"--{name}={value!r} must be an int >= {0 if name == 'max_restarts' else 1}")


@dataclasses.dataclass
class Clock:
  """Time and sleep, replaceable in tests."""
  sleep: Callable[[float], None] = time.sleep
  now: Callable[[], float] = time.time


def log(message: str) -> None:
  print(f"supervise {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC: {message}", file=sys.stderr,
        flush=True)


def query(command: Sequence[str], runner=subprocess.run) -> tuple[Optional[str], str]:
  """(stdout or None when the command failed or hung, stderr) of a read-only gcloud command."""
  try:
    result = runner(list(command), capture_output=True, text=True, timeout=QUERY_TIMEOUT_S)
  except subprocess.TimeoutExpired:
    return None, f"no answer within {QUERY_TIMEOUT_S} s"
  return (result.stdout if result.returncode == 0 else None), result.stderr or ""


def request_state(tpu: TpuSlice, runner=subprocess.run) -> Optional[str]:
  """The queued resource's state, GONE when there is no such request, None when gcloud did not say."""
  out, err = query(gcloud.queued_describe_command(tpu, state_only=True), runner)
  if out is None:
    return GONE if "NOT_FOUND" in err or "not found" in err.lower() else None
  return out.strip() or None


def wait_active(tpu: TpuSlice, options: SuperviseOptions, runner=subprocess.run, clock: Clock = Clock()) -> None:
  """Returns once the request is ACTIVE; LaunchError when it FAILED, vanished, or `wait_s` passed."""
  start, last = clock.now(), ""
  while True:
    state = request_state(tpu, runner)
    if state == ACTIVE:
      log(f"{tpu.queued_resource} is ACTIVE after {clock.now() - start:.0f} s")
      return
    if state != last:
      log(f"{tpu.queued_resource}: {state or 'no answer from gcloud'}")
      last = state
    if state == GONE:
      raise LaunchError(f"queued resource {tpu.queued_resource} does not exist (deleted, or never requested: "
                        "queued-create)")
    if state not in WAITING and state is not None:
      raise LaunchError(f"queued resource {tpu.queued_resource} is {state}, not waiting for capacity: "
                        "`queued-describe` shows why")
    if clock.now() - start > options.wait_s:
      raise LaunchError(f"queued resource {tpu.queued_resource} is still {state or 'unknown'} after "
                        f"{options.wait_s:.0f} s (--wait_s)")
    clock.sleep(options.poll_s)


def job_status(tpu: TpuSlice, model_dir: str, runner=subprocess.run) -> Optional[dict[str, str]]:
  """{worker hostname: 'running' | 'absent' | 'exited N'} from every worker, or None when not all answered."""
  out, _ = query(gcloud.ssh_command(tpu, remote.status_script(model_dir)), runner)
  if out is None:
    return None
  found = {m.group(1): m.group(2) for m in _STATUS.finditer(out)}
  return found if len(found) >= tpu.hosts * tpu.node_count else None


def verdict(statuses: dict[str, str]) -> str:
  """'failed: HOST exited N' (any worker), else 'running' (any worker still runs), 'absent' (some worker has no
  job: never started there, or its VM was replaced), 'done' (every worker exited 0) or 'preempted' (some 75)."""
  codes = {host: int(s.split()[1]) for host, s in statuses.items() if s.startswith("exited")}
  failed = {h: c for h, c in codes.items() if c not in (0, exit_status.PREEMPTED)}
  if failed:
    host, code = sorted(failed.items())[0]
    return f"failed: {host} exited {code}"
  if "running" in statuses.values():
    return "running"
  if "absent" in statuses.values():
    return "absent"
  return "preempted" if exit_status.PREEMPTED in codes.values() else "done"


@dataclasses.dataclass(frozen=True)
class Job:
  """What `supervise` runs: the steps that install and start the job (setup, preflight, run) and its model_dir."""
  start_steps: Callable[[int], list[Step]]  # Attempt number -> steps (the run id changes per attempt).
  model_dir: str
  create: Step  # queued-create, with its cleanup (queued-delete).


class _Lost(Exception):
  """The slice went away (preempted, deleted, FAILED): request it again."""


class _NoAnswer(LaunchError):
  """gcloud or the workers did not answer for too long: give up without deleting anything."""


class _Supervisor:
  def __init__(self, tpu, job, options, policy, runner, clock):
    self.tpu, self.job, self.options, self.policy, self.runner, self.clock = tpu, job, options, policy, runner, clock
    self.created = False  # Whether this supervisor made the request that exists now.

  def _run(self, step: Step) -> None:
    run_step(step, policy=self.policy, runner=self.runner, sleep=self.clock.sleep)

  def delete(self, why: str) -> None:
    self._run(Step(tuple(gcloud.queued_delete_command(self.tpu))))
    self.created = False
    log(f"deleted {self.tpu.queued_resource} ({why})")

  def state(self) -> str:
    """The request's state, asking again (bounded) while gcloud gives no answer."""
    for _ in range(self.options.unreachable_polls):
      state = request_state(self.tpu, self.runner)
      if state is not None:
        return state
      self.clock.sleep(self.options.poll_s)
    raise _NoAnswer(f"no answer from gcloud about {self.tpu.queued_resource} for {self.options.unreachable_polls} "
                    "polls; nothing was deleted (check `gcloud auth list` and the network, then supervise again)")

  def start(self, attempt: int) -> None:
    """setup, preflight, run; a step that fails because the slice went away is a preemption, not a failure."""
    try:
      for step in self.job.start_steps(attempt):
        self._run(step)
    except LaunchError:
      if self.state() != ACTIVE:
        raise _Lost("the slice went away during setup") from None
      raise
    log(f"job started on every worker; model_dir {self.job.model_dir}; polling every {self.options.poll_s:g} s")

  def watch(self) -> str:
    """Polls until the job is done ('done'), failed ('failed: ...') or stopped on SIGTERM or missing on a worker
    ('preempted'); raises _Lost when the slice went away, _NoAnswer when nothing answers for too long."""
    quiet, suspending, absent = 0, 0, 0
    while True:
      self.clock.sleep(self.options.poll_s)
      state = request_state(self.tpu, self.runner)
      if state == SUSPENDING:  # The workers got SIGTERM and are saving: deleting now could cut the save short.
        suspending += 1
        if suspending == 1:
          log(f"{self.tpu.queued_resource} is SUSPENDING (preempted): waiting for the workers to save")
        if suspending < self.options.unreachable_polls:
          continue
      if state is not None and state != ACTIVE:
        raise _Lost(f"the request went {state} (preempted)" if state.startswith("SUSPEND") else
                    "the request was deleted" if state == GONE else f"the request is {state}")
      statuses = job_status(self.tpu, self.job.model_dir, self.runner) if state is not None else None
      if statuses is None:
        quiet += 1
        if quiet >= self.options.unreachable_polls:
          raise _NoAnswer(f"no answer from {'gcloud' if state is None else 'every worker'} about "
                          f"{self.tpu.queued_resource} for {quiet} polls ({quiet * self.options.poll_s:.0f} s); "
                          "nothing was deleted: look with `logs` and `queued-describe`, then supervise again")
        continue
      quiet = 0
      result = verdict(statuses)
      absent = absent + 1 if result == "absent" else 0
      if result == "absent" and absent >= self.options.unreachable_polls:
        missing = sorted(h for h, s in statuses.items() if s == "absent")
        log(f"the job is not on {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''} (VMs replaced?)")
        return "preempted"
      if result not in ("running", "absent"):
        return result

  def _failed(self, message: str, no_answer: bool = False) -> LaunchError:
    if no_answer:
      return LaunchError(message)
    if self.created and not self.options.keep_on_failure:
      self.delete("this supervisor made it; --keep_on_failure keeps it")
      message += f"; the slice was deleted (logs in {self.job.model_dir}/logs)"
    else:
      message += f"; {self.tpu.queued_resource} is kept: `logs` shows why, `queued-delete` removes it"
    return LaunchError(message)

  def run(self) -> None:
    restarts, reason, state = 0, "", self.state()
    if state not in (GONE, ACTIVE, *WAITING):
      log(f"{self.tpu.queued_resource} exists but is {state}: deleting it to request it again")
      self.delete(f"it was {state}")
      state = GONE
    recreate, fresh = state == GONE, True
    while True:
      if recreate:
        log(f"requesting {self.tpu.queued_resource} ({self.tpu.node_count} x {self.tpu.accelerator_type})"
            + (f" again: {reason}; restart {restarts} of {self.options.max_restarts}" if restarts else ""))
        self._run(self.job.create)
        self.created = True
      elif restarts:
        log(f"starting the job again in place: {reason}; restart {restarts} of {self.options.max_restarts}")
      else:
        log(f"{self.tpu.queued_resource} exists; using it")
      try:
        wait_active(self.tpu, self.options, self.runner, self.clock)
        found = job_status(self.tpu, self.job.model_dir, self.runner) if fresh and not recreate else None
        found = verdict(found) if found else ""
        if found == "running":
          log("the job is already running on it: watching it")
        elif found != "done":
          self.start(restarts)
        result = "done" if found == "done" else self.watch()
      except _Lost as lost:
        result, reason = "lost", str(lost)
      except LaunchError as e:
        raise self._failed(str(e), no_answer=isinstance(e, _NoAnswer)) from None
      fresh = False
      if result == "done":
        log("every worker exited 0: the job is done")
        if not self.options.keep_when_done:
          self.delete("the job is done; --keep_when_done keeps it")
        return
      if result.startswith("failed"):
        raise self._failed(f"the job {result[len('failed: '):]} (not a preemption)")
      if result == "preempted":  # Every worker stopped on SIGTERM; is the slice going away, or staying?
        self.clock.sleep(self.options.poll_s)
        state = self.state()
        reason = ("the job stopped on SIGTERM (status 75) while the slice stayed ACTIVE" if state == ACTIVE else
                  f"the job stopped on SIGTERM and the request is {state} (preempted)")
        result = "in place" if state == ACTIVE else "lost"
      restarts += 1
      log(reason)
      over = restarts > self.options.max_restarts
      recreate = result == "lost"
      if recreate and request_state(self.tpu, self.runner) not in (GONE, None):
        self.delete("preempted; giving up" if over else "preempted: it is requested again")
      if over:
        raise LaunchError(f"{reason}; giving up after {self.options.max_restarts} restarts (--max_restarts); the "
                          f"checkpoints in {self.job.model_dir} remain, and `supervise` again resumes from them")


def supervise(tpu: TpuSlice, job: Job, options: SuperviseOptions = SuperviseOptions(),
              policy: RetryPolicy = RetryPolicy(), runner=subprocess.run, clock: Clock = Clock()) -> None:
  """See the module docstring."""
  _Supervisor(tpu, job, options, policy, runner, clock).run()
