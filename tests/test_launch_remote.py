"""The launcher against a fake `gcloud` on PATH (no cloud): transient ssh failures retried with backoff, a failed
setup deleting the slice it created, the worker scripts run for real in a fake worker home (uv venv with Python
3.11 at the pinned commit, one detached run per model_dir, per-worker logs copied to the bucket, logs that
return), and `stop` escalating to SIGKILL."""
import os
import pathlib
import shlex
import socket
import subprocess
import sys
import time
import uuid

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from launch import remote  # noqa: E402

COMMIT = "0123456789abcdef0123456789abcdef01234567"
FAKE_GCLOUD = r'''#!/bin/bash
# Records every call; fails the first $FAKE_SSH_FAILURES ssh calls as a cold sshd does; runs ssh --command in
# the fake worker home; `storage cp` copies into $FAKE_GCS.
printf '%s\n' "$(printf '%q ' "$@")" >> "$FAKE_STATE/calls"
if [ "$3" = "queued-resources" ] && [ "$4" != "ssh" ]; then  # One request: WAITING, then ACTIVE at the 2nd look.
  qr="$FAKE_STATE/qr"
  case "$4" in
    create) if [ -f "$qr" ]; then echo "ALREADY_EXISTS" >&2; exit 1; fi
            echo WAITING_FOR_RESOURCES > "$qr"; echo 0 > "$qr.looks"
            echo $(( $(cat "$FAKE_STATE/creates" 2>/dev/null || echo 0) + 1 )) > "$FAKE_STATE/creates"; exit 0;;
    delete) rm -f "$qr"; exit 0;;
    describe) if [ ! -f "$qr" ]; then echo "NOT_FOUND" >&2; exit 1; fi
              looks=$(( $(cat "$qr.looks") + 1 )); echo $looks > "$qr.looks"
              if [ "$(cat "$qr")" = WAITING_FOR_RESOURCES ] && [ $looks -ge 2 ]; then echo ACTIVE > "$qr"; fi
              # $FAKE_PREEMPT_LOOK: the Spot capacity of the first request is reclaimed at that look, once the
              # trainer has made progress: SIGTERM to the job matching $FAKE_PREEMPT_JOB (the preemption notice),
              # the VM goes away with its disk (only what reached the bucket is left), the request is SUSPENDED.
              if [ "$(cat "$FAKE_STATE/creates")" = 1 ] && [ -n "$FAKE_PREEMPT_LOOK" ] \
                 && [ $looks -ge "$FAKE_PREEMPT_LOOK" ] && [ -s "$FAKE_GCS/step" ]; then
                pkill -TERM -f "$FAKE_PREEMPT_JOB"
                for i in $(seq 200); do pgrep -f "$FAKE_PREEMPT_JOB" > /dev/null || break; sleep 0.05; done
                rm -rf "$FAKE_HOME/xprompt_logs"; echo SUSPENDED > "$qr"
              fi
              cat "$qr"; exit 0;;
  esac
fi
if [ "$4" = "ssh" ]; then
  n=$(cat "$FAKE_STATE/ssh_calls" 2>/dev/null || echo 0); echo $((n + 1)) > "$FAKE_STATE/ssh_calls"
  if [ "$n" -lt "${FAKE_SSH_FAILURES:-0}" ]; then echo "ssh: connect to host: Connection refused" >&2; exit 255; fi
  for a in "$@"; do case "$a" in --command=*) cmd="${a#--command=}";; esac; done
  cd "$FAKE_HOME" && exec bash -c "$cmd"
fi
if [ "$1" = "storage" ] && [ "$2" = "cp" ]; then
  dst="$FAKE_GCS/${5#gs://}"; mkdir -p "$(dirname "$dst")" && cp "$4" "$dst"; exit $?
fi
exit 0
'''
FAKE_UV = r'''#!/bin/bash
echo "$@" >> "$HOME/uv_calls"
if [ "$1" = "venv" ]; then
  mkdir -p xprompt_venv/bin
  printf '%s\n' '#!/bin/bash' 'if [ "$1" = "-c" ]; then echo "fake: ok"; exit 0; fi' \
    'echo "trainer argv: $*"; echo "TFDS_DATA_DIR=$TFDS_DATA_DIR"' \
    'if [ -n "$FAKE_STEPS" ]; then  # Trains FAKE_STEPS steps, resuming from the step saved in the bucket.' \
    '  step=$(cat "$FAKE_GCS/step" 2>/dev/null || echo 0); echo "resumed from step $step"' \
    '  trap '"'"'echo "preempted: saved step $step"; exit 75'"'"' TERM' \
    '  while [ "$step" -lt "$FAKE_STEPS" ]; do sleep 0.1; step=$((step + 1)); echo $step > "$FAKE_GCS/step"; done' \
    'else sleep "${FAKE_TRAIN_S:-1}"; fi; echo "trainer done"' > xprompt_venv/bin/python
  chmod +x xprompt_venv/bin/python
fi
'''


@pytest.fixture
def cloud(tmp_path):
  """PATH with the fake gcloud (and a curl that fails: no metadata server, no downloads) and its folders."""
  bin_dir, home, state, gcs = (tmp_path / d for d in ("bin", "home", "state", "gcs"))
  for d in (bin_dir, home / ".local" / "bin", state, gcs):
    d.mkdir(parents=True)
  (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
  (bin_dir / "curl").write_text("#!/bin/bash\nexit 7\n")
  (home / ".local" / "bin" / "uv").write_text(FAKE_UV)
  for f in (bin_dir / "gcloud", bin_dir / "curl", home / ".local" / "bin" / "uv"):
    f.chmod(0o755)
  env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(home), "FAKE_HOME": str(home),
         "FAKE_STATE": str(state), "FAKE_GCS": str(gcs)}
  return env, home, state, gcs


def _launch(env, *args):
  return subprocess.run([sys.executable, "-m", "launch.tpu_vm", *args, "--name=pt-v4", "--zone=us-central2-b",
                         "--retry_base_s=0.01"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def _calls(state):
  return [shlex.split(line) for line in (state / "calls").read_text().splitlines()]


def _wait_for(predicate, timeout=30):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return True
    time.sleep(0.1)
  return False


def test_transient_ssh_failures_are_retried_and_the_job_runs_with_per_worker_logs(cloud):
  env, home, state, gcs = cloud
  bucket = f"fake-{uuid.uuid4().hex[:8]}"
  job = ["--git_url=https://github.com/org/xprompt_jax", f"--git_ref={COMMIT}", "--gin_file=recipes/lester.gin",
         f"--model_dir=gs://{bucket}/run", "--run_id=r1", "--gin.MIXTURE_OR_TASK_NAME='super_glue_boolq_v102'",
         "--gin.LABELS=[\"yes\", 'no']", "--env=TFDS_DATA_DIR=gs://b/tfds dir"]
  result = _launch({**env, "FAKE_SSH_FAILURES": "2", "FAKE_TRAIN_S": "3"}, "create", "setup", "preflight", "run",
                   *job)
  assert result.returncode == 0, result.stderr
  assert result.stderr.count("retrying in") == 2 and "exit status 255 (attempt 1 of 5)" in result.stderr
  verbs = [c[3] for c in _calls(state) if c[0] == "compute"]
  assert verbs == ["create", "ssh", "ssh", "ssh", "ssh", "ssh"]  # 2 failed + install, preflight, run.
  uv = (home / "uv_calls").read_text()
  assert "venv --allow-existing --python 3.11 xprompt_venv" in uv  # Not the image's Python 3.10.
  assert f"xprompt_jax[tpu] @ git+https://github.com/org/xprompt_jax@{COMMIT}" in uv
  assert "fake: ok" in result.stdout  # The preflight ran the venv's Python on the worker.

  again = _launch(env, "run", *job)  # While it runs, a second `run` starts nothing.
  assert again.returncode == 0 and f"already running on gs://{bucket}/run" in again.stdout, again.stderr
  log = home / remote.LOG_DIR / f"r1.worker0.{socket.gethostname()}.log"
  assert _wait_for(lambda: log.exists() and "exit status" in log.read_text()), log
  assert log.read_text().splitlines()[-2:] == ["trainer done", "xprompt-jax exit status 0"]
  argv = log.read_text().splitlines()[0]  # What the worker's shell handed the trainer: quotes intact.
  assert argv == ("trainer argv: -m xprompt_jax.cli train --gin_file=recipes/lester.gin --gin_search_paths=xprompt_gin "
                  f"--model_dir=gs://{bucket}/run --multihost --gin.MIXTURE_OR_TASK_NAME='super_glue_boolq_v102' "
                  "--gin.LABELS=[\"yes\", 'no']")
  assert log.read_text().splitlines()[1] == "TFDS_DATA_DIR=gs://b/tfds dir"
  copied = gcs / bucket / "run" / "logs" / log.name
  assert _wait_for(copied.exists) and copied.read_text() == log.read_text()

  shown = _launch(env, "logs", "--worker=0", "--lines=1")  # Prints the newest log and returns.
  assert shown.returncode == 0 and shown.stdout == f"[{socket.gethostname()}] xprompt-jax exit status 0\n"
  last = [c for c in _calls(state) if c[0] == "compute"][-1]
  assert last[3:6] == ["ssh", "pt-v4", "--zone=us-central2-b"] and "--worker=0" in last


@pytest.mark.parametrize("keep", [False, True])
def test_a_failed_setup_deletes_the_slice_it_created_unless_kept(cloud, keep):
  env, _, state, _ = cloud
  result = _launch({**env, "FAKE_SSH_FAILURES": "99"}, "create", "setup", "--attempts=2",
                   "--git_url=https://github.com/org/xprompt_jax", f"--git_ref={COMMIT}",
                   *(["--keep_on_failure"] if keep else []))
  assert result.returncode == 1 and "Traceback" not in result.stderr
  assert "command failed with exit status 255 after 2 attempts" in result.stderr
  verbs = [c[3] for c in _calls(state) if c[0] == "compute"]
  if keep:
    assert verbs == ["create", "ssh", "ssh"] and "deleting" not in result.stderr
  else:
    assert verbs == ["create", "ssh", "ssh", "delete"] and "the slice was deleted" in result.stderr


def test_a_failed_create_deletes_nothing(cloud):
  env, _, state, _ = cloud
  (pathlib.Path(env["PATH"].split(":")[0]) / "gcloud").write_text("#!/bin/bash\necho \"$@\" >> \"$FAKE_STATE/calls\"\n"
                                                                   "exit 1\n")
  result = _launch(env, "create", "setup", "--git_url=https://github.com/org/xprompt_jax", f"--git_ref={COMMIT}")
  assert result.returncode == 1 and "deleting" not in result.stderr
  assert len((state / "calls").read_text().splitlines()) == 1  # create is not retried: it is not idempotent.


@pytest.mark.parametrize("ignores_sigterm", [False, True])
def test_stop_waits_then_kills_what_ignores_sigterm(ignores_sigterm):
  mark = uuid.uuid4().hex
  handler = "signal.SIG_IGN" if ignores_sigterm else "lambda *a: sys.exit(0)"
  proc = subprocess.Popen([sys.executable, "-c", f"import signal, sys, time; signal.signal(signal.SIGTERM, {handler}); "
                           "time.sleep(60)", "xprompt_jax.cli", mark])
  try:
    time.sleep(0.5)
    script = remote.stop_script(2, process=f"[x]prompt_jax.cli {mark}")
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60).stdout
    assert proc.wait(timeout=10) == (-9 if ignores_sigterm else 0)
    assert ("SIGKILL" in out) == ignores_sigterm and "stopped; TPU chips free" in out
  finally:
    proc.kill()


def test_supervise_survives_transient_failures_and_a_spot_preemption_then_deletes_the_slice(cloud):
  """docs/launch.md's `supervise` with a fake gcloud: the request waits for capacity, the first ssh calls fail, the
  Spot slice is preempted mid-training (the trainer saves and exits 75, the VM and its disk go away), the request
  is made again, the job is set up again and resumes from the saved step, finishes, and the slice is deleted."""
  env, home, state, gcs = cloud
  bucket = f"fake-{uuid.uuid4().hex[:8]}"
  result = _launch({**env, "FAKE_SSH_FAILURES": "2", "FAKE_STEPS": "30", "FAKE_PREEMPT_LOOK": "4",
                    "FAKE_PREEMPT_JOB": f"[x]prompt_jax.cli .*gs://{bucket}/run"}, "supervise",
                   "--spot", "--accelerator_type=v4-8", "--git_url=https://github.com/org/xprompt_jax",
                   f"--git_ref={COMMIT}", "--gin_file=recipes/lester.gin", f"--model_dir=gs://{bucket}/run",
                   "--run_id=r1", "--poll_s=0.3", "--max_restarts=3")
  assert result.returncode == 0, result.stderr
  err = result.stderr
  assert "pt-v4-qr: WAITING_FOR_RESOURCES" in err and err.count("is ACTIVE after") == 2
  assert "again: the request went SUSPENDED (preempted); restart 1 of 3" in err and "restart 2" not in err
  assert "every worker exited 0: the job is done" in err and "deleted pt-v4-qr" in err
  calls = [c for c in _calls(state) if c[0] == "compute"]
  requests = [c[3] for c in calls if c[2] == "queued-resources" and c[3] != "describe"]
  assert requests == ["create", "delete", "create", "delete"] and not (state / "qr").exists()
  assert all(c[4] == "pt-v4-qr" and "--zone=us-central2-b" in c for c in calls if c[2] == "queued-resources")
  assert (gcs / "step").read_text().strip() == "30"
  logs = gcs / bucket / "run" / "logs"  # The preempted VM's own copy is gone with it; the bucket has both.
  first, second = (logs / f"{r}.worker0.{socket.gethostname()}.log" for r in ("r1", "r1-restart1"))
  assert "resumed from step 0" in first.read_text() and first.read_text().endswith("xprompt-jax exit status 75\n")
  saved = int(first.read_text().split("preempted: saved step ")[1].split()[0])
  assert 0 < saved < 30 and f"resumed from step {saved}" in second.read_text()
  assert second.read_text().endswith("trainer done\nxprompt-jax exit status 0\n")
  uv = (home / "uv_calls").read_text()
  assert uv.count("venv --allow-existing --python 3.11 xprompt_venv") == 2  # Set up again on the new slice.
