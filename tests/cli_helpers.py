"""Shared by the tests that run `xprompt-jax` in subprocesses: a tiny smoke configuration and the runner."""
import subprocess
import sys

import xla_env

# runs/smoke_cpu.gin shrunk to seconds: a 16-wide random T5, 4-token prompt, 32-token inputs, batch 4.
TINY_MODEL = ["--gin_file=runs/smoke_cpu.gin", "--gin.TrainConfig.eval_period=0", "--gin.PromptTuning.length=4",
              "--gin.DataConfig.inputs_length=32", "--gin.DataConfig.batch_size=4",
              "--gin.TrainConfig.encoder_length=36", "--gin.EvalConfig.max_examples=8",
              "--gin.EvalConfig.batch_size=8", "--gin.T5Config.emb_dim=16", "--gin.T5Config.mlp_dim=16",
              "--gin.T5Config.num_heads=2", "--gin.T5Config.head_dim=4"]


def tiny_flags(steps: int, log_period: int, checkpoint_period: int, *extra: str) -> list[str]:
  """TINY_MODEL plus the loop's step counts and any further flags."""
  return [*TINY_MODEL, f"--gin.TrainConfig.num_train_steps={steps}", f"--gin.TrainConfig.log_period={log_period}",
          f"--gin.TrainConfig.checkpoint_period={checkpoint_period}", *extra]


def one_device_env() -> dict:
  """The environment without the 8 simulated devices of the test process: one CPU device, as a user has (any
  other XLA flags of the run, such as a thread setting, are kept)."""
  return xla_env.env(None)


def run_cli(*args: str, timeout: int = 900) -> tuple[int, str]:
  """(exit status, stdout + stderr) of `python -m xprompt_jax.cli ARGS` on one CPU device."""
  proc = subprocess.run([sys.executable, "-m", "xprompt_jax.cli", *args], capture_output=True, text=True,
                        timeout=timeout, env=one_device_env())
  return proc.returncode, proc.stdout + proc.stderr
