"""Plots: curves from metrics.jsonl, method bars and the XPrompt figures are written, non-empty PNGs."""
import json
import os

import numpy as np
import pytest

from xprompt_jax import plotting

PNG = b"\x89PNG\r\n\x1a\n"


def _write_metrics(model_dir, rows):
  os.makedirs(model_dir, exist_ok=True)
  with open(os.path.join(model_dir, "metrics.jsonl"), "w") as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")


def _is_png(path):
  with open(path, "rb") as f:
    head = f.read(8)
  return head == PNG and os.path.getsize(path) > 5000


def test_run_curves_and_series(tmp_path):
  rows = [{"step": s, "kind": "train", "loss": 9.0 - s / 50, "learning_rate": 0.3} for s in range(20, 320, 20)]
  rows += [{"step": 150, "kind": "eval", "rte/accuracy": 50.0}, {"step": 300, "kind": "eval", "rte/accuracy": 55.0},
           {"step": 300, "kind": "eval", "rte/accuracy": 56.0}]  # A resumed run repeats a step: last wins.
  _write_metrics(tmp_path / "run", rows)
  paths = plotting.plot_run(str(tmp_path / "run"))
  assert [os.path.basename(p) for p in paths] == ["train_curves.png", "eval_curves.png"]
  assert all(_is_png(p) for p in paths)
  assert plotting.series(plotting.read_metrics(str(tmp_path / "run")), "eval") == {
      "rte/accuracy": ([150, 300], [50.0, 56.0])}
  assert plotting.final_eval(str(tmp_path / "run"), "rte/accuracy") == {"rte/accuracy": 56.0}


def test_method_comparison_bars(tmp_path):
  path = plotting.method_comparison(str(tmp_path / "bars.png"), {"prompt": 61.0, "prefix": 58.5, "xprompt": 63.2},
                                    "rte/accuracy", errors={"prompt": 1.5})
  assert _is_png(path)


def test_xprompt_figures_come_from_the_pipeline_plots(tmp_path):
  pytest.importorskip("xprompt_jax.pipelines.plots")
  from xprompt_jax.methods.xprompt import XPromptMasks
  from xprompt_jax.pipelines import xprompt as pipeline
  run = tmp_path / "xp"
  os.makedirs(run / "report")
  os.makedirs(run / "importance")
  rows = [{"variant": "prompt_tuning", "ratio": 0.0, "metric": 60.0, "backbone": "random"},
          {"variant": "pruned_only", "ratio": 0.3, "metric": 58.0}, {"variant": "pruned_only", "ratio": 0.6,
                                                                      "metric": 50.0},
          {"variant": "xprompt", "ratio": 0.3, "metric": 62.0}]
  with open(run / "report" / "results.jsonl", "w") as f:
    f.write("\n".join(json.dumps(r) for r in rows) + "\n")
  rng = np.random.default_rng(0)
  pipeline.save_masks(str(run / "importance" / "importance.npz"),
                      XPromptMasks(token=rng.random(6), piece=rng.random((6, 4))))
  paths = plotting.plot_run(str(run))
  assert sorted(os.path.basename(p) for p in paths) == ["importance_heatmap.png", "pruning_curve.png"]
  assert all(_is_png(p) for p in paths)


def test_bad_metrics_name_file_and_line(tmp_path):
  with pytest.raises(FileNotFoundError, match="metrics.jsonl does not exist"):
    plotting.plot_run(str(tmp_path / "none"))
  _write_metrics(tmp_path / "bad", [{"step": 1, "kind": "train", "loss": 1.0}])
  with open(tmp_path / "bad" / "metrics.jsonl", "a") as f:
    f.write("{not json\n")
  with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a json row"):
    plotting.read_metrics(str(tmp_path / "bad"))
  with pytest.raises(KeyError, match="no metric 'x'"):
    _write_metrics(tmp_path / "ev", [{"step": 1, "kind": "eval", "acc": 1.0}])
    plotting.final_eval(str(tmp_path / "ev"), "x")
