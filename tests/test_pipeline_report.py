"""The XPrompt report (pipelines.report) and its figures (pipelines.plots): the table rows read from stage files,
the RANDOM-backbone label, the best retrained prompt, nearest words by cosine, and the PNGs."""
import json
import os

import numpy as np
import pytest

import numerics
from xprompt_jax.pipelines import plots
from xprompt_jax.pipelines import report


def _write(path, value):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(value, f)


def _summary(metric, kept_tokens, kept_pieces, total_tokens=8, **extra):
  return {"metric": metric, "kept_tokens": kept_tokens, "kept_pieces": kept_pieces, "total_tokens": total_tokens,
          "total_pieces": total_tokens * 4, "best_step": 10, **extra}


@pytest.fixture()
def run_dir(tmp_path):
  d = str(tmp_path)
  _write(os.path.join(d, "pt", "result.json"), _summary(50.0, 8, 32, stage="pt"))
  _write(os.path.join(d, "sweep", "r0.30", "result.json"), _summary(48.0, 7, 22))
  _write(os.path.join(d, "sweep", "r0.60", "result.json"), _summary(52.0, 5, 13))
  _write(os.path.join(d, "rewind_r0.60", "result.json"), _summary(55.0, 5, 13, stage="rewind_r0.60", ratio=0.6))
  _write(os.path.join(d, "rewind_r0.30", "result.json"), _summary(55.0, 7, 22, stage="rewind_r0.30", ratio=0.3))
  _write(os.path.join(d, "controls", "reversed_r0.60", "result.json"),
         _summary(30.0, 4, 13, stage="controls/reversed_r0.60", ratio=0.6, variant="reversed", pruned_metric=20.0))
  _write(os.path.join(d, "controls", "length_n5", "result.json"),
         _summary(45.0, 5, 20, total_tokens=5, stage="controls/length_n5", ratio=0.6, variant="length"))
  return d


def test_rows_table_and_best_prompt(run_dir):
  note = report.backbone_note({"path": "random-init:seed=0:tiny"})
  assert note == report.RANDOM_NOTE and "RANDOM-weight backbone" in note
  assert report.backbone_note({"path": "gs://t5/xl"}) == "Frozen backbone: gs://t5/xl."
  rows = report.collect_rows(run_dir, (0.3, 0.6, 0.9), emb_dim=32, backbone=note)
  assert [(r["variant"], r["ratio"]) for r in rows] == [
      ("prompt_tuning", 0.0), ("pruned_only", 0.3), ("pruned_only", 0.6), ("xprompt", 0.3), ("xprompt", 0.6),
      ("length", 0.6), ("reversed", 0.6)]
  assert [r["trainable_params"] for r in rows] == [256, 176, 104, 176, 104, 160, 104]  # Kept pieces x D / k.
  assert rows[4]["pruned_metric"] == 52.0 and rows[6]["pruned_metric"] == 20.0
  assert report.best_xprompt(rows)["ratio"] == 0.6  # Equal metrics: the larger ratio (smaller prompt).
  table = report.markdown_table(rows, "cb/accuracy", note)
  assert "RANDOM-weight backbone" in table and "| reversed | 60% | 30.00 | 20.00 | 4 | 13/32 | 104 |" in table
  assert report.best_xprompt(rows[:3]) is None


class _Vocab:
  vocab_size = 4

  def decode(self, ids):
    return "abcd"[ids[0]]


def test_nearest_words_by_cosine():
  embedding = np.array([[1, 0], [0, 1], [-1, 0], [0.7, 0.7], [5, 5]], np.float32)  # Row 4 is beyond the vocab.
  prompt = np.array([[2, 0.1], [0, 0], [0.1, 3]], np.float32)
  words = report.nearest_words(prompt, embedding, _Vocab(), np.array([True, False, True]), top_k=2)
  assert [w["token"] for w in words] == [0, 2]
  assert words[0]["words"] == ["a", "d"] and words[1]["words"] == ["b", "d"]
  # A float32 cosine of 2-entry rows: two norms, a dot and two divisions.
  numerics.assert_close(words[0]["cosine"][0], 2 / np.hypot(2, 0.1), roundings=numerics.FEW)


def test_plots_write_pngs(tmp_path, run_dir):
  rows = report.collect_rows(run_dir, (0.3, 0.6), emb_dim=32, backbone=report.RANDOM_NOTE)
  curve = tmp_path / "curve.png"
  plots.pruning_curve(str(curve), rows, "cb/accuracy", report.RANDOM_NOTE)
  heat = tmp_path / "heat.png"
  kept = np.ones((8, 4), bool)
  kept[3] = False
  plots.importance_heatmap(str(heat), np.arange(8.0), np.arange(32.0).reshape(8, 4), kept, report.RANDOM_NOTE)
  for path in (curve, heat):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
  with pytest.raises(ValueError, match=r"token scores of shape \(7,\) do not match piece scores \(8, 4\)"):
    plots.importance_heatmap(str(heat), np.arange(7.0), np.zeros((8, 4)))
  with pytest.raises(ValueError, match=r"kept mask of shape \(8, 3\) != piece scores \(8, 4\)"):
    plots.importance_heatmap(str(heat), np.arange(8.0), np.zeros((8, 4)), np.ones((8, 3), bool))
