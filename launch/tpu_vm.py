"""Launch xprompt_jax training on a Cloud TPU VM slice: create, setup, run, logs, stop, describe, delete.

Each step is a pure function that *returns* gcloud argument lists; `main` runs them one after another with
`subprocess`, or with `--dry_run` prints them shell-quoted, one per line (the output is a runnable script).
Queued resources (`queued-create`, `queued-describe`, `queued-delete`) request a slice that is provisioned when
capacity frees up; the other steps then address the node by its `--name`. Only the standard library and absl-py
are needed on the launching machine (no JAX). See docs/launch.md for the walkthrough.

  python -m launch.tpu_vm create setup run --name=pt-xxl --zone=us-central2-b --accelerator_type=v4-128 \\
      --git_url=https://github.com/ORG/xprompt_jax --gin_file=models/t5_1_1_xxl.gin \\
      --gin_file=recipes/lester.gin --model_dir=gs://BUCKET/runs/lester_xxl --gin.MeshConfig.model=8 --dry_run
"""
import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
from typing import Callable, Optional, Sequence

GCLOUD = "gcloud"
LIBTPU_FIND_LINKS = "https://storage.googleapis.com/jax-releases/libtpu_releases.html"
MOUNT_ROOT = "/mnt/"  # Where docs/launch.md mounts the bucket with gcsfuse (XPrompt / MPT tables).
COMMANDS = ("train", "table", "xprompt", "mpt")  # What `run` may start on the workers.
REMOTE_GIN_DIR = "xprompt_gin"  # Relative to the worker's home, where `gcloud ... ssh --command` starts.
DEFAULT_LOG_FILE = "xprompt_train.log"

# TPU software (runtime) version per generation: the VM image with the TPU driver; JAX comes from pip.
DEFAULT_RUNTIME_VERSIONS = {
    "v4": "tpu-ubuntu2204-base",
    "v5litepod": "v2-alpha-tpuv5-lite",
    "v5p": "v2-alpha-tpuv5",
    "v6e": "v2-alpha-tpuv6e",
}
# The number after the dash counts TensorCores on v4/v5p (multiples of 8: 4 chips x 2 cores per host) and chips on
# v5e/v6e (the published slice shapes).
_CORE_COUNTED = {"v4": 4096, "v5p": 12288}
_CHIP_COUNTED = {"v5litepod": (1, 4, 8, 16, 32, 64, 128, 256), "v6e": (1, 4, 8, 16, 32, 64, 128, 256)}
_ALIASES = {"v5e": "v5litepod", "v5lite": "v5litepod", "v5litepod": "v5litepod"}
_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


class LaunchError(RuntimeError):
  """A launch that cannot proceed: bad option, missing gcloud, or a failed gcloud command."""


def parse_accelerator_type(accelerator_type: str) -> tuple[str, int]:
  """('v4', 128) from 'v4-128'; a clear error for unknown generations or slice sizes."""
  supported = (", ".join(f"{g}-N (N a multiple of 8 up to {m})" for g, m in _CORE_COUNTED.items()) + ", "
               + ", ".join(f"{g}-{{{','.join(map(str, s))}}}" for g, s in _CHIP_COUNTED.items()))
  m = re.fullmatch(r"(v\d+[a-z]*)-(\d+)", accelerator_type or "")
  if not m:
    raise LaunchError(f"accelerator type {accelerator_type!r} is not of the form GENERATION-SIZE; supported: "
                      f"{supported}")
  generation, size = m.group(1), int(m.group(2))
  if generation in _ALIASES and generation != _ALIASES[generation]:
    raise LaunchError(f"accelerator type {accelerator_type!r}: gcloud calls this generation "
                      f"{_ALIASES[generation]!r}; use {_ALIASES[generation]}-{size}")
  if generation in _CORE_COUNTED:
    if size % 8 or not 8 <= size <= _CORE_COUNTED[generation]:
      raise LaunchError(f"accelerator type {accelerator_type!r}: {generation} sizes count TensorCores and must be "
                        f"a multiple of 8 between 8 and {_CORE_COUNTED[generation]}")
  elif generation in _CHIP_COUNTED:
    if size not in _CHIP_COUNTED[generation]:
      raise LaunchError(f"accelerator type {accelerator_type!r}: {generation} slices have "
                        f"{', '.join(map(str, _CHIP_COUNTED[generation]))} chips")
  else:
    raise LaunchError(f"accelerator type {accelerator_type!r}: generation {generation!r} is not supported; "
                      f"supported: {supported}")
  return generation, size


@dataclasses.dataclass(frozen=True)
class TpuSlice:
  """Which slice: node name, zone, accelerator type; project and runtime version default to gcloud's / ours."""

  name: str
  zone: str
  accelerator_type: str = "v4-8"
  project: str = ""
  runtime_version: str = ""

  def __post_init__(self):
    if not _NAME.match(self.name or ""):
      raise LaunchError(f"TPU name {self.name!r} must be 1-63 lowercase letters, digits or '-', starting with a "
                        "letter and not ending with '-'")
    if not self.zone:
      raise LaunchError("a zone is required (e.g. --zone=us-central2-b for v4, us-west4-a for v5litepod)")
    generation, _ = parse_accelerator_type(self.accelerator_type)
    if not self.runtime_version:
      object.__setattr__(self, "runtime_version", DEFAULT_RUNTIME_VERSIONS[generation])

  @property
  def generation(self) -> str:
    return parse_accelerator_type(self.accelerator_type)[0]

  def location_flags(self) -> list[str]:
    return [f"--zone={self.zone}"] + ([f"--project={self.project}"] if self.project else [])


def _tpu_vm(verb: str, tpu: TpuSlice, *rest: str) -> list[str]:
  return [GCLOUD, "compute", "tpus", "tpu-vm", verb, *rest[:1], *tpu.location_flags(), *rest[1:]]


def create_command(tpu: TpuSlice, *, spot: bool = False, preemptible: bool = False) -> list[str]:
  """`gcloud compute tpus tpu-vm create`; Spot or (v4 only) preemptible capacity on request."""
  if spot and preemptible:
    raise LaunchError("choose one of --spot and --preemptible (Spot VMs supersede preemptible ones)")
  if preemptible and tpu.generation != "v4":
    raise LaunchError(f"preemptible TPUs are not offered for {tpu.generation}; use --spot")
  capacity = ["--spot"] if spot else ["--preemptible"] if preemptible else []
  return _tpu_vm("create", tpu, tpu.name, f"--accelerator-type={tpu.accelerator_type}",
                 f"--version={tpu.runtime_version}", *capacity)


def ssh_command(tpu: TpuSlice, remote_command: str, worker: str = "all") -> list[str]:
  """Runs a shell command on one worker or on all of them at once (`--worker=all`)."""
  return _tpu_vm("ssh", tpu, tpu.name, f"--worker={worker}", f"--command={remote_command}")


def scp_command(tpu: TpuSlice, sources: Sequence[str], destination: str, worker: str = "all") -> list[str]:
  """Copies local files or folders to `destination` (relative to the home folder) on the workers."""
  return [GCLOUD, "compute", "tpus", "tpu-vm", "scp", *sources, f"{tpu.name}:{destination}",
          *tpu.location_flags(), f"--worker={worker}", "--recurse"]


def _existing(path: str, what: str) -> str:
  if not os.path.exists(path):
    raise LaunchError(f"{what} {path!r} does not exist (relative to {os.getcwd()})")
  return path


def setup_commands(tpu: TpuSlice, *, git_url: str = "", git_ref: str = "main", sdist: str = "",
                   gin_files: Sequence[str] = (), python: str = "python3") -> list[list[str]]:
  """Installs `xprompt_jax[tpu]` on every worker (from git or a local sdist/wheel) and copies gin files."""
  if bool(git_url) == bool(sdist):
    raise LaunchError("setup needs exactly one package source: --git_url (with --git_ref) or --sdist "
                      "(from `python -m build --sdist`)")
  commands = []
  if sdist:
    remote = f"/tmp/{os.path.basename(_existing(sdist, 'sdist'))}"
    commands.append(scp_command(tpu, [sdist], remote))
    requirement = f"xprompt_jax[tpu] @ file://{remote}"
  else:
    requirement = f"xprompt_jax[tpu] @ git+{git_url}@{git_ref}"
  install = (f"mkdir -p {REMOTE_GIN_DIR} && {shlex.quote(python)} -m pip install --upgrade "
             f"{shlex.quote(requirement)} -f {LIBTPU_FIND_LINKS}")
  commands.append(ssh_command(tpu, install))
  if gin_files:
    commands.append(scp_command(tpu, [_existing(f, "gin file") for f in gin_files], f"{REMOTE_GIN_DIR}/"))
  return commands


@dataclasses.dataclass(frozen=True)
class TrainJob:
  """What `run` starts on every worker: `python -m xprompt_jax.cli train` with these gin files and bindings.

  `gin_files` are names under the shipped gin/ folder (e.g. `recipes/lester.gin`) or files copied by `setup`
  (looked up in the workers' `xprompt_gin/`). `gin_bindings` are `NAME=VALUE` strings, passed as `--gin.NAME=VALUE`.
  """

  gin_files: tuple[str, ...]
  model_dir: str
  gin_bindings: tuple[str, ...] = ()
  extra_flags: tuple[str, ...] = ()
  log_file: str = DEFAULT_LOG_FILE
  python: str = "python3"
  env: tuple[str, ...] = ()  # NAME=VALUE environment variables for the trainer (e.g. TFDS_DATA_DIR=gs://...).
  command: str = "train"  # One of COMMANDS: `table` takes the gs:// folder as its --results_dir.

  def __post_init__(self):
    if self.command not in COMMANDS:
      raise LaunchError(f"--command={self.command!r} is not one of {', '.join(COMMANDS)}")
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
            f"--gin_search_paths={REMOTE_GIN_DIR}", f"{folder}={self.model_dir}", "--multihost",
            *[f"--gin.{b.split('=', 1)[0].strip()}={b.split('=', 1)[1]}" for b in self.gin_bindings],
            *self.extra_flags]


def run_command(tpu: TpuSlice, job: TrainJob) -> list[str]:
  """Starts training on all workers at once, detached (nohup), logging to `job.log_file` in each home folder.

  Every worker runs the same program; `--multihost` makes the trainer call `jax.distributed.initialize()`, which
  on Cloud TPU VMs discovers the coordinator and process ids from the TPU metadata.
  """
  argv = (["env", *job.env] if job.env else []) + job.train_argv()
  remote = f"nohup {shlex.join(argv)} > {shlex.quote(job.log_file)} 2>&1 < /dev/null &"
  return ssh_command(tpu, remote)


def logs_command(tpu: TpuSlice, log_file: str = DEFAULT_LOG_FILE, worker: str = "0") -> list[str]:
  """Streams one worker's training log (worker 0 writes the summaries)."""
  return ssh_command(tpu, f"tail -n +1 -F {shlex.quote(log_file)}", worker=worker)


def stop_command(tpu: TpuSlice) -> list[str]:
  """Stops the xprompt-jax processes (any command) on all workers (the bracket keeps pkill from matching its own shell)."""
  return ssh_command(tpu, "pkill -f '[x]prompt_jax.cli ' || true")


def describe_command(tpu: TpuSlice) -> list[str]:
  return _tpu_vm("describe", tpu, tpu.name)


def delete_command(tpu: TpuSlice) -> list[str]:
  return _tpu_vm("delete", tpu, tpu.name, "--quiet")


def _queued(verb: str, tpu: TpuSlice, queued_id: str, *rest: str) -> list[str]:
  return [GCLOUD, "compute", "tpus", "queued-resources", verb, queued_id or f"{tpu.name}-qr",
          *tpu.location_flags(), *rest]


def queued_create_command(tpu: TpuSlice, *, queued_id: str = "", spot: bool = False,
                          valid_until_duration: str = "") -> list[str]:
  """Requests the slice as a queued resource (node id = `tpu.name`); it is created once capacity exists."""
  extra = (["--spot"] if spot else []) + ([f"--valid-until-duration={valid_until_duration}"]
                                          if valid_until_duration else [])
  return _queued("create", tpu, queued_id, f"--node-id={tpu.name}", f"--accelerator-type={tpu.accelerator_type}",
                 f"--runtime-version={tpu.runtime_version}", *extra)


def queued_describe_command(tpu: TpuSlice, *, queued_id: str = "") -> list[str]:
  return _queued("describe", tpu, queued_id)


def queued_delete_command(tpu: TpuSlice, *, queued_id: str = "") -> list[str]:
  """Deletes the request and (`--force`) the node it provisioned."""
  return _queued("delete", tpu, queued_id, "--force", "--quiet")


@dataclasses.dataclass(frozen=True)
class LaunchOptions:
  """Everything the steps besides the slice itself need (filled from the command-line flags)."""

  spot: bool = False
  preemptible: bool = False
  git_url: str = ""
  git_ref: str = "main"
  sdist: str = ""
  copy_gin: tuple[str, ...] = ()
  gin_files: tuple[str, ...] = ()
  model_dir: str = ""
  gin_bindings: tuple[str, ...] = ()
  extra_train_flags: tuple[str, ...] = ()
  log_file: str = DEFAULT_LOG_FILE
  python: str = "python3"
  env: tuple[str, ...] = ()
  queued_id: str = ""
  valid_until_duration: str = ""
  command: str = "train"

  def job(self) -> TrainJob:
    return TrainJob(tuple(self.gin_files), self.model_dir, tuple(self.gin_bindings), tuple(self.extra_train_flags),
                    self.log_file, self.python, tuple(self.env), self.command)


STEPS: dict[str, Callable[[TpuSlice, LaunchOptions], list[list[str]]]] = {
    "create": lambda t, o: [create_command(t, spot=o.spot, preemptible=o.preemptible)],
    "setup": lambda t, o: setup_commands(t, git_url=o.git_url, git_ref=o.git_ref, sdist=o.sdist,
                                         gin_files=o.copy_gin, python=o.python),
    "run": lambda t, o: [run_command(t, o.job())],
    "logs": lambda t, o: [logs_command(t, o.log_file)],
    "stop": lambda t, o: [stop_command(t)],
    "describe": lambda t, o: [describe_command(t)],
    "delete": lambda t, o: [delete_command(t)],
    "queued-create": lambda t, o: [queued_create_command(t, queued_id=o.queued_id, spot=o.spot,
                                                         valid_until_duration=o.valid_until_duration)],
    "queued-describe": lambda t, o: [queued_describe_command(t, queued_id=o.queued_id)],
    "queued-delete": lambda t, o: [queued_delete_command(t, queued_id=o.queued_id)],
}


def plan(steps: Sequence[str], tpu: TpuSlice, options: LaunchOptions = LaunchOptions()) -> list[list[str]]:
  """All commands of `steps`, in order (every step is validated before anything runs)."""
  if not steps:
    raise LaunchError(f"no step given; steps: {', '.join(STEPS)}")
  unknown = [s for s in steps if s not in STEPS]
  if unknown:
    raise LaunchError(f"unknown step(s) {unknown}; steps: {', '.join(STEPS)}")
  return [command for step in steps for command in STEPS[step](tpu, options)]


def format_commands(commands: Sequence[Sequence[str]]) -> str:
  """One shell-quoted command per line."""
  return "\n".join(shlex.join(c) for c in commands)


def execute(commands: Sequence[Sequence[str]], *, dry_run: bool, runner=subprocess.run, out=None) -> None:
  """Prints (`dry_run`) or runs the commands in order, stopping at the first failure with a clear error."""
  if dry_run:
    print(format_commands(commands), file=out or sys.stdout)
    return
  if shutil.which(GCLOUD) is None:
    raise LaunchError("`gcloud` was not found on PATH: install the Google Cloud CLI "
                      "(https://cloud.google.com/sdk/docs/install), run `gcloud auth login`, or pass --dry_run "
                      "to print the commands instead")
  for command in commands:
    print(f"+ {shlex.join(command)}", file=sys.stderr, flush=True)
    status = runner(list(command)).returncode
    if status != 0:
      raise LaunchError(f"command failed with exit status {status}: {shlex.join(command)}")


def rewrite_gin_flags(argv: Sequence[str]) -> list[str]:
  """`--gin.NAME=VALUE` (as the trainer accepts) becomes `--gin_bindings=NAME=VALUE` for this launcher's flags."""
  return [f"--gin_bindings={a[len('--gin.'):]}" if a.startswith("--gin.") else a for a in argv]


def _define_flags(flags) -> None:
  flags.DEFINE_string("name", None, "TPU VM (node) name.")
  flags.DEFINE_string("zone", None, "Zone, e.g. us-central2-b (v4), us-west4-a (v5litepod).")
  flags.DEFINE_string("project", "", "Project id; empty = gcloud's configured core/project.")
  flags.DEFINE_string("accelerator_type", "v4-8", "v4-N, v5p-N (TensorCores) or v5litepod-N, v6e-N (chips).")
  flags.DEFINE_string("runtime_version", "", "TPU software version; empty = a default for the generation.")
  flags.DEFINE_bool("spot", False, "Spot capacity (create, queued-create): cheaper, can be preempted.")
  flags.DEFINE_bool("preemptible", False, "Preemptible capacity (create; v4 only).")
  flags.DEFINE_string("git_url", "", "setup: install from this git repository...")
  flags.DEFINE_string("git_ref", "main", "...at this branch, tag or commit.")
  flags.DEFINE_string("sdist", "", "setup: or install this local sdist/wheel (copied to every worker).")
  flags.DEFINE_list("copy_gin", [], "setup: local gin files/folders copied to ~/xprompt_gin on every worker.")
  flags.DEFINE_multi_string("gin_file", [], "run: gin files (shipped names like recipes/lester.gin, or copied).")
  flags.DEFINE_multi_string("gin_bindings", [], "run: NAME=VALUE gin bindings; `--gin.NAME=VALUE` works too.")
  flags.DEFINE_enum("command", "train", COMMANDS, "run: the xprompt-jax command the workers run (`table`: a whole "
                    "paper table, --model_dir being its --results_dir; give --train_flag=--table=NAME).")
  flags.DEFINE_string("model_dir", "", "run: gs:// folder for checkpoints and summaries (the table's results).")
  flags.DEFINE_multi_string("train_flag", [], "run: extra flag passed verbatim to `xprompt-jax train`.")
  flags.DEFINE_multi_string("env", [], "run: NAME=VALUE environment variable for the trainer (repeatable).")
  flags.DEFINE_string("log_file", DEFAULT_LOG_FILE, "run/logs: log file in each worker's home folder.")
  flags.DEFINE_string("python", "python3", "Python interpreter on the workers.")
  flags.DEFINE_string("queued_id", "", "queued-*: queued-resource id; empty = NAME-qr.")
  flags.DEFINE_string("valid_until_duration", "", "queued-create: give up after this long, e.g. 6h.")
  flags.DEFINE_bool("dry_run", False, "Print the gcloud commands (one per line) instead of running them.")
  flags.mark_flags_as_required(["name", "zone"])


def main(argv: Sequence[str]) -> int:
  from absl import flags
  f = flags.FLAGS
  try:
    tpu = TpuSlice(f.name, f.zone, f.accelerator_type, f.project, f.runtime_version)
    options = LaunchOptions(
        spot=f.spot, preemptible=f.preemptible, git_url=f.git_url, git_ref=f.git_ref, sdist=f.sdist,
        copy_gin=tuple(f.copy_gin), gin_files=tuple(f.gin_file), model_dir=f.model_dir,
        gin_bindings=tuple(f.gin_bindings), extra_train_flags=tuple(f.train_flag), log_file=f.log_file,
        python=f.python, env=tuple(f.env), queued_id=f.queued_id, valid_until_duration=f.valid_until_duration,
        command=f.command)
    execute(plan(list(argv[1:]), tpu, options), dry_run=f.dry_run)
  except LaunchError as e:
    print(f"tpu_vm: {e}", file=sys.stderr)
    return 2
  return 0


def run(argv: Optional[Sequence[str]] = None) -> None:
  """Entry point: `python -m launch.tpu_vm STEP [STEP ...] --flags`."""
  from absl import app, flags
  _define_flags(flags)
  app.run(main, argv=list(sys.argv if argv is None else argv),
          flags_parser=lambda a: flags.FLAGS(rewrite_gin_flags(a)))


if __name__ == "__main__":
  run()
