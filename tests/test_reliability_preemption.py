"""Preemption: SIGTERM (or the Cloud TPU preemption notice) saves at the next step boundary and exits cleanly, and
the resumed run is bitwise identical to an uninterrupted one: per-step losses, final trainable parameters and
optimizer state, and the exact sequence of input batches (none skipped, none repeated)."""
import json
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import xla_env

WORKER = str(pathlib.Path(__file__).with_name("multihost_worker.py"))
STEPS = 24
TINY = ["--gin_file=runs/smoke_cpu.gin", f"--gin.TrainConfig.num_train_steps={STEPS}",
        "--gin.TrainConfig.log_period=1", "--gin.TrainConfig.eval_period=0",
        "--gin.TrainConfig.checkpoint_period=1000", "--gin.TrainConfig.progress_bar=False",
        "--gin.PromptTuning.length=4", "--gin.DataConfig.inputs_length=32", "--gin.DataConfig.batch_size=4",
        "--gin.TrainConfig.encoder_length=36", "--gin.EvalConfig.max_examples=8", "--gin.EvalConfig.batch_size=8",
        "--gin.T5Config.emb_dim=16", "--gin.T5Config.mlp_dim=16", "--gin.T5Config.num_heads=2",
        "--gin.T5Config.head_dim=4", "--gin.train.batches_fn=@recorded_batches"]


def _env(batch_log, sleep=0.0):
  env = xla_env.env(None)  # One CPU device, as on a user's machine.
  env.update(XPROMPT_TEST_BATCH_LOG=str(batch_log), XPROMPT_TEST_BATCH_SLEEP=str(sleep))
  return env


def _start(model_dir, batch_log, sleep=0.0):
  return subprocess.Popen([sys.executable, WORKER, "train", *TINY, f"--model_dir={model_dir}"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(batch_log, sleep))


def _finish(proc):
  out, _ = proc.communicate(timeout=900)
  return proc.returncode, out


def _lines(path, kind):
  return [json.loads(l) for l in open(path) if json.loads(l)["kind"] == kind]


def _final_state(model_dir):
  from xprompt_jax.training import checkpointing
  with checkpointing.TrainCheckpointer(model_dir, read_only=True) as ckpt:
    state, meta = ckpt.restore(ckpt.latest_step())
  return jax.tree_util.tree_flatten_with_path(state)[0], meta


@pytest.mark.slow
@pytest.mark.usefixtures("shared")
def test_sigterm_resume_is_bitwise_identical(tmp_path):
  ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
  reference = _start(ref_dir, tmp_path / "ref_batches")
  interrupted = _start(run_dir, tmp_path / "run_batches", sleep=0.3)
  metrics = run_dir / "metrics.jsonl"
  deadline = time.time() + 600
  while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
    assert interrupted.poll() is None and time.time() < deadline, interrupted.communicate()[0][-3000:]
    time.sleep(0.05)
  interrupted.send_signal(signal.SIGTERM)
  rc, log = _finish(interrupted)
  from xprompt_jax import exit_status
  assert rc == exit_status.PREEMPTED, log[-3000:]  # Not 0: a supervisor must not take it for a finished run.
  stopped = len(_lines(metrics, "train"))
  assert 3 <= stopped < STEPS and f"preempted: saved step {stopped} to {run_dir}" in log, log[-3000:]
  assert not _lines(metrics, "eval")  # Exited at the step boundary, before the final evaluation.

  resumed = _start(run_dir, tmp_path / "run_batches")
  rc, log = _finish(resumed)
  assert rc == 0 and f"resumed from step {stopped} of {run_dir} (input position {stopped})" in log, log[-3000:]
  rc, log = _finish(reference)
  assert rc == 0, log[-3000:]

  keys = ("step", "loss", "z_loss", "accuracy", "grad_norm", "learning_rate")
  ref_train = [{k: l[k] for k in keys} for l in _lines(ref_dir / "metrics.jsonl", "train")]
  run_train = [{k: l[k] for k in keys} for l in _lines(metrics, "train")]
  assert [l["step"] for l in run_train] == list(range(1, STEPS + 1))
  assert run_train == ref_train  # Exact float equality of every step's metrics.
  assert _lines(metrics, "eval")[0] == _lines(ref_dir / "metrics.jsonl", "eval")[0]

  ref_batches = [json.loads(l) for l in open(tmp_path / "ref_batches.0")]
  run_batches = [json.loads(l) for l in open(tmp_path / "run_batches.0")]
  assert [b["position"] for b in run_batches] == list(range(STEPS))  # None skipped, none repeated.
  assert [b["sha256"] for b in run_batches] == [b["sha256"] for b in ref_batches]
  assert len({b["sha256"] for b in ref_batches}) == STEPS

  (ref_leaves, ref_meta), (run_leaves, run_meta) = _final_state(ref_dir), _final_state(run_dir)
  assert ref_meta["step"] == run_meta["step"] == STEPS and ref_meta["data_position"] == run_meta["data_position"]
  assert [p for p, _ in ref_leaves] == [p for p, _ in run_leaves]
  names = [jax.tree_util.keystr(p) for p, _ in ref_leaves]
  assert any("trainable" in n for n in names) and any("opt_state" in n for n in names)
  for (path, a), (_, b) in zip(ref_leaves, run_leaves):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), jax.tree_util.keystr(path)


@pytest.mark.usefixtures("shared")
def test_cloud_tpu_preemption_notice_saves_and_exits(tmp_path, monkeypatch):
  """The preemption sync point (what Cloud TPU's maintenance notice triggers) is polled at every step boundary."""
  import contextlib
  import io
  from absl import flags
  import gin
  from jax.experimental import multihost_utils
  from xprompt_jax import cli
  polled = []

  def notice(step):
    polled.append(step)
    return step == 2

  monkeypatch.setattr(multihost_utils, "reached_preemption_sync_point", notice)
  flags.FLAGS.unparse_flags()
  gin.clear_config()
  args = [a for a in TINY if "batches_fn" not in a and "batch_size" not in a and "num_train_steps" not in a]
  buffer = io.StringIO()
  try:
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
      with contextlib.suppress(SystemExit):
        cli.run(["xprompt-jax", "train", *args, "--gin.DataConfig.batch_size=8",
                 "--gin.TrainConfig.num_train_steps=5", f"--model_dir={tmp_path}"])
  finally:
    gin.clear_config()
  assert f"preempted: saved step 2 to {tmp_path}" in buffer.getvalue(), buffer.getvalue()[-3000:]
  assert polled[:2] == [1, 2]  # Step boundaries 1 and 2 (orbax also polls it while saving).
  from xprompt_jax.training import checkpointing
  with checkpointing.TrainCheckpointer(tmp_path, read_only=True) as ckpt:
    assert ckpt.all_steps() == [2] and ckpt.read_meta(2)["data_position"] == 2
