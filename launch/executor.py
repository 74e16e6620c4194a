"""Runs a launch plan: each gcloud command in turn, retrying the remote steps, cleaning up after a failure.

A plan is a list of `Step`s. ssh, scp and describe commands are retried with exponential backoff (the first ssh
after `create` often fails while the keys propagate; a worker's sshd may drop one connection); `create`, `delete`
and queued-resource requests are not (repeating them is not idempotent). When a step fails after this launch
created the slice, the slice is deleted (unless `keep_on_failure`), so that a failed setup does not leave chips
billing; every attempt and the cleanup are logged on stderr.
"""
import dataclasses
import shlex
import shutil
import subprocess
import sys
import time
from typing import Callable, Optional, Sequence

from . import gcloud
from .slices import LaunchError


@dataclasses.dataclass(frozen=True)
class Step:
  """One gcloud command of a plan: `retry` (safe to repeat), `creates` (the slice exists once it succeeded) and
  `cleanup` (the command that undoes it). A step with an `action` (`queued-wait`, `supervise`) runs that instead,
  as `action(policy, runner, sleep)`; its `command` is the first one it runs, printed by a dry run after `note`."""
  command: tuple[str, ...]
  retry: bool = False
  creates: bool = False
  cleanup: tuple[str, ...] = ()
  action: Optional[Callable[..., None]] = None
  note: str = ""


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
  attempts: int = 5
  base_s: float = 5.0
  max_s: float = 60.0

  def delays(self) -> list[float]:
    """Seconds to wait before attempts 2..N: base, 2 base, 4 base, ... capped at max_s."""
    return [min(self.base_s * 2 ** k, self.max_s) for k in range(self.attempts - 1)]


def _run_once(command: Sequence[str], runner) -> int:
  print(f"+ {shlex.join(command)}", file=sys.stderr, flush=True)
  return runner(list(command)).returncode


def run_step(step: Step, *, policy: RetryPolicy, runner=subprocess.run,
             sleep: Callable[[float], None] = time.sleep) -> None:
  """Runs one step, retrying it if it may be retried; a LaunchError naming the command when it still fails."""
  delays = policy.delays() if step.retry else []
  for attempt in range(len(delays) + 1):
    status = _run_once(step.command, runner)
    if status == 0:
      return
    if attempt < len(delays):
      print(f"launch: exit status {status} (attempt {attempt + 1} of {len(delays) + 1}); retrying in "
            f"{delays[attempt]:g} s", file=sys.stderr, flush=True)
      sleep(delays[attempt])
  tries = f" after {len(delays) + 1} attempts" if delays else ""
  raise LaunchError(f"command failed with exit status {status}{tries}: {shlex.join(step.command)}")


def execute(steps: Sequence[Step], *, dry_run: bool, policy: RetryPolicy = RetryPolicy(),
            keep_on_failure: bool = False, runner=subprocess.run, sleep: Callable[[float], None] = time.sleep,
            out=None) -> None:
  """Prints (`dry_run`: one shell-quoted command per line, a runnable script) or runs the steps in order."""
  if dry_run:
    lines = [line for s in steps
             for line in [f"# {n}" for n in s.note.splitlines()] + [gcloud.format_commands([s.command])]]
    print("\n".join(lines), file=out or sys.stdout)
    return
  if shutil.which(gcloud.GCLOUD) is None:
    raise LaunchError("`gcloud` was not found on PATH: install the Google Cloud CLI "
                      "(https://cloud.google.com/sdk/docs/install), run `gcloud auth login`, or pass --dry_run "
                      "to print the commands instead")
  created: Optional[Step] = None
  for step in steps:
    try:
      if step.action is not None:
        step.action(policy, runner, sleep)
      else:
        run_step(step, policy=policy, runner=runner, sleep=sleep)
    except LaunchError as e:
      if created is not None and created.cleanup and not keep_on_failure:
        print(f"launch: {e}\nlaunch: deleting the slice this launch created (pass --keep_on_failure to keep it)",
              file=sys.stderr, flush=True)
        status = _run_once(created.cleanup, runner)
        note = "deleted" if status == 0 else f"NOT deleted (exit status {status}); delete it yourself"
        raise LaunchError(f"{e}; the slice was {note}") from None
      raise
    if step.creates:
      created = step
