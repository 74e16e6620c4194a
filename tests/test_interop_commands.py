"""export / import / inspect / ensemble / plot through the console script on a tiny trained run (real RTE).

A prompt exported to PEFT and imported back scores every validation example exactly as the original run does
(the .npy path and the import checks are unit-tested in test_interop_t5x_prompt / test_interop_importing).
"""
import json
import os
import subprocess
import sys

import pytest

TINY = ["--gin_file=runs/smoke_cpu.gin", "--gin.TrainConfig.num_train_steps=2", "--gin.TrainConfig.log_period=1",
        "--gin.TrainConfig.eval_period=0", "--gin.TrainConfig.checkpoint_period=2", "--gin.PromptTuning.length=4",
        "--gin.DataConfig.inputs_length=32", "--gin.DataConfig.batch_size=4", "--gin.TrainConfig.encoder_length=36",
        "--gin.EvalConfig.max_examples=8", "--gin.EvalConfig.batch_size=8", "--gin.T5Config.emb_dim=16",
        "--gin.T5Config.mlp_dim=16", "--gin.T5Config.num_heads=2", "--gin.T5Config.head_dim=4"]


def _cli(*args):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  proc = subprocess.run([sys.executable, "-m", "xprompt_jax.cli", *args], capture_output=True, text=True, timeout=900,
                        env=env)
  return proc.returncode, proc.stdout + proc.stderr


def _scores(tmp_path, model_dir, name):
  out = tmp_path / f"{name}.jsonl"
  rc, log = _cli("infer", *TINY, f"--model_dir={model_dir}", f"--output={out}")
  assert rc == 0, log[-3000:]
  return [r["rank_scores"] for r in map(json.loads, open(out))]


@pytest.mark.slow
@pytest.mark.usefixtures("shared")
def test_export_import_inspect_ensemble_plot(tmp_path):
  run = tmp_path / "run"
  rc, log = _cli("train", *TINY, f"--model_dir={run}")
  assert rc == 0, log[-3000:]
  want = _scores(tmp_path, run, "run")

  rc, log = _cli("export", *TINY, f"--model_dir={run}", "--format=peft", f"--output={tmp_path / 'adapter'}")
  assert rc == 0 and "wrote a PEFT PROMPT_TUNING adapter (4 virtual tokens, step 2)" in log, log[-3000:]
  rc, log = _cli("import", *TINY, f"--model_dir={tmp_path / 'from_peft'}", "--from=peft",
                 f"--path={tmp_path / 'adapter'}")
  assert rc == 0 and "as step 0 of" in log, log[-3000:]
  assert _scores(tmp_path, tmp_path / "from_peft", "peft") == want

  rc, log = _cli("export", *TINY, f"--model_dir={run}", "--format=npy", f"--output={tmp_path / 'p.npy'}")
  assert rc == 0 and "wrote the 4x16 prompt of step 2 as npy" in log, log[-3000:]

  rc, log = _cli("inspect", *TINY, f"--prompts=run={run},npy={tmp_path / 'p.npy'}", "--k=3")
  assert rc == 0 and "prompt run (4x16): nearest tokens (cosine)" in log, log[-3000:]
  assert "prompt similarity (mean, cosine)" in log and "npy     1.000" in log, log[-3000:]

  rc, log = _cli("ensemble", *TINY, f"--prompts=a={run},b={tmp_path / 'from_peft'}",
                 f"--output={tmp_path / 'e.json'}")
  assert rc == 0 and "ensemble/accuracy" in log, log[-3000:]
  metrics = json.load(open(tmp_path / "e.json"))["metrics"]
  assert metrics["ensemble/accuracy"] == metrics["a/accuracy"] == metrics["b/accuracy"]  # Identical prompts.

  rc, log = _cli("plot", f"--model_dir={run}", f"--compare=a={run},b={run}")
  assert rc == 0, log[-2000:]
  for name in ("train_curves", "eval_curves", "method_comparison"):
    assert os.path.getsize(run / "plots" / f"{name}.png") > 5000
