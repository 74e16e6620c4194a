"""export / import / inspect / ensemble / plot through the console script on a tiny trained run (real RTE).

A prompt exported to PEFT and imported back scores every validation example exactly as the original run does
(the .npy path and the import checks are unit-tested in test_interop_t5x_prompt / test_interop_importing).
"""
import json
import os

from cli_helpers import run_cli, tiny_flags
import pytest

TINY = tiny_flags(2, 1, 2)


def _scores(tmp_path, model_dir, name):
  out = tmp_path / f"{name}.jsonl"
  rc, log = run_cli("infer", *TINY, f"--model_dir={model_dir}", f"--output={out}")
  assert rc == 0, log[-3000:]
  return [r["rank_scores"] for r in map(json.loads, open(out))]


@pytest.mark.slow
@pytest.mark.usefixtures("shared")
def test_export_import_inspect_ensemble_plot(tmp_path):
  run = tmp_path / "run"
  rc, log = run_cli("train", *TINY, f"--model_dir={run}")
  assert rc == 0, log[-3000:]
  want = _scores(tmp_path, run, "run")

  rc, log = run_cli("export", *TINY, f"--model_dir={run}", "--format=peft", f"--output={tmp_path / 'adapter'}")
  assert rc == 0 and "wrote a PEFT PROMPT_TUNING adapter (4 virtual tokens, step 2)" in log, log[-3000:]
  rc, log = run_cli("import", *TINY, f"--model_dir={tmp_path / 'from_peft'}", "--from=peft",
                 f"--path={tmp_path / 'adapter'}")
  assert rc == 0 and "as step 0 of" in log, log[-3000:]
  assert _scores(tmp_path, tmp_path / "from_peft", "peft") == want

  rc, log = run_cli("export", *TINY, f"--model_dir={run}", "--format=npy", f"--output={tmp_path / 'p.npy'}")
  assert rc == 0 and "wrote the 4x16 prompt of step 2 as npy" in log, log[-3000:]

  rc, log = run_cli("inspect", *TINY, f"--prompts=run={run},npy={tmp_path / 'p.npy'}", "--k=3")
  assert rc == 0 and "prompt run (4x16): nearest tokens (cosine)" in log, log[-3000:]
  assert "prompt similarity (mean, cosine)" in log and "npy     1.000" in log, log[-3000:]

  rc, log = run_cli("ensemble", *TINY, f"--prompts=a={run},b={tmp_path / 'from_peft'}",
                 f"--output={tmp_path / 'e.json'}")
  assert rc == 0 and "ensemble/accuracy" in log, log[-3000:]
  metrics = json.load(open(tmp_path / "e.json"))["metrics"]
  assert metrics["ensemble/accuracy"] == metrics["a/accuracy"] == metrics["b/accuracy"]  # Identical prompts.

  rc, log = run_cli("plot", f"--model_dir={run}", f"--compare=a={run},b={run}")
  assert rc == 0, log[-2000:]
  for name in ("train_curves", "eval_curves", "method_comparison"):
    assert os.path.getsize(run / "plots" / f"{name}.png") > 5000
