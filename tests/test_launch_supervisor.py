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
  """Answers the supervisor's gcloud calls from a script: for each request made (`requests`: one list of states
  per queued-create, the last one sticky), and the job statuses per poll (the last row sticky; None: no answer)."""

  def __init__(self, requests=(), statuses=(), exists=False):
    self.requests = [list(r) for r in requests]
    self.states = self.requests.pop(0) if exists else []
    self.statuses = list(statuses)
    self.exists = exists
    self.calls = []

  def __call__(self, argv, capture_output=False, text=False, timeout=None):
    self.calls.append(argv)
    group, verb = argv[3], argv[4]  # gcloud compute tpus {queued-resources|tpu-vm} VERB ...
    out, err, code = "", "", 0
    if group == "queued-resources" and verb == "describe":
      if not self.exists:
        code, err = 1, "ERROR: (gcloud.compute.tpus.queued-resources.describe) NOT_FOUND: pt-qr\n"
      else:
        out = (self.states.pop(0) if len(self.states) > 1 else self.states[0]) + "\n"
    elif group == "queued-resources" and verb == "create":
      self.exists, self.states = True, self.requests.pop(0)
    elif group == "queued-resources" and verb == "delete":
      self.exists = False
    elif verb == "ssh" and remote.JOB_STATUS in argv[-1]:
      row = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
      if row is None:
        code = 255
      else:
        out = "".join(f"{remote.JOB_STATUS} host{i}: {s}\n" for i, s in enumerate(row))
    return subprocess.CompletedProcess(argv, code, out, err)

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

  def requested(self):
    return [v for k, v in self.verbs() if k == "qr" and v in ("create", "delete")]


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


RUNNING, DONE = ["running", "running"], ["exited 0", "exited 0"]


def test_preempted_twice_resubmits_and_resumes_then_deletes_the_slice(capsys):
  cloud = Cloud(requests=[["WAITING_FOR_RESOURCES", "ACTIVE", "ACTIVE", "SUSPENDING", "SUSPENDING", "SUSPENDED"],
                          ["PROVISIONING", "ACTIVE", "SUSPENDED"],  # preempted before the first poll
                          ["ACTIVE"]],  # finishes
                statuses=[RUNNING, RUNNING, ["exited 0", "running"], DONE])
  starts = _supervise(cloud)
  assert starts == [0, 1, 2]
  assert cloud.requested() == ["create", "delete", "create", "delete", "create", "delete"]
  err = capsys.readouterr().err
  assert "pt-qr is SUSPENDING (preempted): waiting for the workers to save" in err
  assert "again: the request went SUSPENDED (preempted); restart 1 of 2" in err
  assert "again: the request went SUSPENDED (preempted); restart 2 of 2" in err
  assert "every worker exited 0: the job is done" in err and "deleted pt-qr (the job is done" in err
  assert not cloud.exists


def test_gives_up_after_max_restarts_and_leaves_nothing_billing():
  cloud = Cloud(requests=[["ACTIVE", "ACTIVE", "SUSPENDED"]] * 3, statuses=[RUNNING])
  with pytest.raises(LaunchError, match=r"giving up after 2 restarts \(--max_restarts\); the checkpoints in "
                                        r"gs://b/run remain"):
    _supervise(cloud)
  assert cloud.requested() == ["create", "delete"] * 3 and not cloud.exists


def test_a_preemption_during_setup_is_a_preemption_not_a_failure():
  """The workers go away while `setup` runs (its ssh fails): the request is made again, not given up on."""
  cloud = Cloud(requests=[["ACTIVE", "SUSPENDED"], ["ACTIVE"]], statuses=[DONE])
  fail_first_setup = {"left": 1}
  inner = cloud.__call__

  def runner(argv, **kwargs):
    if "nohup train attempt=0" in argv[-1] and fail_first_setup["left"]:
      fail_first_setup["left"] -= 1
      cloud.calls.append(argv)
      return subprocess.CompletedProcess(argv, 255, "", "Connection closed")
    return inner(argv, **kwargs)
  clock = supervisor.Clock(sleep=lambda s: None, now=lambda: 0.0)
  job, starts = _job()
  supervisor.supervise(TPU, job, FAST, NO_RETRY, runner=runner, clock=clock)
  assert starts == [0, 1] and cloud.requested() == ["create", "delete", "create", "delete"]


def test_sigterm_while_the_slice_stays_up_restarts_in_place():
  cloud = Cloud(requests=[["ACTIVE"]], statuses=[RUNNING, ["exited 75", "running"], ["exited 75", "exited 75"],
                                                RUNNING, DONE])
  assert _supervise(cloud) == [0, 1]  # Not restarted while host1 still ran (it was still saving).
  assert cloud.requested() == ["create", "delete"]


def test_a_job_missing_from_replaced_workers_is_started_again_in_place():
  cloud = Cloud(requests=[["ACTIVE"]], statuses=[RUNNING, ["absent", "absent"], ["absent", "absent"],
                                                ["absent", "absent"], RUNNING, DONE])
  assert _supervise(cloud) == [0, 1]


@pytest.mark.parametrize("keep", [False, True])
def test_a_failed_job_deletes_the_slice_it_made_unless_kept(keep):
  cloud = Cloud(requests=[["ACTIVE"]], statuses=[RUNNING, ["exited 1", "exited 75"]])
  with pytest.raises(LaunchError, match=r"the job host0 exited 1 \(not a preemption\); " +
                     ("pt-qr is kept" if keep else r"the slice was deleted \(logs in gs://b/run/logs\)")):
    _supervise(cloud, dataclasses.replace(FAST, keep_on_failure=keep))
  assert cloud.exists == keep


def test_an_existing_request_with_a_running_job_is_watched_not_started_again(capsys):
  cloud = Cloud(requests=[["ACTIVE"]], statuses=[RUNNING, RUNNING, DONE], exists=True)
  assert _supervise(cloud, dataclasses.replace(FAST, keep_when_done=True)) == []
  assert cloud.requested() == [] and "the job is already running on it: watching it" in capsys.readouterr().err


def test_an_existing_request_whose_job_finished_is_done():
  cloud = Cloud(requests=[["ACTIVE"]], statuses=[DONE], exists=True)
  assert _supervise(cloud) == [] and cloud.requested() == ["delete"]


def test_a_suspended_request_found_at_start_is_deleted_and_requested_again():
  cloud = Cloud(requests=[["SUSPENDED"], ["ACTIVE"]], statuses=[["absent", "absent"], DONE], exists=True)
  assert _supervise(cloud) == [0]
  assert cloud.requested() == ["delete", "create", "delete"]


def test_no_answer_is_never_taken_for_a_preemption():
  """gcloud keeps failing (network, credentials) or the workers do not answer: exit 1, nothing deleted."""
  for cloud in (Cloud(requests=[["ACTIVE"]], statuses=[None]), Cloud(requests=[["ACTIVE"]], statuses=[["running"]])):
    with pytest.raises(LaunchError, match=r"no answer from every worker about pt-qr for 3 polls .*nothing was "
                                          r"deleted"):
      _supervise(cloud)
    assert cloud.exists and cloud.requested() == ["create"]


def test_options_are_checked():
  for bad, message in ((dict(poll_s=0), r"--poll_s=0 must be a positive number of seconds"),
                       (dict(wait_s=-5), r"--wait_s=-5 must be"), (dict(max_restarts=-1), r"--max_restarts=-1 must")):
    with pytest.raises(LaunchError, match=message):
      supervisor.SuperviseOptions(**bad)


def test_wait_active_fails_on_failed_requests_and_timeouts():
  clock = supervisor.Clock(sleep=lambda s: None, now=iter(range(0, 1000, 60)).__next__)
  with pytest.raises(LaunchError, match=r"pt-qr is FAILED, not waiting for capacity"):
    supervisor.wait_active(TPU, FAST, Cloud(requests=[["WAITING_FOR_RESOURCES", "FAILED"]], exists=True), clock)
  with pytest.raises(LaunchError, match=r"still WAITING_FOR_RESOURCES after 100 s \(--wait_s\)"):
    supervisor.wait_active(TPU, FAST, Cloud(requests=[["WAITING_FOR_RESOURCES"]], exists=True), clock)
  with pytest.raises(LaunchError, match=r"pt-qr does not exist \(deleted, or never requested"):
    supervisor.wait_active(TPU, FAST, Cloud(), clock)


def test_verdict():
  assert supervisor.verdict({"a": "running", "b": "exited 0"}) == "running"
  assert supervisor.verdict({"a": "exited 0", "b": "exited 0"}) == "done"
  assert supervisor.verdict({"a": "exited 75", "b": "running"}) == "running"  # b is still saving.
  assert supervisor.verdict({"a": "exited 75", "b": "exited 75"}) == "preempted"
  assert supervisor.verdict({"a": "exited 0", "b": "absent"}) == "absent"
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
