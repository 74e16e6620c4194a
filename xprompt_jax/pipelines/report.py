"""The XPrompt run's report: one table of every variant (markdown + jsonl), the final prompt, nearest words, plots.

Reads only the stage files of `pipelines.xprompt` under `model_dir`, so it can be regenerated at any time:

  report/results.jsonl, results.md   PT, every pruned-only sweep point, the rewound XPrompt prompt(s), the controls
  report/final_prompt.npy            the best XPrompt prompt with its masks folded in ([L, D], pruned entries 0)
  report/final_masks.npz, final.json its masks and where it came from
  report/nearest_words.json          the nearest vocabulary words (cosine) of each surviving prompt token
  report/pruning_curve.png, importance_heatmap.png   (`plots`)

When the frozen model has random weights (`TrainConfig.initial_checkpoint=None`) every table and plot says so:
the numbers then test the plumbing, they are not results.
"""
import glob
import json
import os
from typing import Any, Optional, Sequence

import numpy as np

from xprompt_jax import jsonl_io
from xprompt_jax.methods.base import embedding_table
from xprompt_jax.methods.xprompt import apply_masks

RANDOM_NOTE = ("All numbers come from a RANDOM-weight backbone (TrainConfig.initial_checkpoint=None): they check "
               "the procedure, they are not results.")


def backbone_note(frozen_ref: dict) -> str:
  path = str(frozen_ref.get("path", ""))
  return RANDOM_NOTE if path.startswith("random-init") else f"Frozen backbone: {path}."


def _read(stage_dir: str) -> Optional[dict]:
  """The stage's record (`training.stages`), None while it is not finished."""
  from xprompt_jax.training import stages
  return stages.read_result(stage_dir)


def _row(variant: str, ratio: float, summary: dict, stage: str, emb_dim: int, backbone: str, **extra) -> dict:
  width = emb_dim * summary["total_tokens"] // summary["total_pieces"]  # Scalars per piece: D / k.
  return {"variant": variant, "ratio": ratio, "stage": stage, "metric": summary["metric"],
          "kept_tokens": summary["kept_tokens"], "kept_pieces": summary["kept_pieces"],
          "total_pieces": summary["total_pieces"], "trainable_params": summary["kept_pieces"] * width,
          "backbone": backbone, **extra}


def collect_rows(model_dir: str, ratios: Sequence[float], emb_dim: int, backbone: str) -> list[dict]:
  """Every finished variant of the run, PT first."""
  from xprompt_jax.pipelines.xprompt_parts import ratio_tag
  from xprompt_jax.training import stages
  rows = []
  pt = _read(os.path.join(model_dir, "pt"))
  rows.append(_row("prompt_tuning", 0.0, pt, "pt", emb_dim, backbone, best_step=pt["best_step"]))
  sweep = {}
  for ratio in ratios:
    point = _read(os.path.join(model_dir, "sweep", ratio_tag(ratio)))
    if point is not None:
      sweep[ratio] = point
      rows.append(_row("pruned_only", ratio, sweep[ratio], f"sweep/{ratio_tag(ratio)}", emb_dim, backbone))
  for path in sorted(glob.glob(os.path.join(model_dir, "rewind_r*", stages.RESULT))):
    s = _read(os.path.dirname(path))
    rows.append(_row("xprompt", s["ratio"], s, s["stage"], emb_dim, backbone, best_step=s["best_step"],
                     pruned_metric=sweep.get(s["ratio"], {}).get("metric")))
  for path in sorted(glob.glob(os.path.join(model_dir, "controls", "*", stages.RESULT))):
    s = _read(os.path.dirname(path))
    rows.append(_row(s["variant"], s["ratio"], s, s["stage"], emb_dim, backbone, best_step=s["best_step"],
                     pruned_metric=s.get("pruned_metric")))
  return rows


def markdown_table(rows: Sequence[dict], metric_key: str, note: str) -> str:
  lines = [f"# XPrompt results ({metric_key} on the validation split)", "", note, "",
           "| variant | ratio | metric | pruned, not retrained | kept tokens | kept pieces | trainable params | "
           "stage |", "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    pruned = r.get("pruned_metric")
    pruned = "" if pruned is None else f"{pruned:.2f}"
    lines.append(f"| {r['variant']} | {r['ratio']:.0%} | {r['metric']:.2f} | {pruned} | {r['kept_tokens']} | "
                 f"{r['kept_pieces']}/{r['total_pieces']} | {r['trainable_params']} | {r['stage']} |")
  return "\n".join(lines) + "\n"


def best_xprompt(rows: Sequence[dict]) -> Optional[dict]:
  """The retrained XPrompt row with the best metric (ties: the larger ratio)."""
  candidates = [r for r in rows if r["variant"] == "xprompt"]
  return max(candidates, key=lambda r: (r["metric"], r["ratio"])) if candidates else None


def nearest_words(prompt: np.ndarray, embedding: np.ndarray, vocabulary: Any, keep_rows: np.ndarray,
                  top_k: int = 5) -> list[dict]:
  """For each kept prompt row, the `top_k` vocabulary tokens whose embeddings are closest in cosine."""
  embedding = np.asarray(embedding, np.float32)[:vocabulary.vocab_size]
  unit = embedding / np.maximum(np.linalg.norm(embedding, axis=1, keepdims=True), 1e-12)
  out = []
  for i in np.flatnonzero(keep_rows):
    row = np.asarray(prompt[i], np.float32)
    cos = unit @ (row / max(float(np.linalg.norm(row)), 1e-12))
    ids = np.argsort(-cos, kind="stable")[:top_k]
    out.append({"token": int(i), "words": [vocabulary.decode([int(j)]) for j in ids],
                "ids": [int(j) for j in ids], "cosine": [float(cos[j]) for j in ids]})
  return out


def write_report(run) -> list[dict]:
  """Writes everything under `<model_dir>/report/` for a `pipelines.xprompt._Run`; returns the table rows."""
  from xprompt_jax.methods.xprompt import active_pieces
  from xprompt_jax.pipelines import xprompt_parts as pipeline
  from xprompt_jax.training import data as data_lib
  out_dir = run.path("report")
  os.makedirs(out_dir, exist_ok=True)
  note = backbone_note(run.frozen_ref)
  rows = collect_rows(run.model_dir, run.cfg.ratios, run.config.emb_dim, note)
  with open(os.path.join(out_dir, "results.jsonl"), "w", encoding="utf-8") as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")
  table = markdown_table(rows, run.metric_key, note)
  best = best_xprompt(rows)
  if best is not None:
    stage_dir = run.path(best["stage"])
    masks = pipeline.load_masks(os.path.join(stage_dir, "masks.npz"))
    final = np.asarray(apply_masks(np.load(os.path.join(stage_dir, "prompt.npy")), masks))
    pipeline.save_array(os.path.join(out_dir, "final_prompt.npy"), final)
    pipeline.save_masks(os.path.join(out_dir, "final_masks.npz"), masks)
    jsonl_io.write_json_atomic(os.path.join(out_dir, "final.json"), {
        "stage": best["stage"], "ratio": best["ratio"], "metric": best["metric"], "note": note})
    vocabulary = data_lib.get_task(run.data_cfg.mixture_or_task_name).output_features["inputs"].vocabulary
    kept = active_pieces(masks).any(axis=1)
    words = nearest_words(final, np.asarray(embedding_table(run.frozen)), vocabulary, kept, run.cfg.nearest_words)
    jsonl_io.write_json_atomic(os.path.join(out_dir, "nearest_words.json"), {"note": note, "tokens": words})
    table += (f"\nFinal prompt: {best['stage']} (ratio {best['ratio']:.0%}, {best['kept_tokens']} tokens, "
              f"{best['kept_pieces']} pieces), report/final_prompt.npy.\n\nNearest vocabulary words of the surviving "
              "tokens (cosine):\n\n" + "\n".join(f"- token {w['token']}: {', '.join(repr(x) for x in w['words'])}"
                                                for w in words) + "\n")
  with open(os.path.join(out_dir, "results.md"), "w", encoding="utf-8") as f:
    f.write(table)
  if run.cfg.plots:
    from xprompt_jax.pipelines import plots
    plots.pruning_curve(os.path.join(out_dir, "pruning_curve.png"), rows, run.metric_key, note)
    importance = pipeline.load_masks(run.path("importance", "importance.npz"))
    pruned = masks if best is not None else None
    plots.importance_heatmap(os.path.join(out_dir, "importance_heatmap.png"), np.asarray(importance.token),
                             np.asarray(importance.piece), None if pruned is None else pipeline.active_pieces(pruned),
                             note)
  print(table)
  return rows
