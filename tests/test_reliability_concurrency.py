"""Two `xprompt-jax train` runs pointed at one --model_dir: the second refuses clearly (the checkpointer's model_dir
lock) and writes nothing; the first finishes as if alone."""
import json
import pathlib
import subprocess
import sys
import time

from cli_helpers import one_device_env, tiny_flags
import pytest

WORKER = str(pathlib.Path(__file__).with_name("multihost_worker.py"))
STEPS = 12
TINY = tiny_flags(STEPS, 1, 4, "--gin.TrainConfig.progress_bar=False", "--gin.train.batches_fn=@recorded_batches")


def _start(model_dir, hold):
  env = one_device_env()
  env["XPROMPT_TEST_HOLD"] = str(hold)
  return subprocess.Popen([sys.executable, WORKER, "train", *TINY, f"--model_dir={model_dir}"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


@pytest.mark.slow
@pytest.mark.usefixtures("shared")
def test_second_run_on_same_model_dir_refuses(tmp_path):
  model_dir = tmp_path / "run"
  release = tmp_path / "release"
  first = _start(model_dir, hold=release)  # Trains one step, then waits (holding the lock) until `release` exists.
  metrics = model_dir / "metrics.jsonl"
  deadline = time.time() + 600
  while not metrics.exists():
    assert first.poll() is None and time.time() < deadline, first.communicate()[0][-3000:]
    time.sleep(0.05)
  second = _start(model_dir, hold=release)
  out2, _ = second.communicate(timeout=900)
  assert first.poll() is None
  assert second.returncode == 1, out2[-3000:]
  assert f"xprompt-jax train: error: {model_dir} is in use by another training run (pid {first.pid}" in out2, out2
  assert "Traceback" not in out2

  release.write_text("")
  out1, _ = first.communicate(timeout=900)
  assert first.returncode == 0, out1[-3000:]
  lines = [json.loads(l) for l in open(metrics)]
  assert [l["step"] for l in lines if l["kind"] == "train"] == list(range(1, STEPS + 1))
  assert [l["step"] for l in lines if l["kind"] == "eval"] == [STEPS]
  from xprompt_jax.training import checkpointing
  with checkpointing.TrainCheckpointer(model_dir, read_only=True) as ckpt:
    assert ckpt.all_steps() == [4, 8, 12]
    assert ckpt.restore(STEPS)[1]["data_position"] == STEPS
