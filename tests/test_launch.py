"""Cloud TPU launcher: exact gcloud command lines for every step (no cloud is contacted), validation, dry runs."""
import pathlib
import shlex
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from launch import tpu_vm as tv  # noqa: E402

V4 = tv.TpuSlice("pt-v4", "us-central2-b", "v4-8", project="my-proj")
V5E = tv.TpuSlice("pt-v5e", "us-west4-a", "v5litepod-16")
TPU_VM = ["gcloud", "compute", "tpus", "tpu-vm"]
QR = ["gcloud", "compute", "tpus", "queued-resources"]
V4_LOC = ["--zone=us-central2-b", "--project=my-proj"]
V5E_LOC = ["--zone=us-west4-a"]
INSTALL = ("mkdir -p xprompt_gin && python3 -m pip install --upgrade "
           "'xprompt_jax[tpu] @ git+https://github.com/org/xprompt_jax@v0.1' "
           "-f https://storage.googleapis.com/jax-releases/libtpu_releases.html")


def test_runtime_versions_default_per_generation():
  assert V4.runtime_version == "tpu-ubuntu2204-base"
  assert V5E.runtime_version == "v2-alpha-tpuv5-lite"
  assert tv.TpuSlice("a", "z", "v5p-16").runtime_version == "v2-alpha-tpuv5"
  assert tv.TpuSlice("a", "z", "v6e-8").runtime_version == "v2-alpha-tpuv6e"
  assert tv.TpuSlice("a", "z", "v4-128", runtime_version="tpu-vm-v4-base").runtime_version == "tpu-vm-v4-base"
  assert tv.parse_accelerator_type("v4-128") == ("v4", 128)
  assert tv.parse_accelerator_type("v5litepod-256") == ("v5litepod", 256)


def test_create_commands():
  assert tv.create_command(V4) == TPU_VM + ["create", "pt-v4", *V4_LOC, "--accelerator-type=v4-8",
                                            "--version=tpu-ubuntu2204-base"]
  assert tv.create_command(V4, preemptible=True) == TPU_VM + [
      "create", "pt-v4", *V4_LOC, "--accelerator-type=v4-8", "--version=tpu-ubuntu2204-base", "--preemptible"]
  assert tv.create_command(V5E, spot=True) == TPU_VM + [
      "create", "pt-v5e", *V5E_LOC, "--accelerator-type=v5litepod-16", "--version=v2-alpha-tpuv5-lite", "--spot"]
  assert tv.create_command(V5E) == TPU_VM + [
      "create", "pt-v5e", *V5E_LOC, "--accelerator-type=v5litepod-16", "--version=v2-alpha-tpuv5-lite"]
  with pytest.raises(tv.LaunchError, match="choose one of --spot and --preemptible"):
    tv.create_command(V4, spot=True, preemptible=True)
  with pytest.raises(tv.LaunchError, match="preemptible TPUs are not offered for v5litepod; use --spot"):
    tv.create_command(V5E, preemptible=True)


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
  with pytest.raises(tv.LaunchError, match=message):
    tv.TpuSlice("pt", "us-central2-b", accelerator)


def test_invalid_names_and_zone():
  with pytest.raises(tv.LaunchError, match="TPU name 'My_TPU' must be 1-63 lowercase letters"):
    tv.TpuSlice("My_TPU", "us-central2-b")
  with pytest.raises(tv.LaunchError, match="a zone is required"):
    tv.TpuSlice("pt", "")


def test_setup_from_git():
  assert tv.setup_commands(V4, git_url="https://github.com/org/xprompt_jax", git_ref="v0.1") == [
      TPU_VM + ["ssh", "pt-v4", *V4_LOC, "--worker=all", f"--command={INSTALL}"]]


def test_setup_from_sdist_with_gin_files(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "dist").mkdir()
  (tmp_path / "dist" / "xprompt_jax-0.1.0.tar.gz").write_bytes(b"")
  (tmp_path / "my.gin").write_text("include 'recipes/lester.gin'\n")
  commands = tv.setup_commands(V5E, sdist="dist/xprompt_jax-0.1.0.tar.gz", gin_files=["my.gin"])
  assert commands == [
      TPU_VM + ["scp", "dist/xprompt_jax-0.1.0.tar.gz", "pt-v5e:/tmp/xprompt_jax-0.1.0.tar.gz", *V5E_LOC,
                "--worker=all", "--recurse"],
      TPU_VM + ["ssh", "pt-v5e", *V5E_LOC, "--worker=all",
                "--command=mkdir -p xprompt_gin && python3 -m pip install --upgrade "
                "'xprompt_jax[tpu] @ file:///tmp/xprompt_jax-0.1.0.tar.gz' "
                "-f https://storage.googleapis.com/jax-releases/libtpu_releases.html"],
      TPU_VM + ["scp", "my.gin", "pt-v5e:xprompt_gin/", *V5E_LOC, "--worker=all", "--recurse"],
  ]
  with pytest.raises(tv.LaunchError, match="gin file 'missing.gin' does not exist"):
    tv.setup_commands(V5E, sdist="dist/xprompt_jax-0.1.0.tar.gz", gin_files=["missing.gin"])
  with pytest.raises(tv.LaunchError, match="sdist 'nope.tar.gz' does not exist"):
    tv.setup_commands(V5E, sdist="nope.tar.gz")
  with pytest.raises(tv.LaunchError, match="exactly one package source"):
    tv.setup_commands(V5E)
  with pytest.raises(tv.LaunchError, match="exactly one package source"):
    tv.setup_commands(V5E, git_url="https://x", sdist="dist/xprompt_jax-0.1.0.tar.gz")


JOB = tv.TrainJob(("models/t5_1_1_xxl.gin", "recipes/lester.gin"), "gs://bucket/runs/lester_xxl",
                  ("MeshConfig.model=8", "MIXTURE_OR_TASK_NAME='super_glue_boolq_v102'"))
TRAIN_ARGV = ["python3", "-m", "xprompt_jax.cli", "train", "--gin_file=models/t5_1_1_xxl.gin",
              "--gin_file=recipes/lester.gin", "--gin_search_paths=xprompt_gin",
              "--model_dir=gs://bucket/runs/lester_xxl", "--multihost", "--gin.MeshConfig.model=8",
              "--gin.MIXTURE_OR_TASK_NAME='super_glue_boolq_v102'"]


@pytest.mark.parametrize("tpu,loc", [(V4, V4_LOC), (V5E, V5E_LOC)])
def test_run_command_starts_all_workers_detached(tpu, loc):
  command = tv.run_command(tpu, JOB)
  remote = f"nohup {shlex.join(TRAIN_ARGV)} > xprompt_train.log 2>&1 < /dev/null &"
  assert command == TPU_VM + ["ssh", tpu.name, *loc, "--worker=all", f"--command={remote}"]
  # What the worker's shell sees: the trainer gets the gin binding with its quotes intact.
  words = shlex.split(command[-1][len("--command="):])
  assert words[1:words.index(">")] == TRAIN_ARGV


def test_run_command_with_environment():
  job = tv.TrainJob(("recipes/lester.gin",), "gs://b/x", env=("TFDS_DATA_DIR=gs://b/tfds",), log_file="boolq.log")
  remote = tv.run_command(V4, job)[-1][len("--command="):]
  assert remote == ("nohup env TFDS_DATA_DIR=gs://b/tfds python3 -m xprompt_jax.cli train "
                    "--gin_file=recipes/lester.gin --gin_search_paths=xprompt_gin --model_dir=gs://b/x --multihost "
                    "> boolq.log 2>&1 < /dev/null &")
  with pytest.raises(tv.LaunchError, match=r"environment variable 'TFDS DATA=1' is not NAME=VALUE"):
    tv.TrainJob(("recipes/lester.gin",), "gs://b/x", env=("TFDS DATA=1",))


def test_train_job_validation():
  with pytest.raises(tv.LaunchError, match="at least one --gin_file"):
    tv.TrainJob((), "gs://b/x")
  with pytest.raises(tv.LaunchError, match=r"--model_dir='/tmp/run' must be a gs:// path"):
    tv.TrainJob(("recipes/lester.gin",), "/tmp/run")
  assert tv.TrainJob(("paper/xprompt_xl.gin",), "/mnt/bucket/xprompt_xl", command="table").model_dir == \
      "/mnt/bucket/xprompt_xl"  # A gcsfuse-mounted bucket folder (the XPrompt / MPT tables).
  with pytest.raises(tv.LaunchError, match=r"gin binding 'steps' is not NAME=VALUE"):
    tv.TrainJob(("recipes/lester.gin",), "gs://b/x", ("steps",))


@pytest.mark.parametrize("tpu,loc", [(V4, V4_LOC), (V5E, V5E_LOC)])
def test_logs_stop_describe_delete(tpu, loc):
  assert tv.logs_command(tpu) == TPU_VM + ["ssh", tpu.name, *loc, "--worker=0",
                                           "--command=tail -n +1 -F xprompt_train.log"]
  assert tv.stop_command(tpu) == TPU_VM + ["ssh", tpu.name, *loc, "--worker=all",
                                           "--command=pkill -f '[x]prompt_jax.cli ' || true"]
  assert tv.describe_command(tpu) == TPU_VM + ["describe", tpu.name, *loc]
  assert tv.delete_command(tpu) == TPU_VM + ["delete", tpu.name, *loc, "--quiet"]


def test_queued_resources():
  assert tv.queued_create_command(V4) == QR + ["create", "pt-v4-qr", *V4_LOC, "--node-id=pt-v4",
                                               "--accelerator-type=v4-8", "--runtime-version=tpu-ubuntu2204-base"]
  assert tv.queued_create_command(V5E, queued_id="q1", spot=True, valid_until_duration="6h") == QR + [
      "create", "q1", *V5E_LOC, "--node-id=pt-v5e", "--accelerator-type=v5litepod-16",
      "--runtime-version=v2-alpha-tpuv5-lite", "--spot", "--valid-until-duration=6h"]
  assert tv.queued_describe_command(V5E, queued_id="q1") == QR + ["describe", "q1", *V5E_LOC]
  assert tv.queued_delete_command(V4) == QR + ["delete", "pt-v4-qr", *V4_LOC, "--force", "--quiet"]


def test_plan_orders_steps_and_rejects_unknown_ones():
  options = tv.LaunchOptions(spot=True, git_url="https://github.com/org/xprompt_jax", git_ref="v0.1",
                             gin_files=JOB.gin_files, model_dir=JOB.model_dir, gin_bindings=JOB.gin_bindings)
  assert tv.plan(["create", "setup", "run", "logs"], V4, options) == [
      tv.create_command(V4, spot=True), *tv.setup_commands(V4, git_url=options.git_url, git_ref="v0.1"),
      tv.run_command(V4, JOB), tv.logs_command(V4)]
  with pytest.raises(tv.LaunchError, match=r"unknown step\(s\) \['launch'\]; steps: create, setup, run"):
    tv.plan(["create", "launch"], V4, options)
  with pytest.raises(tv.LaunchError, match="no step given"):
    tv.plan([], V4, options)
  with pytest.raises(tv.LaunchError, match="at least one --gin_file"):
    tv.plan(["run"], V4, tv.LaunchOptions())


def test_execute_dry_run_prints_one_quoted_command_per_line(capsys):
  commands = [tv.create_command(V5E, spot=True), tv.run_command(V5E, JOB)]
  tv.execute(commands, dry_run=True)
  lines = capsys.readouterr().out.splitlines()
  assert [shlex.split(line) for line in lines] == commands


def test_execute_without_gcloud_and_on_failure(monkeypatch):
  monkeypatch.setattr(tv.shutil, "which", lambda name: None)
  with pytest.raises(tv.LaunchError, match="`gcloud` was not found on PATH"):
    tv.execute([tv.delete_command(V4)], dry_run=False, runner=pytest.fail)
  monkeypatch.setattr(tv.shutil, "which", lambda name: "/usr/bin/gcloud")
  ran = []

  def runner(command):
    ran.append(command)
    return subprocess.CompletedProcess(command, 0 if len(ran) == 1 else 3)

  with pytest.raises(tv.LaunchError, match=r"exit status 3: gcloud compute tpus tpu-vm delete pt-v4"):
    tv.execute([tv.describe_command(V4), tv.delete_command(V4), tv.create_command(V4)], dry_run=False,
               runner=runner)
  assert ran == [tv.describe_command(V4), tv.delete_command(V4)]


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "launch.tpu_vm", *args], cwd=REPO, capture_output=True, text=True,
                        timeout=60)


def test_cli_dry_run_matches_plan():
  result = _cli("create", "run", "queued-delete", "--name=pt-v5e", "--zone=us-west4-a",
                "--accelerator_type=v5litepod-16", "--spot", "--gin_file=models/t5_1_1_xxl.gin",
                "--gin_file=recipes/lester.gin", "--model_dir=gs://bucket/runs/lester_xxl", "--gin.MeshConfig.model=8",
                "--gin.MIXTURE_OR_TASK_NAME='super_glue_boolq_v102'", "--env=TFDS_DATA_DIR=gs://b/tfds", "--dry_run")
  assert result.returncode == 0, result.stderr
  job = tv.TrainJob(JOB.gin_files, JOB.model_dir, JOB.gin_bindings, env=("TFDS_DATA_DIR=gs://b/tfds",))
  assert [shlex.split(line) for line in result.stdout.splitlines()] == [
      tv.create_command(V5E, spot=True), tv.run_command(V5E, job), tv.queued_delete_command(V5E)]


def test_cli_reports_bad_input():
  result = _cli("create", "--name=pt", "--zone=us-west4-a", "--accelerator_type=v5e-16", "--dry_run")
  assert result.returncode == 2
  assert "use v5litepod-16" in result.stderr and not result.stdout


def test_dry_run_script_reaches_the_trainer_intact(tmp_path):
  """Runs the printed script with a fake gcloud (runs --command in a shell, as ssh does) and a fake python3."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "gcloud").write_text(r"""#!/bin/bash
for a in "$@"; do case "$a" in --command=*) cmd="${a#--command=}";; esac; done
cd "$FAKE_HOME" && bash -c "$cmd
wait"
""")
  (bin_dir / "python3").write_text('#!/bin/bash\nprintf "%s\\n" "$@" > "$FAKE_HOME/argv.txt"\n'
                                   'echo "TFDS_DATA_DIR=$TFDS_DATA_DIR"\n')
  for f in bin_dir.iterdir():
    f.chmod(0o755)
  result = _cli("run", "--name=pt-v4", "--zone=us-central2-b", "--gin_file=recipes/lester.gin",
                "--model_dir=gs://b/runs/x", "--gin.MIXTURE_OR_TASK_NAME='super_glue_boolq_v102'",
                "--gin.LABELS=[\"yes\", 'no']", "--env=TFDS_DATA_DIR=gs://b/tfds dir", "--dry_run")
  assert result.returncode == 0, result.stderr
  env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_HOME": str(tmp_path)}
  subprocess.run(["bash", "-e"], input=result.stdout, text=True, env=env, check=True, timeout=60)
  assert (tmp_path / "argv.txt").read_text().splitlines() == [
      "-m", "xprompt_jax.cli", "train", "--gin_file=recipes/lester.gin", "--gin_search_paths=xprompt_gin",
      "--model_dir=gs://b/runs/x", "--multihost", "--gin.MIXTURE_OR_TASK_NAME='super_glue_boolq_v102'",
      "--gin.LABELS=[\"yes\", 'no']"]
  assert (tmp_path / "xprompt_train.log").read_text() == "TFDS_DATA_DIR=gs://b/tfds dir\n"


def test_run_can_start_a_paper_table_with_its_results_dir():
  job = tv.TrainJob(("paper/prompt_tuning_xxl.gin",), "gs://b/lester_xxl", extra_flags=("--table=lester_superglue",
                                                                                        "--runs=CB/*"),
                    command="table")
  argv = job.train_argv()
  assert argv[:4] == ["python3", "-m", "xprompt_jax.cli", "table"]
  assert "--results_dir=gs://b/lester_xxl" in argv and not any(a.startswith("--model_dir") for a in argv)
  assert argv[-2:] == ["--table=lester_superglue", "--runs=CB/*"] and "--multihost" in argv
  with pytest.raises(tv.LaunchError, match=r"--command='fit' is not one of train, table, xprompt, mpt"):
    tv.TrainJob(("paper/prompt_tuning_xxl.gin",), "gs://b/x", command="fit")
