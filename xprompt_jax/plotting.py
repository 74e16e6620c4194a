"""Figures of a run (matplotlib, Agg backend), written as PNG files next to the run.

    paths = plot_run(model_dir)        # <model_dir>/plots/{train_curves,eval_curves}.png, + XPrompt figures
    method_comparison(path, {"prompt": 71.2, "xprompt": 73.5}, "rte/accuracy")

Training and evaluation curves come from `<model_dir>/metrics.jsonl` (rows `{"step", "kind": "train"|"eval",
metric: value}`): one panel per metric. A model_dir of the XPrompt pipeline (`report/results.jsonl`,
`importance/importance.npz`) also gets its pruning curve and importance heatmap, drawn by
`xprompt_jax.pipelines.plots` (the pipeline's own figures, not redrawn here).
"""
import json
import math
import os
from typing import Mapping, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

PLOTS_DIR = "plots"
METRICS_FILE = "metrics.jsonl"


def read_metrics(model_dir: str) -> list[dict]:
  """The rows of `<model_dir>/metrics.jsonl`; errors name the file and line."""
  from xprompt_jax.checkpoints import storage
  path = storage.join(model_dir, METRICS_FILE)
  if not storage.is_file(path):
    raise FileNotFoundError(f"{path} does not exist: train the run first (xprompt-jax train --model_dir=...)")
  from xprompt_jax.training import metrics_log
  rows = metrics_log.parse_rows(storage.read_bytes(path).decode("utf-8", errors="replace"), path)
  for lineno, row in enumerate(rows, 1):
    if not isinstance(row, dict) or "step" not in row or row.get("kind") not in ("train", "eval"):
      raise ValueError(f"{path}: row {lineno}: expected {{\"step\", \"kind\": \"train\"|\"eval\", ...}}, "
                       f"got {json.dumps(row)[:80]!r}")
  return rows


def series(rows: Sequence[Mapping], kind: str) -> dict[str, tuple[list[int], list[float]]]:
  """`{metric: (steps, values)}` of one kind of row, in step order (a resumed run's repeated steps: last wins)."""
  by_metric: dict[str, dict[int, float]] = {}
  for row in rows:
    if row["kind"] != kind:
      continue
    for key, value in row.items():
      if key not in ("step", "kind") and isinstance(value, (int, float)):
        by_metric.setdefault(key, {})[int(row["step"])] = float(value)
  return {k: (sorted(v), [v[s] for s in sorted(v)]) for k, v in sorted(by_metric.items())}


def curves(path: str, data: Mapping[str, tuple[Sequence[int], Sequence[float]]], title: str) -> str:
  """One panel per metric (value against step); returns `path`."""
  if not data:
    raise ValueError(f"no metrics to plot for {title!r}")
  cols = min(3, len(data))
  rows = math.ceil(len(data) / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
  for ax, (name, (steps, values)) in zip(axes.flat, data.items()):
    ax.plot(steps, values, "o-" if len(steps) < 30 else "-", markersize=3)
    ax.set_title(name, fontsize=9)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(data):]:
    ax.axis("off")
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def method_comparison(path: str, results: Mapping[str, float], metric: str, title: str = "",
                      errors: Optional[Mapping[str, float]] = None) -> str:
  """Bars of one metric per method/run (optional error bars, e.g. std over seeds); returns `path`."""
  if not results:
    raise ValueError("method_comparison needs at least one result")
  names = list(results)
  values = [float(results[n]) for n in names]
  fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(names), 3.6))
  yerr = [float(errors.get(n, 0.0)) for n in names] if errors else None
  bars = ax.bar(range(len(names)), values, yerr=yerr, capsize=4, color=plt.cm.tab10(np.arange(len(names)) % 10))
  ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=8)
  ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
  ax.set_ylabel(metric)
  ax.set_title(title or f"{metric} by method", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def final_eval(model_dir: str, metric: Optional[str] = None) -> dict[str, float]:
  """The last eval row's metrics of a run (just `metric` when given; a clear error when it is absent)."""
  evals = [r for r in read_metrics(model_dir) if r["kind"] == "eval"]
  if not evals:
    raise ValueError(f"{os.path.join(model_dir, METRICS_FILE)} has no eval rows")
  last = {k: float(v) for k, v in evals[-1].items() if k not in ("step", "kind")}
  if metric is None:
    return last
  if metric not in last:
    raise KeyError(f"{model_dir}: the last eval has no metric {metric!r}; it has {sorted(last)}")
  return {metric: last[metric]}


def xprompt_figures(model_dir: str, out_dir: str) -> list[str]:
  """The XPrompt pipeline's pruning curve and importance heatmap, when `model_dir` holds that pipeline's files."""
  results = os.path.join(model_dir, "report", "results.jsonl")
  importance = os.path.join(model_dir, "importance", "importance.npz")
  if not (os.path.exists(results) or os.path.exists(importance)):
    return []
  from xprompt_jax.pipelines import plots  # The XPrompt pipeline's own figures.
  from xprompt_jax.methods.xprompt import active_pieces
  from xprompt_jax.pipelines import xprompt_parts as pipeline
  written = []
  note = ""
  if os.path.exists(results):
    with open(results, encoding="utf-8") as f:
      rows = [json.loads(line) for line in f if line.strip()]
    note = rows[0].get("backbone", "") if rows else ""
    path = os.path.join(out_dir, "pruning_curve.png")
    plots.pruning_curve(path, rows, "validation metric", note)
    written.append(path)
  if os.path.exists(importance):
    scores = pipeline.load_masks(importance)
    final_masks = os.path.join(model_dir, "report", "final_masks.npz")
    kept = active_pieces(pipeline.load_masks(final_masks)) if os.path.exists(final_masks) else None
    path = os.path.join(out_dir, "importance_heatmap.png")
    plots.importance_heatmap(path, np.asarray(scores.token), np.asarray(scores.piece), kept, note)
    written.append(path)
  return written


def plot_run(model_dir: str, out_dir: Optional[str] = None) -> list[str]:
  """Every figure of a run under `<model_dir>/plots/` (or `out_dir`); returns the written paths."""
  out_dir = out_dir or os.path.join(model_dir, PLOTS_DIR)
  os.makedirs(out_dir, exist_ok=True)
  written = xprompt_figures(model_dir, out_dir)
  metrics_file = os.path.join(model_dir, METRICS_FILE)
  if os.path.exists(metrics_file) or not written:
    rows = read_metrics(model_dir)
    name = os.path.basename(os.path.normpath(model_dir))
    for kind in ("train", "eval"):
      data = series(rows, kind)
      if data:
        written.append(curves(os.path.join(out_dir, f"{kind}_curves.png"), data, f"{name}: {kind} metrics"))
  if not written:
    raise ValueError(f"{model_dir} has nothing to plot (metrics.jsonl holds no train or eval rows)")
  return written
