"""The train → eval → infer commands end to end through the console script (tiny random model, real RTE)."""
import json

from cli_helpers import run_cli, tiny_flags
import numerics
import numpy as np
import pytest

TINY = tiny_flags(4, 2, 2)
EVAL_INPUTS = 32  # The evaluation truncates inputs to DataConfig.inputs_length (TINY_MODEL), EOS included.


@pytest.mark.usefixtures("shared")
def test_train_eval_infer(tmp_path):
  model_dir = tmp_path / "run"
  rc, log = run_cli("train", *TINY, f"--model_dir={model_dir}")
  assert rc == 0, log[-3000:]
  assert "data: super_glue_rte_v102[train]: local file" in log
  assert "method: prompt  trainable parameters: 64" in log
  assert "eval step 4: super_glue_rte_v102/accuracy=" in log
  lines = [json.loads(l) for l in open(model_dir / "metrics.jsonl")]
  assert [l["step"] for l in lines if l["kind"] == "train"] == [2, 4]
  assert sorted(p.name for p in (model_dir / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "4"]

  rc, log = run_cli("eval", *TINY, f"--model_dir={model_dir}", "--step=2")
  assert rc == 0 and "eval step 2 (validation, rank): super_glue_rte_v102/accuracy=" in log, log[-3000:]
  assert (model_dir / "eval_validation_step2.json").exists()

  rows = tmp_path / "in.jsonl"
  rows.write_text('{"inputs": "rte hypothesis: a. premise: b.", "id": 1}\n{"inputs": "another one"}\n')
  out = tmp_path / "preds.jsonl"
  rc, log = run_cli("infer", *TINY, f"--model_dir={model_dir}", f"--inputs={rows}", f"--output={out}")
  assert rc == 0, log[-3000:]
  preds = [json.loads(l) for l in open(out)]
  assert [p.get("id") for p in preds] == [1, None] and all(isinstance(p["prediction"], str) for p in preds)

  out = tmp_path / "val.jsonl"
  rc, log = run_cli("infer", *TINY, f"--model_dir={model_dir}", f"--output={out}")
  assert rc == 0, log[-3000:]
  records = [json.loads(l) for l in open(out)]
  assert len(records) == 8 and set(records[0]["rank_scores"]) == {"entailment", "not_entailment"}

  # `score` with the trained run gives the log-likelihoods the evaluation ranked the labels by (prompt applied).
  pairs = tmp_path / "pairs.jsonl"
  pairs.write_text("".join(json.dumps({"inputs": r["inputs"], "targets": label}) + "\n"
                           for r in records[:3] for label in ("entailment", "not_entailment")))
  scored = tmp_path / "scored.jsonl"
  rc, log = run_cli("score", *TINY, f"--model_dir={model_dir}", f"--inputs={pairs}", f"--output={scored}",
                    f"--max_input_length={EVAL_INPUTS - 1}")
  assert rc == 0 and f"+ prompt from {model_dir} (step 4)" in log, log[-3000:]
  scores = [json.loads(l)["score"] for l in open(scored)]
  expected = [r["rank_scores"][label] for r in records[:3] for label in ("entailment", "not_entailment")]
  numerics.assert_close(np.array(scores), np.array(expected), roundings=numerics.IMPLEMENTATIONS)
  rc, log = run_cli("score", *TINY, f"--model_dir={model_dir}", "--checkpoint=x", f"--inputs={pairs}",
                    f"--output={scored}")
  assert rc == 1 and "give exactly one of --checkpoint (a frozen T5) and --model_dir" in log, log[-2000:]

  # T5X's infer layout: <task>-predict.jsonl-00000-of-00001, {"input": pretokenized features, "prediction"}.
  t5x_dir = tmp_path / "t5x_infer"
  rc, log = run_cli("infer", *TINY, f"--model_dir={model_dir}", f"--output_dir={t5x_dir}")
  assert rc == 1 and "--output_dir writes T5X's decoded predictions, but super_glue_rte_v102 is evaluated by rank" \
      in log and not t5x_dir.exists(), log[-2000:]
  rc, log = run_cli("infer", *TINY, f"--model_dir={model_dir}", f"--output_dir={t5x_dir}",
                    "--gin.EvalConfig.mode='both'")
  assert rc == 0, log[-3000:]
  lines = [json.loads(l) for l in open(t5x_dir / "super_glue_rte_v102-predict.jsonl-00000-of-00001")]
  assert len(lines) == 8 and set(lines[0]) == {"input", "prediction"}
  assert lines[0]["input"]["inputs_pretokenized"] == records[0]["inputs"]
  assert lines[0]["input"]["targets_pretokenized"] == records[0]["targets"]
  rc, log = run_cli("infer", *TINY, f"--model_dir={model_dir}", f"--inputs={rows}", f"--output_dir={t5x_dir}")
  assert rc == 0, log[-3000:]
  lines = [json.loads(l) for l in open(t5x_dir / "in-predict.jsonl-00000-of-00001")]
  assert [l["input"] for l in lines] == [{"inputs_pretokenized": "rte hypothesis: a. premise: b."},
                                         {"inputs_pretokenized": "another one"}]
  rc, log = run_cli("infer", *TINY, f"--model_dir={model_dir}", f"--output={out}", f"--output_dir={t5x_dir}")
  assert rc == 1 and "give exactly one of --output (a jsonl) and --output_dir" in log


def test_unknown_gin_binding_and_empty_model_dir(tmp_path):
  rc, log = run_cli("train", *TINY, "--gin.TrainConfig.num_train_stepz=3", f"--model_dir={tmp_path / 'a'}")
  assert rc == 1 and "num_train_stepz" in log, log[-2000:]
  rc, log = run_cli("eval", *TINY, f"--model_dir={tmp_path / 'empty'}")
  assert rc == 1 and "holds no checkpoint" in log or "no checkpoint folder" in log, log[-2000:]


@pytest.mark.slow
def test_mixed_task_infer_through_therun_cli(tmp_path):
  """Rows naming different prompts are served in shared batches by `infer --prompts`."""
  model_dir = tmp_path / "run"
  rc, log = run_cli("train", *TINY, f"--model_dir={model_dir}")
  assert rc == 0, log[-3000:]
  rows = tmp_path / "mix.jsonl"
  rows.write_text('{"inputs": "rte hypothesis: a. premise: b.", "prompt": "a"}\n'
                  '{"inputs": "rte hypothesis: c. premise: d.", "prompt": "b"}\n')
  out = tmp_path / "out.jsonl"
  rc, log = run_cli("infer", *TINY, f"--model_dir={model_dir}", f"--inputs={rows}",
                 f"--prompts=a={model_dir},b={model_dir}", f"--output={out}")
  assert rc == 0 and "2 prompts, 1 shared batches" in log, log[-3000:]
  assert [json.loads(l)["prompt"] for l in open(out)] == ["a", "b"]
  rc, log = run_cli("infer", *TINY, f"--model_dir={model_dir}", f"--prompts=a={model_dir}", f"--output={out}")
  assert rc == 1 and "--prompts needs --inputs" in log, log[-2000:]
