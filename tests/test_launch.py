"""Cloud TPU launcher: exact gcloud command lines for every step (no cloud is contacted), validation, dry runs.
(The worker scripts, retries and cleanup against a fake gcloud: tests/test_launch_remote.py.)"""
import dataclasses
import pathlib
import shlex
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from launch import gcloud, remote  # noqa: E402
from launch import slices  # noqa: E402
from launch import tpu_vm as tv  # noqa: E402
from launch.executor import Step, execute  # noqa: E402

V4 = slices.TpuSlice("pt-v4", "us-central2-b", "v4-8", project="my-proj")
V5E = slices.TpuSlice("pt-v5e", "us-west4-a", "v5litepod-16")
TPU_VM = ["gcloud", "compute", "tpus", "tpu-vm"]
QR = ["gcloud", "compute", "tpus", "queued-resources"]
V4_LOC = ["--zone=us-central2-b", "--project=my-proj"]
V5E_LOC = ["--zone=us-west4-a"]
INSTALL = remote.install_script("xprompt_jax[tpu] @ git+https://github.com/org/xprompt_jax@v0.1")
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_runtime_versions_default_per_generation():
  assert V4.runtime_version == "tpu-ubuntu2204-base"
  assert V5E.runtime_version == "v2-alpha-tpuv5-lite"
  assert slices.TpuSlice("a", "z", "v5p-16").runtime_version == "v2-alpha-tpuv5"
  assert slices.TpuSlice("a", "z", "v6e-8").runtime_version == "v2-alpha-tpuv6e"
  assert slices.TpuSlice("a", "z", "v4-128", runtime_version="tpu-vm-v4-base").runtime_version == "tpu-vm-v4-base"
  assert slices.parse_accelerator_type("v4-128") == ("v4", 128)
  assert slices.parse_accelerator_type("v5litepod-256") == ("v5litepod", 256)


def test_create_commands():
  assert gcloud.create_command(V4) == TPU_VM + ["create", "pt-v4", *V4_LOC, "--accelerator-type=v4-8",
                                            "--version=tpu-ubuntu2204-base"]
  assert gcloud.create_command(V4, preemptible=True) == TPU_VM + [
      "create", "pt-v4", *V4_LOC, "--accelerator-type=v4-8", "--version=tpu-ubuntu2204-base", "--preemptible"]
  assert gcloud.create_command(V5E, spot=True) == TPU_VM + [
      "create", "pt-v5e", *V5E_LOC, "--accelerator-type=v5litepod-16", "--version=v2-alpha-tpuv5-lite", "--spot"]
  assert gcloud.create_command(V5E) == TPU_VM + [
      "create", "pt-v5e", *V5E_LOC, "--accelerator-type=v5litepod-16", "--version=v2-alpha-tpuv5-lite"]
  with pytest.raises(slices.LaunchError, match="choose one of --spot and --preemptible"):
    gcloud.create_command(V4, spot=True, preemptible=True)
  with pytest.raises(slices.LaunchError, match="preemptible TPUs are not offered for v5litepod; use --spot"):
    gcloud.create_command(V5E, preemptible=True)


@pytest.mark.parametrize("accelerator,message", [
    ("v3-8", r"generation 'v3' is not supported; supported: v4-N"),
    ("v5e-16", r"gcloud calls this generation 'v5litepod'; use v5litepod-16"),
    ("v4-12", r"v4 sizes count TensorCores and must be a multiple of 8 between 8 and 4096"),
    ("v4-8192", r"multiple of 8 between 8 and 4096"),
    ("v5p-4", r"v5p sizes count TensorCores"),
    ("v5litepod-12", r"v5litepod slices have 1, 4, 8, 16, 32, 64, 128, 256 chips"),
    ("tpu", r"'tpu' is not of the form GENERATION-SIZE"),
    ("", r"'' is not of the form GENERATION-SIZE"),
])
def test_invalid_accelerator_types_are_rejected(accelerator, message):
  with pytest.raises(slices.LaunchError, match=message):
    slices.TpuSlice("pt", "us-central2-b", accelerator)


def test_invalid_names_and_zone():
  with pytest.raises(slices.LaunchError, match="TPU name 'My_TPU' must be 1-63 lowercase letters"):
    slices.TpuSlice("My_TPU", "us-central2-b")
  with pytest.raises(slices.LaunchError, match="a zone is required"):
    slices.TpuSlice("pt", "")


def test_setup_installs_into_a_python_311_venv_pinned_to_the_launching_commit():
  steps = tv.setup_commands(V4, git_url="https://github.com/org/xprompt_jax", commit=lambda: COMMIT)
  pinned = remote.install_script(f"xprompt_jax[tpu] @ git+https://github.com/org/xprompt_jax@{COMMIT}")
  assert steps == [Step(tuple(TPU_VM + ["ssh", "pt-v4", *V4_LOC, "--worker=all", f"--command={pinned}"]), retry=True)]
  words = pinned.split(" && ")
  assert words[1] == "(test -x .local/bin/uv || curl -LsSf https://astral.sh/uv/install.sh | env " \
                     "UV_INSTALL_DIR=$HOME/.local/bin INSTALLER_NO_MODIFY_PATH=1 sh)"
  assert ".local/bin/uv venv --allow-existing --python 3.11 xprompt_venv" in words
  assert "pip install" not in pinned.replace("uv pip install", "")  # The system Python's pip is never used.
  # An explicit ref wins; outside a git checkout one is required.
  assert tv.setup_commands(V4, git_url="https://github.com/org/xprompt_jax", git_ref="v0.1") == [
      Step(tuple(TPU_VM + ["ssh", "pt-v4", *V4_LOC, "--worker=all", f"--command={INSTALL}"]), retry=True)]
  with pytest.raises(slices.LaunchError, match="needs --git_ref=COMMIT here"):
    tv.setup_commands(V4, git_url="https://github.com/org/xprompt_jax", commit=lambda: "")
  assert tv.launching_commit(str(REPO)) == subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"],
                                                          capture_output=True, text=True).stdout.strip()


def test_setup_from_sdist_with_gin_files(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "dist").mkdir()
  (tmp_path / "dist" / "xprompt_jax-0.1.0.tar.gz").write_bytes(b"")
  (tmp_path / "my.gin").write_text("include 'recipes/lester.gin'\n")
  steps = tv.setup_commands(V5E, sdist="dist/xprompt_jax-0.1.0.tar.gz", gin_files=["my.gin"])
  install = remote.install_script("xprompt_jax[tpu] @ file:///tmp/xprompt_jax-0.1.0.tar.gz")
  assert [list(s.command) for s in steps] == [
      TPU_VM + ["scp", "dist/xprompt_jax-0.1.0.tar.gz", "pt-v5e:/tmp/xprompt_jax-0.1.0.tar.gz", *V5E_LOC,
                "--worker=all", "--recurse"],
      TPU_VM + ["ssh", "pt-v5e", *V5E_LOC, "--worker=all", f"--command={install}"],
      TPU_VM + ["scp", "my.gin", "pt-v5e:xprompt_gin/", *V5E_LOC, "--worker=all", "--recurse"],
  ]
  assert all(s.retry for s in steps)
  with pytest.raises(slices.LaunchError, match="gin file 'missing.gin' does not exist"):
    tv.setup_commands(V5E, sdist="dist/xprompt_jax-0.1.0.tar.gz", gin_files=["missing.gin"])
  with pytest.raises(slices.LaunchError, match="sdist 'nope.tar.gz' does not exist"):
    tv.setup_commands(V5E, sdist="nope.tar.gz")
  with pytest.raises(slices.LaunchError, match="exactly one package source"):
    tv.setup_commands(V5E)
  with pytest.raises(slices.LaunchError, match="exactly one package source"):
    tv.setup_commands(V5E, git_url="https://x", sdist="dist/xprompt_jax-0.1.0.tar.gz")


def test_network_flags_on_create_ssh_and_scp():
  net = slices.Network(internal_ips=True, network="vpc", subnetwork="sub", service_account="sa@p.iam",
                       scopes=("cloud-platform",))
  assert gcloud.create_command(V4, spot=True, network=net)[-6:] == [
      "--spot", "--network=vpc", "--subnetwork=sub", "--internal-ips", "--service-account=sa@p.iam",
      "--scopes=cloud-platform"]
  assert gcloud.ssh_command(V4, "true", network=net) == TPU_VM + ["ssh", "pt-v4", *V4_LOC, "--worker=all",
                                                                  "--internal-ip", "--command=true"]
  assert "--internal-ip" in gcloud.scp_command(V4, ["a"], "b", network=net)
  assert gcloud.queued_create_command(V4, network=net)[-5:] == net.create_flags()


def test_chips_per_host_and_hosts():
  shapes = {"v4-8": (4, 1), "v4-32": (4, 4), "v5p-16": (4, 2), "v5litepod-1": (1, 1), "v5litepod-8": (8, 1),
            "v5litepod-16": (4, 4), "v6e-4": (4, 1), "v6e-256": (4, 64)}
  for accelerator, want in shapes.items():
    tpu = slices.TpuSlice("a", "z", accelerator)
    assert (tpu.chips_per_host, tpu.hosts) == want, accelerator
  assert "want 4 tpu" in tv.preflight_command(V4)[-1]


JOB = tv.TrainJob(("models/t5_1_1_xxl.gin", "recipes/lester.gin"), "gs://bucket/runs/lester_xxl",
                  ("MeshConfig.model=8", "MIXTURE_OR_TASK_NAME='super_glue_boolq_v102'"))
TRAIN_ARGV = ["xprompt_venv/bin/python", "-m", "xprompt_jax.cli", "train", "--gin_file=models/t5_1_1_xxl.gin",
              "--gin_file=recipes/lester.gin", "--gin_search_paths=xprompt_gin",
              "--model_dir=gs://bucket/runs/lester_xxl", "--multihost", "--gin.MeshConfig.model=8",
              "--gin.MIXTURE_OR_TASK_NAME='super_glue_boolq_v102'"]


@pytest.mark.parametrize("tpu,loc", [(V4, V4_LOC), (V5E, V5E_LOC)])
def test_run_command_starts_all_workers_detached(tpu, loc):
  command = tv.run_command(tpu, JOB, "r1")
  assert command[:-1] == TPU_VM + ["ssh", tpu.name, *loc, "--worker=all"]
  script = command[-1][len("--command="):]
  assert script == remote.run_script(TRAIN_ARGV, JOB.model_dir, "r1")
  assert "gs://bucket/runs/lester_xxl/logs/r1.worker$w.$h.log" in script


def test_train_job_validation():
  with pytest.raises(slices.LaunchError, match="at least one --gin_file"):
    tv.TrainJob((), "gs://b/x")
  with pytest.raises(slices.LaunchError, match=r"--model_dir='/tmp/run' must be a gs:// path"):
    tv.TrainJob(("recipes/lester.gin",), "/tmp/run")
  assert tv.TrainJob(("paper/xprompt_xl.gin",), "/mnt/bucket/xprompt_xl", command="table").model_dir == \
      "/mnt/bucket/xprompt_xl"  # A gcsfuse-mounted bucket folder (the XPrompt / MPT tables).
  with pytest.raises(slices.LaunchError, match=r"gin binding 'steps' is not NAME=VALUE"):
    tv.TrainJob(("recipes/lester.gin",), "gs://b/x", ("steps",))
  with pytest.raises(slices.LaunchError, match=r"environment variable 'TFDS DATA=1' is not NAME=VALUE"):
    tv.TrainJob(("recipes/lester.gin",), "gs://b/x", env=("TFDS DATA=1",))
  # XPrompt and MPT write stage files with local I/O: refused here, not on the workers after setup.
  for command, flags in (("xprompt", ()), ("table", ("--table=mpt_ablations",))):
    with pytest.raises(slices.LaunchError, match=r"--model_dir=gs://b/x: .*refuses gs:// .* gcsfuse"):
      tv.TrainJob(("paper/xprompt_xl.gin",), "gs://b/x", extra_flags=flags, command=command)
  tv.TrainJob(("paper/prompt_tuning_xxl.gin",), "gs://b/x", extra_flags=("--table=lester_superglue",),
              command="table")


def test_a_gin_file_that_is_neither_shipped_nor_copied_is_warned_about(capsys):
  tv.check_gin_names(tv.TrainJob(("models/t5_1_1_xxl.gin", "models/nope.gin", "mine.gin"), "gs://b/x"),
                     copied=("configs/mine.gin",))
  err = capsys.readouterr().err
  assert "--gin_file=models/nope.gin is not a shipped gin file" in err and "t5_1_1_xxl" not in err
  assert "mine.gin" not in err


@pytest.mark.parametrize("tpu,loc", [(V4, V4_LOC), (V5E, V5E_LOC)])
def test_logs_stop_describe_delete(tpu, loc):
  assert tv.logs_command(tpu, worker="2", lines=5) == TPU_VM + [
      "ssh", tpu.name, *loc, "--worker=2", f"--command={remote.logs_script('', lines=5)}"]
  assert tv.stop_command(tpu, 30) == TPU_VM + ["ssh", tpu.name, *loc, "--worker=all",
                                               f"--command={remote.stop_script(30)}"]
  assert gcloud.describe_command(tpu) == TPU_VM + ["describe", tpu.name, *loc]
  assert gcloud.delete_command(tpu) == TPU_VM + ["delete", tpu.name, *loc, "--quiet"]


def test_queued_resources():
  assert gcloud.queued_create_command(V4) == QR + ["create", "pt-v4-qr", *V4_LOC, "--node-id=pt-v4",
                                                   "--accelerator-type=v4-8", "--runtime-version=tpu-ubuntu2204-base"]
  q1 = dataclasses.replace(V5E, queued_id="q1")
  assert gcloud.queued_create_command(q1, spot=True, valid_until_duration="6h") == QR + [
      "create", "q1", *V5E_LOC, "--node-id=pt-v5e", "--accelerator-type=v5litepod-16",
      "--runtime-version=v2-alpha-tpuv5-lite", "--spot", "--valid-until-duration=6h"]
  assert gcloud.queued_describe_command(q1) == QR + ["describe", "q1", *V5E_LOC]
  assert gcloud.queued_describe_command(q1, state_only=True)[-1] == "--format=value(state.state)"
  assert gcloud.queued_delete_command(V4) == QR + ["delete", "pt-v4-qr", *V4_LOC, "--force", "--quiet"]


def test_multislice_is_a_queued_resource_reached_through_queued_resources_ssh_and_scp():
  two = slices.TpuSlice("ms", "us-east5-a", "v5p-256", node_count=2)
  assert two.hosts == 32 and two.multislice
  assert gcloud.queued_create_command(two, spot=True) == QR + [
      "create", "ms-qr", "--zone=us-east5-a", "--node-count=2", "--node-prefix=ms", "--accelerator-type=v5p-256",
      "--runtime-version=v2-alpha-tpuv5", "--spot"]
  assert gcloud.ssh_command(two, "hostname") == QR + ["ssh", "ms-qr", "--zone=us-east5-a", "--node=all",
                                                      "--worker=all", "--command=hostname"]
  assert gcloud.scp_command(two, ["a.gin"], "xprompt_gin/") == QR + [
      "scp", "a.gin", "ms-qr:xprompt_gin/", "--zone=us-east5-a", "--node=all", "--worker=all", "--recurse"]
  assert gcloud.describe_command(two) == QR + ["describe", "ms-qr", "--zone=us-east5-a"]
  with pytest.raises(slices.LaunchError, match="only be requested as a queued resource"):
    gcloud.create_command(two)
  with pytest.raises(slices.LaunchError, match="deleted with their request"):
    gcloud.delete_command(two)
  script = tv.run_command(two, JOB, "r1")[-1]
  assert "--gin.MeshConfig.dcn_data=2" in script  # The mesh spans both slices.
  assert tv.run_command(two, dataclasses.replace(JOB, gin_bindings=("MeshConfig.dcn_data=2",)), "r1")[-1] == \
      tv.run_command(two, dataclasses.replace(JOB, gin_bindings=()), "r1")[-1]
  with pytest.raises(slices.LaunchError, match=r"--gin.MeshConfig.dcn_data=4 but --node_count=2"):
    tv.run_command(two, dataclasses.replace(JOB, gin_bindings=("MeshConfig.dcn_data=4",)), "r1")
  with pytest.raises(slices.LaunchError, match=r"--node_count=0 must be a positive number of slices"):
    slices.TpuSlice("ms", "us-east5-a", "v5p-256", node_count=0)


def test_plan_orders_steps_marks_retries_and_cleanup_and_rejects_unknown_ones():
  options = tv.LaunchOptions(spot=True, git_url="https://github.com/org/xprompt_jax", git_ref="v0.1",
                             gin_files=JOB.gin_files, model_dir=JOB.model_dir, gin_bindings=JOB.gin_bindings,
                             run_id="r1")
  steps = tv.plan(["create", "setup", "preflight", "run", "logs"], V4, options)
  assert [list(s.command) for s in steps] == [
      gcloud.create_command(V4, spot=True), *[list(s.command) for s in tv.setup_commands(
          V4, git_url=options.git_url, git_ref="v0.1")],
      tv.preflight_command(V4), tv.run_command(V4, JOB, "r1"), tv.logs_command(V4)]
  assert [s.retry for s in steps] == [False, True, True, True, True]
  assert steps[0].creates and steps[0].cleanup == tuple(gcloud.delete_command(V4))
  queued = tv.plan(["queued-create"], V4, options)[0]
  assert queued.creates and queued.cleanup == tuple(gcloud.queued_delete_command(V4))
  with pytest.raises(slices.LaunchError, match=r"unknown step\(s\) \['launch'\]; steps: create, setup, preflight"):
    tv.plan(["create", "launch"], V4, options)
  with pytest.raises(slices.LaunchError, match="no step given"):
    tv.plan([], V4, options)
  with pytest.raises(slices.LaunchError, match="at least one --gin_file"):
    tv.plan(["run"], V4, tv.LaunchOptions())


def test_execute_dry_run_prints_one_quoted_command_per_line(capsys):
  steps = [Step(tuple(gcloud.create_command(V5E, spot=True))), Step(tuple(tv.run_command(V5E, JOB, "r1")))]
  execute(steps, dry_run=True)
  lines = capsys.readouterr().out.splitlines()
  assert [tuple(shlex.split(line)) for line in lines] == [s.command for s in steps]


def _cli(*args, cwd=REPO, env=None):
  return subprocess.run([sys.executable, "-m", "launch.tpu_vm", *args], cwd=cwd, capture_output=True, text=True,
                        timeout=60, env=env)


def test_cli_dry_run_matches_plan():
  result = _cli("create", "run", "queued-delete", "--name=pt-v5e", "--zone=us-west4-a",
                "--accelerator_type=v5litepod-16", "--spot", "--gin_file=models/t5_1_1_xxl.gin",
                "--gin_file=recipes/lester.gin", "--model_dir=gs://bucket/runs/lester_xxl", "--gin.MeshConfig.model=8",
                "--gin.MIXTURE_OR_TASK_NAME='super_glue_boolq_v102'", "--env=TFDS_DATA_DIR=gs://b/tfds", "--run_id=r1",
                "--dry_run")
  assert result.returncode == 0, result.stderr
  job = tv.TrainJob(JOB.gin_files, JOB.model_dir, JOB.gin_bindings, env=("TFDS_DATA_DIR=gs://b/tfds",))
  assert [shlex.split(line) for line in result.stdout.splitlines()] == [
      gcloud.create_command(V5E, spot=True), tv.run_command(V5E, job, "r1"), gcloud.queued_delete_command(V5E)]


def test_cli_reports_bad_input():
  result = _cli("create", "--name=pt", "--zone=us-west4-a", "--accelerator_type=v5e-16", "--dry_run")
  assert result.returncode == 1
  assert "use v5litepod-16" in result.stderr and not result.stdout and "Traceback" not in result.stderr
  result = _cli("create", "--name=pt", "--zone=us-west4-a", "--bogus", "--dry_run")
  assert result.returncode == 1 and result.stderr.strip() == ("launch: Unknown command line flag 'bogus' (--help "
                                                              "lists the flags)")


def test_installed_console_script_runs_the_launcher_from_any_folder(tmp_path):
  """`xprompt-jax launch` needs no repository checkout as the working folder."""
  script = pathlib.Path(sys.executable).parent / "xprompt-jax"
  result = subprocess.run([str(script), "launch", "describe", "--name=pt-v4", "--zone=us-central2-b", "--dry_run"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  assert shlex.split(result.stdout) == gcloud.describe_command(slices.TpuSlice("pt-v4", "us-central2-b"))


def test_run_can_start_a_paper_table_with_its_results_dir():
  job = tv.TrainJob(("paper/prompt_tuning_xxl.gin",), "gs://b/lester_xxl", extra_flags=("--table=lester_superglue",
                                                                                        "--runs=CB/*"),
                    command="table")
  argv = job.train_argv()
  assert argv[:4] == ["xprompt_venv/bin/python", "-m", "xprompt_jax.cli", "table"]
  assert "--results_dir=gs://b/lester_xxl" in argv and not any(a.startswith("--model_dir") for a in argv)
  assert argv[-2:] == ["--table=lester_superglue", "--runs=CB/*"] and "--multihost" in argv
  with pytest.raises(slices.LaunchError, match=r"--command='fit' is not one of train, table, xprompt, mpt"):
    tv.TrainJob(("paper/prompt_tuning_xxl.gin",), "gs://b/x", command="fit")
