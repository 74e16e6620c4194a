"""XPrompt end to end, the long runs (@pytest.mark.slow): the full 10 %..90 % sweep with every control from one
run, the 32-shot setting, XPrompt Transfer from CB to RTE, and the `xprompt-jax xprompt` command on the shipped
smoke config. Tiny RANDOM-weight T5, real SuperGLUE data from ../shared."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from test_pipeline_xprompt import check_saved_masks, tiny_run_kwargs
from xprompt_jax.methods.xprompt import active_pieces
from xprompt_jax.pipelines import xprompt as px
from xprompt_jax.pipelines import xprompt_config

pytestmark = pytest.mark.slow


def test_full_sweep_with_every_control(shared, tmp_path):
  del shared
  model_dir = str(tmp_path / "cb")
  result = px.run_xprompt(model_dir, **tiny_run_kwargs(
      ratios=xprompt_config.PAPER_RATIOS, reversed_control=True, random_control=True, length_control=True, token_only=True,
      piece_only=True))
  rows = result["rows"]
  variants = [r["variant"] for r in rows]
  assert variants == (["prompt_tuning"] + ["pruned_only"] * 9 + ["xprompt", "length", "piece_only", "random",
                                                                  "reversed", "token_only"])
  assert all(r["best_step"] > 0 for r in rows if r["variant"] != "pruned_only")  # Each control was retrained.
  sweep = {r["ratio"]: r for r in rows if r["variant"] == "pruned_only"}
  assert [sweep[r]["kept_pieces"] for r in xprompt_config.PAPER_RATIOS] == [round((1 - r) * 32) for r in xprompt_config.PAPER_RATIOS]
  chosen = json.load(open(os.path.join(model_dir, "sweep", "chosen.json")))["ratios"][0]
  assert chosen == px.choose_ratios({r: sweep[r]["metric"] for r in sweep}, 1)[0]
  tag = px.ratio_tag(chosen)
  check_saved_masks(model_dir, {f"controls/reversed_{tag}": "highest", f"controls/random_{tag}": "random"}, chosen)
  by_variant = {r["variant"]: r for r in rows}
  xprompt_masks = px.load_masks(os.path.join(model_dir, f"rewind_{tag}", "masks.npz"))
  assert by_variant["length"]["kept_tokens"] == px.kept_counts(xprompt_masks)["kept_tokens"]
  token_only = px.load_masks(os.path.join(model_dir, "controls", f"token_only_{tag}", "masks.npz"))
  assert np.asarray(token_only.piece).all()
  piece_only = px.load_masks(os.path.join(model_dir, "controls", f"piece_only_{tag}", "masks.npz"))
  assert np.asarray(piece_only.token).all()


def test_32_shots_then_transfer_to_rte(shared, tmp_path):
  del shared
  source = str(tmp_path / "cb_32shot")
  kwargs = tiny_run_kwargs(num_shots=32, shots_seed=5, num_epochs=0.5)
  result = px.run_xprompt(source, **kwargs)
  assert json.load(open(os.path.join(source, "pt", "result.json")))["last_step"] == 2  # ceil(0.5 x 32 / 8).
  shots = json.load(open(os.path.join(source, "shots.json")))
  assert len(shots["indices"]) == 32 and shots["seed"] == 5
  importance = json.load(open(os.path.join(source, "importance", "result.json")))
  assert importance["num_examples"] == 16  # importance_max_examples of the 32 shots.
  assert result["rows"][0]["variant"] == "prompt_tuning"

  target = str(tmp_path / "rte_transfer")
  kwargs = tiny_run_kwargs(transfer_from=source)
  kwargs["data_cfg"] = dataclasses.replace(kwargs["data_cfg"], mixture_or_task_name="super_glue_rte_v102")
  px.run_xprompt(target, **kwargs)
  source_prompt = np.load(os.path.join(source, "report", "final_prompt.npy"))
  np.testing.assert_array_equal(np.load(os.path.join(target, "pt", "initial_prompt.npy")), source_prompt)
  source_masks = px.load_masks(os.path.join(source, "report", "final_masks.npz"))
  target_masks = px.load_masks(os.path.join(target, "report", "final_masks.npz"))
  source_kept, target_kept = active_pieces(source_masks), active_pieces(target_masks)
  assert not (target_kept & ~source_kept).any()  # Pruning went on from the source's surviving entries.
  assert target_kept.sum() < source_kept.sum()


def test_command_on_the_smoke_config(shared, tmp_path):
  del shared
  model_dir = str(tmp_path / "smoke")
  fast = ["--gin.TrainConfig.num_train_steps=4", "--gin.TrainConfig.eval_period=2",
          "--gin.XPromptPipelineConfig.ratios=(0.5,)", "--gin.XPromptPipelineConfig.importance_max_examples=8",
          "--gin.XPromptPipelineConfig.length_control=False", "--gin.XPromptPipelineConfig.token_only=False",
          "--gin.XPromptPipelineConfig.piece_only=False", "--gin.EvalConfig.max_examples=8"]
  run = subprocess.run([sys.executable, "-m", "xprompt_jax.cli", "xprompt", "--gin_file=runs/xprompt_smoke_cpu.gin",
                        f"--model_dir={model_dir}", *fast], capture_output=True, text=True, timeout=900)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "RANDOM-weight backbone" in run.stdout and "| reversed | 50% |" in run.stdout
  assert os.path.exists(os.path.join(model_dir, "report", "results.md"))
  bad = subprocess.run([sys.executable, "-m", "xprompt_jax.cli", "xprompt", "--gin_file=runs/xprompt_smoke_cpu.gin",
                        f"--model_dir={tmp_path / 'bad'}", "--gin.XPrompt.pieces=5"], capture_output=True, text=True,
                       timeout=300)
  assert bad.returncode == 1 and "D=32 is not divisible into k=5 equal pieces" in bad.stderr
