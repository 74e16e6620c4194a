"""The shell scripts the launcher runs on every worker (through `gcloud ... ssh --worker=all --command=...`).

- `install_script`: a Python >= 3.11 virtual environment made by uv in `~/xprompt_venv` (the TPU VM images ship
  Python 3.10, for which jax 0.10 has no wheels; the system Python is left alone), and the package with
  `jax[tpu]` installed into it at one pinned commit or file.
- `run_script`: starts the command detached, once per worker and model_dir (a second `run` while one is running
  does nothing, so retrying a failed ssh cannot start it twice), logging to
  `~/xprompt_logs/<run_id>.worker<N>.<hostname>.log`
  and copying that log to `<model_dir>/logs/` every minute and when the command ends, with its exit status
  appended.
- `status_script`: whether the job of a model_dir runs on each worker, or the status it exited with (what the
  launcher's `supervise` polls).
- `logs_script`: prints (or follows for a while) the newest log of a run on the workers it is sent to, each line
  prefixed with the worker, and returns.
- `stop_script`: SIGTERM (the trainer saves a checkpoint, every host at the same step), waits, SIGKILLs what is
  left, and frees the TPU chips (libtpu's lock file and any process still holding the devices).
- `preflight_script`: checks that every worker sees its TPU chips before a long job starts.
"""
import re
import shlex
from typing import Sequence

VENV = "xprompt_venv"  # Paths relative to the home folder, where ssh commands start (no ~ to quote).
VENV_PYTHON = f"{VENV}/bin/python"
PYTHON_VERSION = "3.11"
UV = ".local/bin/uv"  # Where the uv installer puts it with UV_INSTALL_DIR=$HOME/.local/bin.
UV_INSTALLER = "https://astral.sh/uv/install.sh"
LIBTPU_FIND_LINKS = "https://storage.googleapis.com/jax-releases/libtpu_releases.html"
REMOTE_GIN_DIR = "xprompt_gin"  # Relative to the worker's home, where `gcloud ... ssh --command` starts.
LOG_DIR = "xprompt_logs"
PROCESS = "[x]prompt_jax.cli "  # The bracket keeps pkill/pgrep from matching their own shell.
# The worker's index in its slice, from the TPU VM metadata (0 where there is no metadata server). Log names add
# the hostname: the slices of a multislice job each have a worker 0.
WORKER_ID = ("$(curl -sf -H Metadata-Flavor:Google http://metadata.google.internal/computeMetadata/v1/instance/"
             "attributes/agent-worker-number || echo 0)")


def install_script(requirement: str, *, python_version: str = PYTHON_VERSION) -> str:
  """uv (into ~/.local/bin, shell profiles untouched), a Python `python_version` venv, the pinned package."""
  return " && ".join([
      f"mkdir -p {REMOTE_GIN_DIR}",
      f"(test -x {UV} || curl -LsSf {UV_INSTALLER} | env UV_INSTALL_DIR=$HOME/.local/bin INSTALLER_NO_MODIFY_PATH=1 "
      "sh)",
      f"{UV} venv --allow-existing --python {python_version} {VENV}",
      f"{UV} pip install --python {VENV_PYTHON} --upgrade {shlex.quote(requirement)} -f {LIBTPU_FIND_LINKS}",
      f"{VENV_PYTHON} -c 'import socket, sys, xprompt_jax; print(socket.gethostname() + \": ready, Python\", "
      "sys.version.split()[0])'"])


def _copy(source: str, destination: str) -> str:
  """Copies a worker file to the run's folder: `gcloud storage cp` for gs://, `cp` for a gcsfuse mount."""
  if destination.startswith("gs://"):
    return f"gcloud storage cp -q {source} {destination} 2>/dev/null"
  return f"mkdir -p $(dirname {destination}) && cp {source} {destination}"


def _alive(pid_file: str) -> str:
  """A shell test: the job of `pid_file` runs (its pid lives and is ours: after a reboot the number may be reused)."""
  return (f"test -f {pid_file} && kill -0 $(cat {pid_file}) 2> /dev/null && "
          f"grep -qa xprompt_jax /proc/$(cat {pid_file})/cmdline")


def _job_files(model_dir: str) -> tuple[str, str]:
  """The pid file of the running job of `model_dir` on a worker, and the file its exit status is written to."""
  key = f"{LOG_DIR}/{re.sub(r'[^A-Za-z0-9]+', '_', model_dir).strip('_')}"
  return f"{key}.pid", f"{key}.status"


def run_script(argv: Sequence[str], model_dir: str, run_id: str, env: Sequence[str] = ()) -> str:
  """The detached command of `run` on one worker (see the module docstring)."""
  name = f"{run_id}.worker$w.$h.log"  # $w, $h: set by the wrapper below.
  log, remote_log = f"{LOG_DIR}/{name}", f"{model_dir.rstrip('/')}/logs/{name}"
  pid_file, status_file = _job_files(model_dir)
  command = shlex.join((["env", *env] if env else []) + list(argv))
  # `trap true TERM`: `stop` signals this wrapper too (its command line holds the command's); it then waits for the
  # command to save and exit and still appends the status and copies the log (a trap, unlike an ignored signal,
  # is not inherited by the command).
  body = "; ".join([
      "trap true TERM", f"w={WORKER_ID}", "h=$(hostname)",
      f"(while sleep 60; do {_copy(log, remote_log)}; done) & copier=$!",
      f"{command} > {log} 2>&1 < /dev/null; status=$?",
      f'echo "xprompt-jax exit status $status" >> {log}', f"echo $status > {status_file}", "kill $copier",
      f"{_copy(log, remote_log)}; exit $status"])
  start = f"rm -f {status_file}; nohup bash -c {shlex.quote(body)} > /dev/null 2>&1 < /dev/null & echo $! > {pid_file}"
  # A pid file per model_dir, not pgrep: the shell running this very script has the command in its command line.
  return (f"mkdir -p {LOG_DIR}; if {_alive(pid_file)}; then echo "
          f"\"$(hostname): xprompt-jax is already running on {model_dir}; not starting another\"; else {start}; fi")


JOB_STATUS = "xprompt-job"  # What `status_script` prints before each worker's state.


def status_script(model_dir: str) -> str:
  """One line per worker: `xprompt-job HOST: running`, `... exited STATUS` or `... absent` (never started here)."""
  pid_file, status_file = _job_files(model_dir)
  return (f"if {_alive(pid_file)}; then s=running; elif test -f "
          f"{status_file}; then s=\"exited $(cat {status_file})\"; else s=absent; fi; echo \"{JOB_STATUS} "
          "$(hostname): $s\"")


def logs_script(run_id: str = "", *, lines: int = 100, follow_s: int = 0) -> str:
  """The newest log (of `run_id`, or of any run) on this worker, each line prefixed with the worker."""
  pattern = f"{LOG_DIR}/{run_id}*.log"
  tail = f"timeout {int(follow_s)} tail -n {int(lines)} -F \"$f\"" if follow_s else f"tail -n {int(lines)} \"$f\""
  return (f"f=$(ls -t {pattern} 2>/dev/null | head -n 1); if test -z \"$f\"; then echo \"$(hostname): no log "
          f"{pattern}\" >&2; exit 1; fi; {tail} | sed \"s|^|[$(hostname)] |\"; true")


def stop_script(wait_s: int = 300, process: str = PROCESS) -> str:
  """SIGTERM, up to `wait_s` seconds for the checkpoint and exit, SIGKILL, then free the chips (`process`: the
  pgrep pattern of what to stop; every xprompt-jax command by default)."""
  pattern = shlex.quote(process)
  running = f"pgrep -f {pattern} > /dev/null"
  return "; ".join([
      f"pkill -TERM -f {pattern}",
      f"for i in $(seq 1 {int(wait_s)}); do {running} || break; sleep 1; done",
      f"if {running}; then echo \"$(hostname): still running after {int(wait_s)} s; SIGKILL\"; "
      f"pkill -KILL -f {pattern}; sleep 2; fi",
      "sudo rm -f /tmp/libtpu_lockfile",
      "(sudo lsof -t /dev/accel* /dev/vfio/[0-9]* 2>/dev/null | xargs -r sudo kill -9)",
      "echo \"$(hostname): stopped; TPU chips free\""])


def preflight_script(chips_per_host: int) -> str:
  """Fails on a worker whose JAX does not see `chips_per_host` TPU devices (a busy, missing or wrong chip)."""
  check = ("import jax, socket, sys; d = jax.local_devices(); "
           f'ok = len(d) == {int(chips_per_host)} and d[0].platform == "tpu"; '
           f'print(socket.gethostname() + ":", len(d), d[0].platform, "devices (want {int(chips_per_host)} tpu)", '
           '"ok" if ok else "FAILED"); sys.exit(0 if ok else 1)')
  return f"{VENV_PYTHON} -c {shlex.quote(check)}"
