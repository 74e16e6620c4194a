"""Launch xprompt_jax on a Cloud TPU VM slice: create, setup, preflight, run, logs, stop, describe, delete.

Each step returns its gcloud commands (`launch.gcloud`) with the scripts they run on the workers
(`launch.remote`); `launch.executor` runs them in order, retrying the remote ones with backoff and deleting a slice
this launch created when a later step fails, or with `--dry_run` prints them shell-quoted, one per line (a
runnable script). Queued resources (`queued-create`, `queued-describe`, `queued-delete`) request a slice that is
provisioned when capacity frees up; the other steps then address the node by its `--name`. Only the standard
library and absl-py are needed on the launching machine (no JAX). docs/launch.md walks through a whole job.

  xprompt-jax launch create setup preflight run --name=pt-xxl --zone=us-central2-b --accelerator_type=v4-128 \\
      --git_url=https://github.com/ORG/xprompt_jax --gin_file=models/t5_1_1_xxl.gin \\
      --gin_file=recipes/lester.gin --model_dir=gs://BUCKET/runs/lester_xxl --gin.MeshConfig.model=8 --dry_run

(`python -m launch.tpu_vm ...` from the repository root is the same program.) `setup` installs the package at the
launching checkout's commit unless `--git_ref` names another one.
"""
import dataclasses
import os
import re
import subprocess
import sys
import time
from typing import Callable, Optional, Sequence

from xprompt_jax import exit_status

from . import gcloud, remote, supervisor
from .executor import RetryPolicy, Step, execute
from .slices import LaunchError, Network, TpuSlice

MOUNT_ROOT = "/mnt/"  # Where docs/launch.md mounts the bucket with gcsfuse (XPrompt / MPT tables).
COMMANDS = ("train", "table", "xprompt", "mpt")  # What `run` may start on the workers.
# What writes stage files with local I/O (xprompt_jax.commands.common.refuse_gcs): a gcsfuse folder, not gs://.
LOCAL_IO_COMMANDS, LOCAL_IO_TABLES = ("xprompt", "mpt"), ("xprompt_", "mpt_")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def launching_commit(repo_dir: str = "") -> str:
  """The commit of the git checkout the launcher runs from ('' outside one); warns about uncommitted changes,
  which the workers will not get."""
  repo_dir = repo_dir or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    commit = subprocess.run(["git", "-C", repo_dir, "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", repo_dir, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return ""
  if dirty:
    print(f"launch: {repo_dir} has uncommitted changes; the workers install commit {commit[:12]} without them",
          file=sys.stderr)
  return commit


def _existing(path: str, what: str) -> str:
  if not os.path.exists(path):
    raise LaunchError(f"{what} {path!r} does not exist (relative to {os.getcwd()})")
  return path


def setup_commands(tpu: TpuSlice, *, git_url: str = "", git_ref: str = "", sdist: str = "",
                   gin_files: Sequence[str] = (), network: Network = gcloud.NO_NETWORK,
                   commit: Callable[[], str] = launching_commit) -> list[Step]:
  """Installs `xprompt_jax[tpu]` into a Python 3.11 venv on every worker (from git at one commit, or a local
  sdist/wheel) and copies gin files."""
  if bool(git_url) == bool(sdist):
    raise LaunchError("setup needs exactly one package source: --git_url (with --git_ref) or --sdist "
                      "(from `python -m build --sdist`)")
  steps = []
  if sdist:
    remote_file = f"/tmp/{os.path.basename(_existing(sdist, 'sdist'))}"
    steps.append(Step(tuple(gcloud.scp_command(tpu, [sdist], remote_file, network=network)), retry=True))
    requirement = f"xprompt_jax[tpu] @ file://{remote_file}"
  else:
    ref = git_ref or commit()
    if not ref:
      raise LaunchError("setup --git_url needs --git_ref=COMMIT here: this launcher is not running from a git "
                        "checkout, so there is no launching commit to pin the workers to")
    if not _COMMIT.match(ref):
      print(f"launch: --git_ref={ref} is a name, not a commit: workers that install at different times may get "
            "different code", file=sys.stderr)
    requirement = f"xprompt_jax[tpu] @ git+{git_url}@{ref}"
  install = remote.install_script(requirement)
  steps.append(Step(tuple(gcloud.ssh_command(tpu, install, network=network)), retry=True))
  if gin_files:
    steps.append(Step(tuple(gcloud.scp_command(tpu, [_existing(f, "gin file") for f in gin_files],
                                               f"{remote.REMOTE_GIN_DIR}/", network=network)), retry=True))
  return steps


@dataclasses.dataclass(frozen=True)
class TrainJob:
  """What `run` starts on every worker: `python -m xprompt_jax.cli COMMAND` with these gin files and bindings.

  `gin_files` are names under the shipped gin/ folder (e.g. `recipes/lester.gin`) or files copied by `setup`
  (looked up in the workers' `xprompt_gin/`). `gin_bindings` are `NAME=VALUE` strings, passed as `--gin.NAME=VALUE`.
  """

  gin_files: tuple[str, ...]
  model_dir: str
  gin_bindings: tuple[str, ...] = ()
  extra_flags: tuple[str, ...] = ()
  python: str = remote.VENV_PYTHON
  env: tuple[str, ...] = ()  # NAME=VALUE environment variables for the trainer (e.g. TFDS_DATA_DIR=gs://...).
  command: str = "train"  # One of COMMANDS: `table` takes the gs:// folder as its --results_dir.

  def __post_init__(self):
    if self.command not in COMMANDS:
      raise LaunchError(f"--command={self.command!r} is not one of {', '.join(COMMANDS)}")
    tables = [f.split("=", 1)[1] for f in self.extra_flags if f.startswith("--table=")]
    local_io = self.command in LOCAL_IO_COMMANDS or any(t.startswith(LOCAL_IO_TABLES) for t in tables)
    if local_io and self.model_dir.startswith("gs://"):
      raise LaunchError(f"--model_dir={self.model_dir}: {self.command} {' '.join(tables)} writes its stage files with "
                        f"local file I/O, so it refuses gs:// (on the workers, after setup): mount the bucket with "
                        f"gcsfuse on every worker and pass the folder under {MOUNT_ROOT} (docs/launch.md)")
    if not self.gin_files:
      raise LaunchError("run needs at least one --gin_file (e.g. models/t5_1_1_xxl.gin and recipes/lester.gin)")
    if not self.model_dir.startswith(("gs://", MOUNT_ROOT)):
      raise LaunchError(f"--model_dir={self.model_dir!r} must be a gs:// path (or a bucket folder gcsfuse-mounted "
                        f"under {MOUNT_ROOT} on every worker): the workers of a slice share no disk, and the VM's disk "
                        "is lost when the slice is deleted or preempted")
    for binding in self.gin_bindings:
      if "=" not in binding or not binding.split("=", 1)[0].strip():
        raise LaunchError(f"gin binding {binding!r} is not NAME=VALUE")
    for variable in self.env:
      if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", variable, re.S):
        raise LaunchError(f"environment variable {variable!r} is not NAME=VALUE")

  def train_argv(self) -> list[str]:
    folder = "--results_dir" if self.command == "table" else "--model_dir"
    return [self.python, "-m", "xprompt_jax.cli", self.command, *[f"--gin_file={f}" for f in self.gin_files],
            f"--gin_search_paths={remote.REMOTE_GIN_DIR}", f"{folder}={self.model_dir}", "--multihost",
            *[f"--gin.{b.split('=', 1)[0].strip()}={b.split('=', 1)[1]}" for b in self.gin_bindings],
            *self.extra_flags]


def _with_slices(tpu: TpuSlice, job: TrainJob) -> TrainJob:
  """A multislice job's mesh spans its slices: `MeshConfig.dcn_data` is the node count (added when not given)."""
  given = [b.split("=", 1)[1].strip() for b in job.gin_bindings if b.split("=", 1)[0].strip() == "MeshConfig.dcn_data"]
  if not tpu.multislice:
    if given and given != ["1"]:
      raise LaunchError(f"--gin.MeshConfig.dcn_data={given[-1]} needs that many slices: pass --node_count="
                        f"{given[-1]} (a multislice queued resource)")
    return job
  if not given:
    return dataclasses.replace(job, gin_bindings=(*job.gin_bindings, f"MeshConfig.dcn_data={tpu.node_count}"))
  if given != [str(tpu.node_count)]:
    raise LaunchError(f"--gin.MeshConfig.dcn_data={given[-1]} but --node_count={tpu.node_count}: the mesh must split "
                      "'data' over exactly the slices of the job (leave the binding out to get it)")
  return job


def check_gin_names(job: TrainJob, copied: Sequence[str] = ()) -> None:
  """Warns (on the launching machine, before anything runs) about a --gin_file that is neither shipped with the
  package (gin/) nor copied by this launch's setup --copy_gin: the workers would fail to find it."""
  try:
    from xprompt_jax import paths
    shipped = paths.gin_dir()
  except ImportError:  # The launcher alone, without the package: nothing to check against.
    return
  names = {os.path.basename(c.rstrip("/")) for c in copied}
  for name in job.gin_files:
    if not (shipped / name).is_file() and os.path.basename(name) not in names and name.split("/")[0] not in names:
      print(f"launch: --gin_file={name} is not a shipped gin file (gin/{name}); unless an earlier setup copied it "
            f"with --copy_gin, the workers will not find it", file=sys.stderr)


def run_command(tpu: TpuSlice, job: TrainJob, run_id: str, network: Network = gcloud.NO_NETWORK) -> list[str]:
  """Starts the job on all workers at once, detached; `--multihost` makes each call `jax.distributed.initialize()`,
  which on Cloud TPU VMs finds the coordinator and process ids in the TPU metadata (for multislice too)."""
  job = _with_slices(tpu, job)
  return gcloud.ssh_command(tpu, remote.run_script(job.train_argv(), job.model_dir, run_id, job.env),
                            network=network)


def logs_command(tpu: TpuSlice, run_id: str = "", *, worker: str = "all", lines: int = 100, follow_s: int = 0,
                 network: Network = gcloud.NO_NETWORK) -> list[str]:
  return gcloud.ssh_command(tpu, remote.logs_script(run_id, lines=lines, follow_s=follow_s), worker=worker,
                            network=network)


def stop_command(tpu: TpuSlice, wait_s: int = 300, network: Network = gcloud.NO_NETWORK) -> list[str]:
  return gcloud.ssh_command(tpu, remote.stop_script(wait_s), network=network)


def preflight_command(tpu: TpuSlice, network: Network = gcloud.NO_NETWORK) -> list[str]:
  return gcloud.ssh_command(tpu, remote.preflight_script(tpu.chips_per_host), network=network)


@dataclasses.dataclass(frozen=True)
class LaunchOptions:
  """Everything the steps besides the slice itself need (filled from the command-line flags)."""

  spot: bool = False
  preemptible: bool = False
  git_url: str = ""
  git_ref: str = ""
  sdist: str = ""
  copy_gin: tuple[str, ...] = ()
  gin_files: tuple[str, ...] = ()
  model_dir: str = ""
  gin_bindings: tuple[str, ...] = ()
  extra_train_flags: tuple[str, ...] = ()
  python: str = remote.VENV_PYTHON
  env: tuple[str, ...] = ()
  valid_until_duration: str = ""
  command: str = "train"
  network: Network = gcloud.NO_NETWORK
  run_id: str = "run"  # Names the logs of `run`.
  log_run_id: str = ""  # Whose logs `logs` prints ('': the newest run's).
  worker: str = "all"
  lines: int = 100
  follow_s: int = 0
  stop_wait_s: int = 300
  supervision: supervisor.SuperviseOptions = supervisor.SuperviseOptions()

  def job(self) -> TrainJob:
    return TrainJob(tuple(self.gin_files), self.model_dir, tuple(self.gin_bindings), tuple(self.extra_train_flags),
                    self.python, tuple(self.env), self.command)


def _retried(command: list[str]) -> list[Step]:
  """A step that is safe to repeat (ssh, scp, describe)."""
  return [Step(tuple(command), retry=True)]


def _setup(t: TpuSlice, o: LaunchOptions) -> list[Step]:
  return setup_commands(t, git_url=o.git_url, git_ref=o.git_ref, sdist=o.sdist, gin_files=o.copy_gin,
                        network=o.network)


def _run(t: TpuSlice, o: LaunchOptions) -> list[Step]:
  check_gin_names(o.job(), o.copy_gin)
  return _retried(run_command(t, o.job(), o.run_id, o.network))


def _queued_create(t: TpuSlice, o: LaunchOptions) -> Step:
  return Step(tuple(gcloud.queued_create_command(t, spot=o.spot, valid_until_duration=o.valid_until_duration,
                                                 network=o.network)),
              creates=True, cleanup=tuple(gcloud.queued_delete_command(t)))


def _queued_wait(t: TpuSlice, o: LaunchOptions) -> list[Step]:
  return [Step(tuple(gcloud.queued_describe_command(t, state_only=True)), retry=True,
               note=f"queued-wait: this command every {o.supervision.poll_s:g} s until ACTIVE",
               action=lambda policy, runner, sleep: supervisor.wait_active(t, o.supervision, runner,
                                                                           supervisor.Clock(sleep=sleep)))]


def _supervise(t: TpuSlice, o: LaunchOptions) -> list[Step]:
  """The whole job as one step (launch.supervisor): request, wait, setup, preflight, run, watch, resubmit."""
  def start(attempt: int) -> list[Step]:
    run_id = o.run_id if not attempt else f"{o.run_id}-restart{attempt}"
    return [*_setup(t, o), *_retried(preflight_command(t, o.network)),
            *_retried(run_command(t, o.job(), run_id, o.network))]
  check_gin_names(o.job(), o.copy_gin)
  first = start(0)  # Every flag is checked before anything runs.
  job = supervisor.Job(start, o.model_dir, _queued_create(t, o))
  sup = o.supervision
  polled = [gcloud.queued_describe_command(t, state_only=True), gcloud.ssh_command(t, remote.status_script(
      o.model_dir), network=o.network)]
  note = "\n".join([
      "supervise runs all of this itself. First the queued-create command below (the last line; skipped when the "
      "request exists), then, until the request is ACTIVE:",
      f"  {gcloud.format_commands(polled[:1])}", "then:",
      *[f"  {gcloud.format_commands([s.command])}" for s in first],
      f"then every {sup.poll_s:g} s:", *[f"  {gcloud.format_commands([c])}" for c in polled],
      f"resubmitted after a preemption (at most {sup.max_restarts} times); when every worker exited 0:",
      f"  {gcloud.format_commands([gcloud.queued_delete_command(t)])}" + (" (--keep_when_done: not run)"
                                                                          if sup.keep_when_done else "")])
  return [Step(job.create.command, note=note, action=lambda policy, runner, sleep: supervisor.supervise(
      t, job, sup, policy, runner, supervisor.Clock(sleep=sleep)))]


STEPS: dict[str, Callable[[TpuSlice, LaunchOptions], list[Step]]] = {
    "create": lambda t, o: [Step(tuple(gcloud.create_command(t, spot=o.spot, preemptible=o.preemptible,
                                                             network=o.network)),
                                 creates=True, cleanup=tuple(gcloud.delete_command(t)))],
    "setup": _setup,
    "preflight": lambda t, o: _retried(preflight_command(t, o.network)),
    "run": _run,
    "logs": lambda t, o: _retried(logs_command(t, o.log_run_id, worker=o.worker,
                                           lines=o.lines, follow_s=o.follow_s, network=o.network)),
    "stop": lambda t, o: _retried(stop_command(t, o.stop_wait_s, o.network)),
    "describe": lambda t, o: _retried(gcloud.describe_command(t)),
    "delete": lambda t, o: [Step(tuple(gcloud.delete_command(t)))],
    "queued-create": lambda t, o: [_queued_create(t, o)],
    "queued-wait": _queued_wait,
    "queued-describe": lambda t, o: _retried(gcloud.queued_describe_command(t)),
    "queued-delete": lambda t, o: [Step(tuple(gcloud.queued_delete_command(t)))],
    "supervise": _supervise,
}


def plan(steps: Sequence[str], tpu: TpuSlice, options: LaunchOptions = LaunchOptions()) -> list[Step]:
  """All commands of `steps`, in order (every step is validated before anything runs)."""
  if not steps:
    raise LaunchError(f"no step given; steps: {', '.join(STEPS)}")
  unknown = [s for s in steps if s not in STEPS]
  if unknown:
    raise LaunchError(f"unknown step(s) {unknown}; steps: {', '.join(STEPS)}")
  if "supervise" in steps and len(steps) > 1:
    raise LaunchError(f"supervise runs the whole job itself (queued-create, setup, preflight, run, watching, "
                      f"resubmitting, queued-delete): give it alone, not with {[s for s in steps if s != 'supervise']}")
  return [command for step in steps for command in STEPS[step](tpu, options)]


def rewrite_gin_flags(argv: Sequence[str]) -> list[str]:
  """`--gin.NAME=VALUE` (as the trainer accepts) becomes `--gin_bindings=NAME=VALUE` for this launcher's flags."""
  return [f"--gin_bindings={a[len('--gin.'):]}" if a.startswith("--gin.") else a for a in argv]


def main(argv: Sequence[str]) -> int:
  from absl import flags
  from .launch_flags import options_from_flags
  f = flags.FLAGS
  try:
    tpu = TpuSlice(f.name, f.zone, f.accelerator_type, f.project, f.runtime_version, f.node_count, f.queued_id)
    options = options_from_flags(f, default_run_id=time.strftime("%Y%m%d-%H%M%S"))
    execute(plan(list(argv[1:]), tpu, options), dry_run=f.dry_run, keep_on_failure=f.keep_on_failure,
            policy=RetryPolicy(attempts=f.attempts, base_s=f.retry_base_s))
  except LaunchError as e:
    print(f"launch: {e}", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print("launch: interrupted; the slice and its job are left as they are (`describe` / `queued-describe`, "
          "`logs`; `supervise` again picks a running job up)", file=sys.stderr)
    return 130
  return 0


def run(argv: Optional[Sequence[str]] = None) -> None:
  """Entry point: `xprompt-jax launch STEP [STEP ...] --flags` (or `python -m launch.tpu_vm ...`)."""
  from absl import app, flags
  from . import launch_flags
  launch_flags.define_flags(flags)
  main_module = sys.modules.get("__main__")
  if main_module is not None:  # absl's --help prints the __main__ docstring: make it this launcher's usage.
    main_module.__doc__ = (f"xprompt-jax launch STEP [STEP ...] --name=NODE --zone=ZONE [flags] [--dry_run]\n\n"
                           f"Steps, run in the order given: {', '.join(STEPS)}.\n\n{__doc__}")
  for flag in flags.FLAGS.get_flags_for_module(launch_flags.__name__):  # `--help` lists them.
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)

  def parse(args):
    try:
      return exit_status.parse_with_help(flags.FLAGS, rewrite_gin_flags(args))
    except flags.Error as e:  # An unknown or malformed flag: one line, no traceback.
      print(f"launch: {e} (--help lists the flags)", file=sys.stderr)
      sys.exit(1)

  app.run(lambda a: sys.exit(main(a)), argv=list(sys.argv if argv is None else argv), flags_parser=parse)


if __name__ == "__main__":
  run()
