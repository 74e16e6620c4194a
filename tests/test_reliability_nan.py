"""Non-finite loss through the CLI: a NaN in one example stops training (or skips the step with
`TrainConfig.nonfinite='skip'`) with a message naming the step and the example, and no checkpoint ever holds a
non-finite value. The NaN comes from the input (a NaN loss weight in row 3 of input batch 2, i.e. example 11)."""
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
import xla_env

WORKER = str(pathlib.Path(__file__).with_name("multihost_worker.py"))
TINY = ["--gin_file=runs/smoke_cpu.gin", "--gin.TrainConfig.num_train_steps=5", "--gin.TrainConfig.log_period=1",
        "--gin.TrainConfig.eval_period=0", "--gin.TrainConfig.checkpoint_period=1",
        "--gin.TrainConfig.keep_checkpoints=None", "--gin.TrainConfig.progress_bar=False",
        "--gin.PromptTuning.length=4", "--gin.DataConfig.inputs_length=32", "--gin.DataConfig.batch_size=4",
        "--gin.TrainConfig.encoder_length=36", "--gin.EvalConfig.max_examples=8", "--gin.EvalConfig.batch_size=8",
        "--gin.T5Config.emb_dim=16", "--gin.T5Config.mlp_dim=16", "--gin.T5Config.num_heads=2",
        "--gin.T5Config.head_dim=4", "--gin.train.batches_fn=@recorded_batches"]


def _start(model_dir, *extra):
  env = xla_env.env(None)
  env["XPROMPT_TEST_POISON"] = "2:3"
  return subprocess.Popen([sys.executable, WORKER, "train", *TINY, *extra, f"--model_dir={model_dir}"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _checkpoints(model_dir):
  from xprompt_jax.training import checkpointing
  out = {}
  with checkpointing.TrainCheckpointer(model_dir, read_only=True) as ckpt:
    for step in ckpt.all_steps():
      state, _ = ckpt.restore(step)
      out[step] = state
  return out


def _all_finite(state):
  return all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state)
             if np.issubdtype(np.asarray(x).dtype, np.inexact))


@pytest.mark.slow
@pytest.mark.usefixtures("shared")
def test_nonfinite_loss_stops_or_skips(tmp_path):
  stop = _start(tmp_path / "stop")
  skip = _start(tmp_path / "skip", "--gin.TrainConfig.nonfinite='skip'")
  out_stop, _ = stop.communicate(timeout=900)
  out_skip, _ = skip.communicate(timeout=900)

  assert stop.returncode == 1, out_stop[-3000:]
  assert ("xprompt-jax train: error: non-finite loss or gradient at step 3 (input batch 2, example indices [11]); "
          "nothing was saved for this step") in out_stop, out_stop[-3000:]
  assert "Traceback" not in out_stop
  saved = _checkpoints(tmp_path / "stop")
  assert sorted(saved) == [1, 2] and all(_all_finite(s) for s in saved.values())

  assert skip.returncode == 0, out_skip[-3000:]
  assert "non-finite loss or gradient at step 3 (input batch 2, example indices [11]): step skipped" in out_skip
  saved = _checkpoints(tmp_path / "skip")
  assert sorted(saved) == [1, 2, 3, 4, 5] and all(_all_finite(s) for s in saved.values())
  # The skipped step left the parameters as they were; the steps after it trained again.
  same = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)), saved[2]["trainable"],
                      saved[3]["trainable"])
  assert all(jax.tree.leaves(same))
  assert not np.array_equal(np.asarray(saved[3]["trainable"]["prompt"]), np.asarray(saved[4]["trainable"]["prompt"]))
