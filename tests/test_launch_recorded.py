"""The launcher's gcloud command sequences per TPU generation (v4, v5e, v5p, v6e, and a v5p multislice job), as
docs/launch.md runs them, against recorded expected sequences in tests/launch_recorded/, and every command
against the synopsis of the gcloud reference pages (cloud.google.com/sdk/gcloud/reference/compute/tpus/...):
which flags each verb takes, which it needs, and how many positional arguments.

A deliberate change of a command line is recorded with
`XPROMPT_RECORD_LAUNCH=1 pytest tests/test_launch_recorded.py` (then read the diff of tests/launch_recorded/
before committing it)."""
import os
import re
import pathlib
import shlex
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
RECORDED = pathlib.Path(__file__).with_name("launch_recorded")
COMMIT = "0123456789abcdef0123456789abcdef01234567"
JOB = ["--git_url=https://github.com/ORG/xprompt_jax", f"--git_ref={COMMIT}", "--gin_file=models/t5_1_1_xxl.gin",
       "--gin_file=recipes/lester.gin", "--gin.MeshConfig.model=8", "--model_dir=gs://my-bucket/runs/lester_xxl",
       "--run_id=r1"]
SCENARIOS = {  # name: (accelerator type, zone, steps, extra flags)
    "v4": ("v4-32", "us-central2-b", "create setup preflight run logs stop delete", ["--preemptible"]),
    "v5e": ("v5litepod-16", "us-west4-a", "create setup preflight run logs stop delete", ["--spot"]),
    "v5p": ("v5p-32", "us-east5-a", "queued-create queued-wait setup preflight run logs stop queued-delete",
            ["--spot", "--valid_until_duration=6h"]),
    "v6e": ("v6e-16", "us-east1-d", "create setup preflight run logs stop delete",
            ["--spot", "--internal_ips", "--network=my-vpc", "--subnetwork=my-subnet",
             "--service_account=tpu@my-proj.iam.gserviceaccount.com", "--scopes=cloud-platform"]),
    "v5p_multislice": ("v5p-32", "us-east5-a", "queued-create queued-wait setup preflight run logs stop queued-delete",
                       ["--spot", "--node_count=2"]),
    "v5e_supervise": ("v5litepod-16", "us-west4-a", "supervise", ["--spot", "--poll_s=120"]),
}

# From the SYNOPSIS of each reference page: the flags the launcher may pass (a subset of what gcloud accepts; the
# global --project, --format and --quiet included), the flags gcloud requires, and the positional arguments.
SYNOPSIS = {
    ("tpu-vm", "create"): ({"--zone", "--project", "--accelerator-type", "--version", "--spot", "--preemptible",
                            "--network", "--subnetwork", "--internal-ips", "--service-account", "--scopes"},
                           {"--zone", "--accelerator-type", "--version"}, 1),
    ("tpu-vm", "ssh"): ({"--zone", "--project", "--worker", "--command", "--internal-ip"}, {"--zone"}, 1),
    ("tpu-vm", "scp"): ({"--zone", "--project", "--worker", "--recurse", "--internal-ip"}, {"--zone"}, 2),
    ("tpu-vm", "describe"): ({"--zone", "--project", "--format"}, {"--zone"}, 1),
    ("tpu-vm", "delete"): ({"--zone", "--project", "--quiet"}, {"--zone"}, 1),
    ("queued-resources", "create"): ({"--zone", "--project", "--node-id", "--node-count", "--node-prefix",
                                      "--accelerator-type", "--runtime-version", "--spot", "--valid-until-duration",
                                      "--network", "--subnetwork", "--internal-ips", "--service-account",
                                      "--scopes"}, {"--zone", "--runtime-version", "--accelerator-type"}, 1),
    ("queued-resources", "describe"): ({"--zone", "--project", "--format"}, {"--zone"}, 1),
    ("queued-resources", "delete"): ({"--zone", "--project", "--force", "--quiet"}, {"--zone"}, 1),
    ("queued-resources", "ssh"): ({"--zone", "--project", "--node", "--worker", "--command", "--internal-ip"},
                                  {"--zone"}, 1),
    ("queued-resources", "scp"): ({"--zone", "--project", "--node", "--worker", "--recurse", "--internal-ip"},
                                  {"--zone"}, 2),
}


def _dry_run(name):
  accelerator, zone, steps, extra = SCENARIOS[name]
  result = subprocess.run([sys.executable, "-m", "launch.tpu_vm", *steps.split(), f"--name=pt-{name.split('_')[0]}",
                           f"--zone={zone}", f"--accelerator_type={accelerator}", *JOB, *extra, "--dry_run"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  return result.stdout


def _check_syntax(argv):
  assert argv[:3] == ["gcloud", "compute", "tpus"], argv
  group, verb, rest = argv[3], argv[4], argv[5:]
  allowed, required, positionals = SYNOPSIS[(group, verb)]
  flags = {a.split("=", 1)[0] for a in rest if a.startswith("--")}
  args = [a for a in rest if not a.startswith("--")]
  assert flags <= allowed, f"{group} {verb}: {sorted(flags - allowed)} not in the gcloud synopsis"
  assert required <= flags, f"{group} {verb}: missing {sorted(required - flags)}"
  assert len(args) == positionals if positionals == 1 else len(args) >= positionals, argv
  if verb == "scp":
    assert ":" in args[-1] and not any(":" in a for a in args[:-1]), argv  # Local sources, remote NODE:DEST.
  if verb == "ssh":
    assert any(a.startswith("--command=") for a in rest), argv
    assert any(re.fullmatch(r"--worker=(all|\d+)", a) for a in rest), argv  # gcloud: all, or a worker index.
  if (group, verb) == ("queued-resources", "create"):  # (--node-id | --node-count --node-prefix)
    assert ("--node-id" in flags) != ({"--node-count", "--node-prefix"} <= flags), argv
  assert all("=" in a for a in rest if a.startswith("--") and a.split("=")[0] not in
             {"--spot", "--preemptible", "--internal-ips", "--internal-ip", "--recurse", "--force", "--quiet"}), argv


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_command_sequence_matches_the_recording_and_the_gcloud_synopsis(name):
  text = _dry_run(name)
  path = RECORDED / f"{name}.sh"
  if os.environ.get("XPROMPT_RECORD_LAUNCH"):
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
  assert path.exists(), f"{path} is not recorded: XPROMPT_RECORD_LAUNCH=1 pytest {__file__}"
  assert text == path.read_text(), f"the {name} launch differs from {path}"
  commands = [shlex.split(line) for line in text.splitlines() if line and not line.startswith("#")]
  for line in text.splitlines():
    if line.startswith("#   gcloud") and not line.endswith(" ..."):  # supervise's polled commands.
      commands.append(shlex.split(line[4:]))
  assert commands
  for argv in commands:
    _check_syntax(argv)


def test_recordings_hold_what_each_generation_needs():
  """What the recordings must say, read by eye once and pinned here: the image per generation, Python 3.11 on
  every worker, the package pinned to the commit, multislice through queued-resources ssh on every node."""
  images = {"v4": "--version=tpu-ubuntu2204-base", "v5e": "--version=v2-alpha-tpuv5-lite",
            "v5p": "--runtime-version=v2-alpha-tpuv5", "v6e": "--version=v2-alpha-tpuv6e"}
  for name, image in images.items():
    text = (RECORDED / f"{name}.sh").read_text()
    assert image in text and "--python 3.11 xprompt_venv" in text
    assert f"git+https://github.com/ORG/xprompt_jax@{COMMIT}" in text
  multi = (RECORDED / "v5p_multislice.sh").read_text()
  assert "--node-count=2 --node-prefix=pt-v5p" in multi and "--gin.MeshConfig.dcn_data=2" in multi
  assert all(" --node=all --worker=all " in line for line in multi.splitlines() if " ssh " in line)
  assert "tpu-vm" not in multi


def _documented_launches():
  """Every `xprompt-jax launch ...` command of docs/launch.md (continuation lines joined, `$L` expanded)."""
  text = (REPO / "docs" / "launch.md").read_text()
  blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
  commands = []
  for block in blocks:
    variables = {}
    for line in block.replace("\\\n", " ").splitlines():
      line = line.split("  # ")[0].strip()
      m = re.fullmatch(r'(\w+)="(.*)"', line)
      if m:
        variables[m.group(1)] = m.group(2)
        continue
      for name, value in variables.items():
        line = line.replace(f"${name}", value)
      if line.startswith("xprompt-jax launch "):
        commands.append(shlex.split(line)[2:])
  return commands


def test_every_launch_in_docs_runs_as_a_dry_run_and_prints_documented_gcloud_syntax(tmp_path):
  commands = _documented_launches()
  assert len(commands) >= 20, commands
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  for argv in commands:
    argv = argv + ([] if "--dry_run" in argv else ["--dry_run"])
    for a in argv:  # The user's own files the page names (gin files to copy, an sdist): here, empty ones.
      if a.startswith(("--copy_gin=", "--sdist=")):
        path = tmp_path / a.split("=", 1)[1]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    result = subprocess.run([sys.executable, "-m", "launch.tpu_vm", *argv], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60, env=env)
    assert result.returncode == 0, (argv, result.stderr)
    lines = [line for line in result.stdout.splitlines() if line and not line.startswith("#")]
    assert lines, argv
    for line in lines:
      _check_syntax(shlex.split(line))
