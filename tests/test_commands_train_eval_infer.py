"""The train → eval → infer commands end to end through the console script (tiny random model, real RTE)."""
import json
import os
import subprocess
import sys

import pytest

TINY = ["--gin_file=runs/smoke_cpu.gin", "--gin.TrainConfig.num_train_steps=4", "--gin.TrainConfig.log_period=2",
        "--gin.TrainConfig.eval_period=0", "--gin.TrainConfig.checkpoint_period=2", "--gin.PromptTuning.length=4",
        "--gin.DataConfig.inputs_length=32", "--gin.DataConfig.batch_size=4", "--gin.TrainConfig.encoder_length=36",
        "--gin.EvalConfig.max_examples=8", "--gin.EvalConfig.batch_size=8", "--gin.T5Config.emb_dim=16",
        "--gin.T5Config.mlp_dim=16", "--gin.T5Config.num_heads=2", "--gin.T5Config.head_dim=4"]


def _cli(*args):
  # One CPU device, as a user's machine has (the test process simulates 8 for the mesh tests).
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  proc = subprocess.run([sys.executable, "-m", "xprompt_jax.cli", *args], capture_output=True, text=True, timeout=900,
                        env=env)
  return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.usefixtures("shared")
def test_train_eval_infer(tmp_path):
  model_dir = tmp_path / "run"
  rc, log = _cli("train", *TINY, f"--model_dir={model_dir}")
  assert rc == 0, log[-3000:]
  assert "data: super_glue_rte_v102[train]: local file" in log
  assert "method: prompt  trainable parameters: 64" in log
  assert "eval step 4: super_glue_rte_v102/accuracy=" in log
  lines = [json.loads(l) for l in open(model_dir / "metrics.jsonl")]
  assert [l["step"] for l in lines if l["kind"] == "train"] == [2, 4]
  assert sorted(p.name for p in (model_dir / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "4"]

  rc, log = _cli("eval", *TINY, f"--model_dir={model_dir}", "--step=2")
  assert rc == 0 and "eval step 2 (validation, rank): super_glue_rte_v102/accuracy=" in log, log[-3000:]
  assert (model_dir / "eval_validation_step2.json").exists()

  rows = tmp_path / "in.jsonl"
  rows.write_text('{"inputs": "rte hypothesis: a. premise: b.", "id": 1}\n{"inputs": "another one"}\n')
  out = tmp_path / "preds.jsonl"
  rc, log = _cli("infer", *TINY, f"--model_dir={model_dir}", f"--inputs={rows}", f"--output={out}")
  assert rc == 0, log[-3000:]
  preds = [json.loads(l) for l in open(out)]
  assert [p.get("id") for p in preds] == [1, None] and all(isinstance(p["prediction"], str) for p in preds)

  out = tmp_path / "val.jsonl"
  rc, log = _cli("infer", *TINY, f"--model_dir={model_dir}", f"--output={out}")
  assert rc == 0, log[-3000:]
  records = [json.loads(l) for l in open(out)]
  assert len(records) == 8 and set(records[0]["rank_scores"]) == {"entailment", "not_entailment"}


def test_unknown_gin_binding_and_empty_model_dir(tmp_path):
  rc, log = _cli("train", *TINY, "--gin.TrainConfig.num_train_stepz=3", f"--model_dir={tmp_path / 'a'}")
  assert rc == 1 and "num_train_stepz" in log, log[-2000:]
  rc, log = _cli("eval", *TINY, f"--model_dir={tmp_path / 'empty'}")
  assert rc == 1 and "holds no checkpoint" in log or "no checkpoint folder" in log, log[-2000:]


@pytest.mark.slow
def test_mixed_task_infer_through_the_cli(tmp_path):
  """Rows naming different prompts are served in shared batches by `infer --prompts`."""
  model_dir = tmp_path / "run"
  rc, log = _cli("train", *TINY, f"--model_dir={model_dir}")
  assert rc == 0, log[-3000:]
  rows = tmp_path / "mix.jsonl"
  rows.write_text('{"inputs": "rte hypothesis: a. premise: b.", "prompt": "a"}\n'
                  '{"inputs": "rte hypothesis: c. premise: d.", "prompt": "b"}\n')
  out = tmp_path / "out.jsonl"
  rc, log = _cli("infer", *TINY, f"--model_dir={model_dir}", f"--inputs={rows}",
                 f"--prompts=a={model_dir},b={model_dir}", f"--output={out}")
  assert rc == 0 and "2 prompts, 1 shared batches" in log, log[-3000:]
  assert [json.loads(l)["prompt"] for l in open(out)] == ["a", "b"]
  rc, log = _cli("infer", *TINY, f"--model_dir={model_dir}", f"--prompts=a={model_dir}", f"--output={out}")
  assert rc == 1 and "--prompts needs --inputs" in log, log[-2000:]
