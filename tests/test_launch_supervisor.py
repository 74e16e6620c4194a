"""launch.supervisor against a scripted gcloud (a Python stand-in for subprocess.run, no cloud, no sleeping):
waiting for a queued resource, resubmitting it after Spot preemptions (bounded, each logged), in-place restarts
after a SIGTERM while the slice stays up, failures that keep the slice, and the whole `supervise` step as the
launcher plans it. (The same against a fake gcloud on PATH with real worker scripts: tests/test_launch_remote.py.)"""
import dataclasses
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from launch import gcloud, remote, supervisor  # noqa: E402
from launch import tpu_vm as tv  # noqa: E402
from launch.executor import RetryPolicy, Step  # noqa: E402
from launch.slices import LaunchError, TpuSlice  # noqa: E402

TPU = TpuSlice("pt", "us-central2-b", "v4-16")  # 2 hosts.
FAST = supervisor.SuperviseOptions(poll_s=1, wait_s=100, max_restarts=2, unreachable_polls=3)
NO_RETRY = RetryPolicy(attempts=1)


class Cloud:
  """Answers the supervisor's gcloud calls from a script: request states in order, and job statuses per poll."""

  def __init__(self, states=(), statuses=(), exists=False):
    self.states = list(states)
    self.statuses = list(statuses)
    self.exists = exists
    self.calls = []

  def __call__(self, argv, capture_output=False, text=False):
    self.calls.append(argv)
    verb = argv[4]  # gcloud compute tpus {queued-resources|tpu-vm} VERB ...
    out, code = "", 0
    if argv[3] == "queued-resources" and verb == "describe":
      if not self.exists:
        code = 1
      else:
        out = (self.states.pop(0) if len(self.states) > 1 else self.states[0]) + "\n"
    elif argv[3] == "queued-resources" and verb == "create":
      self.exists = True
    elif argv[3] == "queued-resources" and verb == "delete":
      self.exists = False
    elif verb == "ssh" and remote.JOB_STATUS in argv[-1]:
      row = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
      if row is None:
        code = 255
      else:
        out = "".join(f"{remote.JOB_STATUS} host{i}: {s}\n" for i, s in enumerate(row))
    return subprocess.CompletedProcess(argv, code, out, "")

  def verbs(self):
    """('qr', verb) / ('ssh', what) per call, the polls of the state and the status included."""
    out = []
    for c in self.calls:
      if c[3] == "queued-resources":
        out.append(("qr", c[4]))
      else:
        script = c[-1]
        out.append(("ssh", "status" if remote.JOB_STATUS in script else "run" if "nohup" in script else "other"))
    return out


def _job():
  create = Step(tuple(gcloud.queued_create_command(TPU, spot=True)), creates=True,
                cleanup=tuple(gcloud.queued_delete_command(TPU)))
  starts = []

  def start(attempt):
    starts.append(attempt)
    return [Step(tuple(gcloud.ssh_command(TPU, f"nohup train attempt={attempt}")), retry=True)]
  return supervisor.Job(start, "gs://b/run", create), starts


def _supervise(cloud, options=FAST):
  clock = supervisor.Clock(sleep=lambda s: None, now=lambda: 0.0)
  job, starts = _job()
  supervisor.supervise(TPU, job, options, NO_RETRY, runner=cloud, clock=clock)
  return starts


def test_preempted_twice_resubmits_and_resumes_then_deletes_the_slice(capsys):
  cloud = Cloud(
      states=["WAITING_FOR_RESOURCES", "ACTIVE", "ACTIVE", "SUSPENDING",  # first request: preempted while running
              "PROVISIONING", "ACTIVE", "SUSPENDED",  # second: preempted at once
              "ACTIVE", "ACTIVE", "ACTIVE", "ACTIVE"],  # third: finishes
      statuses=[["running", "running"], ["running", "running"], ["exited 0", "running"], ["exited 0", "exited 0"]])
  starts = _supervise(cloud)
  assert starts == [0, 1, 2]
  qr = [v for k, v in cloud.verbs() if k == "qr" and v != "describe"]
  assert qr == ["create", "delete", "create", "delete", "create", "delete"]
  err = capsys.readouterr().err
  assert "again: the request went SUSPENDING (preempted); restart 1 of 2" in err
  assert "again: the request went SUSPENDED (preempted); restart 2 of 2" in err
  assert "every worker exited 0: the job is done" in err and "deleted pt-qr" in err
  assert not cloud.exists


def test_gives_up_after_max_restarts_and_leaves_nothing_billing():
  cloud = Cloud(states=["ACTIVE", "SUSPENDED"] * 10, statuses=[["running", "running"]])
  with pytest.raises(LaunchError, match=r"giving up after 2 restarts \(--max_restarts\); the checkpoints in "
                                        r"gs://b/run remain"):
    _supervise(cloud)
  assert [v for k, v in cloud.verbs() if k == "qr" and v in ("create", "delete")] == ["create", "delete"] * 3
  assert not cloud.exists


def test_sigterm_while_the_slice_stays_up_restarts_in_place():
  cloud = Cloud(states=["ACTIVE"], statuses=[["running", "running"], ["exited 75", "exited 75"],
                                             ["running", "running"], ["exited 0", "exited 0"]])
  assert _supervise(cloud) == [0, 1]
  assert [v for k, v in cloud.verbs() if k == "qr" and v != "describe"] == ["create", "delete"]


def test_a_failed_job_keeps_the_slice_and_names_the_worker():
  cloud = Cloud(states=["ACTIVE"], statuses=[["running", "running"], ["exited 1", "exited 75"]])
  with pytest.raises(LaunchError, match=r"the job host0 exited 1 \(not a preemption\); pt-qr is kept"):
    _supervise(cloud)
  assert cloud.exists and ("qr", "delete") not in cloud.verbs()


def test_an_existing_request_is_reused_and_a_running_job_is_not_started_twice(capsys):
  cloud = Cloud(states=["ACTIVE"], statuses=[["exited 0", "exited 0"]], exists=True)
  _supervise(cloud, dataclasses.replace(FAST, keep_when_done=True))
  assert ("qr", "create") not in cloud.verbs() and ("qr", "delete") not in cloud.verbs()
  assert "pt-qr exists; using it" in capsys.readouterr().err


def test_a_suspended_request_found_at_start_is_deleted_and_requested_again():
  cloud = Cloud(states=["SUSPENDED", "ACTIVE"], statuses=[["exited 0", "exited 0"]], exists=True)
  _supervise(cloud)
  assert [v for k, v in cloud.verbs() if k == "qr" and v != "describe"] == ["delete", "create", "delete"]


def test_workers_that_do_not_answer_while_active_are_an_error():
  cloud = Cloud(states=["ACTIVE"], statuses=[None, ["running"], ["absent", "absent"]])
  with pytest.raises(LaunchError, match=r"no job status from every worker of pt-qr for 3 polls"):
    _supervise(cloud)


def test_wait_active_fails_on_failed_requests_and_timeouts():
  clock = supervisor.Clock(sleep=lambda s: None, now=iter(range(0, 1000, 60)).__next__)
  with pytest.raises(LaunchError, match=r"pt-qr is FAILED, not waiting for capacity"):
    supervisor.wait_active(TPU, FAST, Cloud(states=["WAITING_FOR_RESOURCES", "FAILED"], exists=True), clock)
  with pytest.raises(LaunchError, match=r"still WAITING_FOR_RESOURCES after 100 s \(--wait_s\)"):
    supervisor.wait_active(TPU, FAST, Cloud(states=["WAITING_FOR_RESOURCES"], exists=True), clock)


def test_verdict():
  assert supervisor.verdict({"a": "running", "b": "exited 0"}) == "running"
  assert supervisor.verdict({"a": "exited 0", "b": "exited 0"}) == "done"
  assert supervisor.verdict({"a": "exited 75", "b": "running"}) == "preempted"
  assert supervisor.verdict({"a": "exited 75", "b": "exited 137"}) == "failed: b exited 137"


def test_supervise_step_is_planned_alone_with_every_flag_checked_first():
  options = tv.LaunchOptions(spot=True, git_url="https://github.com/org/x", git_ref="0" * 40,
                             gin_files=("recipes/lester.gin",), model_dir="gs://b/run", run_id="r1")
  [step] = tv.plan(["supervise"], TPU, options)
  assert step.command == tuple(gcloud.queued_create_command(TPU, spot=True)) and step.action is not None
  assert "resubmitted after a preemption (at most 10 times)" in step.note
  with pytest.raises(LaunchError, match=r"supervise runs the whole job itself .* not with \['setup'\]"):
    tv.plan(["setup", "supervise"], TPU, options)
  with pytest.raises(LaunchError, match="at least one --gin_file"):
    tv.plan(["supervise"], TPU, tv.LaunchOptions(git_url="https://github.com/org/x", git_ref="0" * 40))
