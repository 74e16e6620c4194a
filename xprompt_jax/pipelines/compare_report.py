"""The results page of a method comparison, generated from its records (never edited by hand).

A record is one (method, task, seed) result: `{"method", "task", "seed", "metrics": {name: value}, "seconds",
"error"?}` (see `pipelines.compare`). The page has the mean ± standard deviation over seeds of each method on each
task next to the majority-class baseline, every seed's numbers, the orderings the papers report and whether the
local means show them, what failed or was not run, and a bar plot. Scores are validation accuracies in percent
(the official validation files; CB, whose official metrics are accuracy and macro F1, also gets its F1 in the
per-seed table).
"""
import datetime
import json
import os
from typing import Any, Mapping, Optional, Sequence

import numpy as np

SCORE_METRIC = "accuracy"

# Orderings the seed papers report, as (better, worse, source). Method names are `pipelines.compare` names.
PAPER_ORDERINGS = (
    ("prompt_class_labels", "prompt_random", "Lester et al. 2021, Fig. 3(b): class-label init > random uniform"),
    ("prompt_sampled_vocab", "prompt_random", "Lester et al. 2021, Fig. 3(b): sampled vocab > random uniform"),
    ("prompt_class_labels", "prompt_sampled_vocab", "Lester et al. 2021, Fig. 3(b): class-label > sampled vocab"),
    ("prompt_sampled_vocab", "prefix", "Ma et al. 2022, §6.1: prefix tuning does worse than prompt tuning on NLU"),
    ("mpt", "prompt_sampled_vocab", "Wang et al. 2023 (MPT), Tab. 1: MPT > prompt tuning on SuperGLUE"),
    ("xprompt/xprompt", "xprompt/prompt_tuning", "Ma et al. 2022 (XPrompt), Tab. 1: XPrompt > prompt tuning"),
    ("xprompt/xprompt", "xprompt/reversed", "Ma et al. 2022, Tab. 4: XPrompt > Reversed pruning"),
    ("xprompt/xprompt", "xprompt/random", "Ma et al. 2022, Tab. 4: XPrompt > Random pruning"),
    ("xprompt/xprompt", "xprompt/length", "Ma et al. 2022, Tab. 5: XPrompt > a plain prompt of the same length"),
    ("xprompt/xprompt", "xprompt/token_only", "Ma et al. 2022, Tab. 6: token+piece > token-only pruning"),
    ("xprompt/xprompt", "xprompt/piece_only", "Ma et al. 2022, Tab. 6: token+piece > piece-only pruning"),
    ("model_tuning", "prompt_class_labels", "Lester et al. 2021, Fig. 1: model tuning > prompt tuning at small sizes"),
)


def score(metrics: Mapping[str, float]) -> float:
  """The record's score: its validation accuracy (percent)."""
  return float(metrics[SCORE_METRIC]) if SCORE_METRIC in metrics else float("nan")


def summarise(records: Sequence[Mapping[str, Any]], key: str = "metrics") -> dict[tuple[str, str], dict]:
  """{(method, task): {"mean", "std", "n", "seeds"}} over the records without an error that have `key` ("metrics":
  the best evaluation; "final_metrics": the last one; a number such as "final_train_loss": itself) (std: sample,
  ddof=1)."""
  groups: dict[tuple[str, str], list] = {}
  for r in records:
    if not r.get("error") and key in r:
      value = r[key] if isinstance(r[key], (int, float)) else score(r[key])
      groups.setdefault((r["method"], r["task"]), []).append((r["seed"], float(value)))
  out = {}
  for key, pairs in groups.items():
    values = np.array([v for _, v in pairs], float)
    out[key] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                "n": len(values), "seeds": sorted(s for s, _ in pairs)}
  return out


def orderings(summary: Mapping[tuple[str, str], dict], tasks: Sequence[str]) -> list[dict]:
  """Each paper ordering per task where both methods have results: observed (means) and whether it holds."""
  rows = []
  for better, worse, source in PAPER_ORDERINGS:
    for task in tasks:
      a, b = summary.get((better, task)), summary.get((worse, task))
      if a and b:
        rows.append({"better": better, "worse": worse, "task": task, "source": source, "better_mean": a["mean"],
                     "worse_mean": b["mean"], "holds": a["mean"] > b["mean"]})
  return rows


def has_last_evaluations(records: Sequence[Mapping[str, Any]]) -> bool:
  """Whether any record keeps its run's last evaluation (records written before runs kept it hold only the best)."""
  return any("final_metrics" in r for r in records)


def _cell(stats: Optional[dict], digits: int = 1) -> str:
  if not stats:
    return "—"
  return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f} (n={stats['n']})"


def _fmt_metrics(metrics: Mapping[str, float]) -> str:
  return ", ".join(f"{k}={v:.2f}" for k, v in sorted(metrics.items()))


def _duration(seconds: float) -> str:
  return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def bar_plot(path: str, summary: Mapping[tuple[str, str], dict], methods: Sequence[str], tasks: Sequence[str],
             majority: Mapping[str, float], title: str,
             best_constant: Optional[Mapping[str, float]] = None) -> None:
  """Grouped bars (one group per task, one bar per method, error bars = std over seeds) with majority ticks."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  width = 0.8 / max(len(methods), 1)
  fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(tasks) + 0.25 * len(methods) * len(tasks)), 4.5))
  x = np.arange(len(tasks))
  for i, method in enumerate(methods):
    means = [summary.get((method, t), {}).get("mean", np.nan) for t in tasks]
    stds = [summary.get((method, t), {}).get("std", 0.0) for t in tasks]
    ax.bar(x + (i - (len(methods) - 1) / 2) * width, means, width, yerr=stds, label=method, capsize=2)
  for j, task in enumerate(tasks):
    if task in majority:
      ax.hlines(majority[task], j - 0.45, j + 0.45, colors="black", linestyles="dashed",
                label="majority class" if j == 0 else None)
    if best_constant and task in best_constant and best_constant[task] != majority.get(task):
      ax.hlines(best_constant[task], j - 0.45, j + 0.45, colors="gray", linestyles="dotted",
                label="best constant label" if not ax.get_legend_handles_labels()[1].count("best constant label")
                else None)
  ax.set_xticks(x)
  ax.set_xticklabels([t.replace("super_glue_", "").replace("_v102", "").replace("_v002", "") for t in tasks])
  ax.set_ylabel("validation accuracy (%)")
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=6, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)


def pretraining_plot(path: str, stages: Sequence[Mapping[str, Any]]) -> None:
  """The pretraining stages end to end: training loss (per log period) and held-out validation loss against the
  cumulative step, with each stage's unigram baseline as a dashed line over its steps."""
  from xprompt_jax import plotting
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(9.5, 4.0))
  offset = 0
  for i, stage in enumerate(stages):
    # A model_dir resumed to more steps logs past this stage's export: its curve stops at the export.
    rows = [r for r in plotting.read_metrics(stage["model_dir"]) if int(r.get("step", 0)) <= int(stage["step"])]
    train = plotting.series(rows, "train").get("loss", ([], []))
    evals = plotting.series(rows, "eval").get("validation_loss", ([], []))
    name = stage["task"]
    ax.plot([offset + s for s in train[0]], train[1], "-", color=f"C{i}", label=f"{name}: training loss")
    ax.plot([offset + s for s in evals[0]], evals[1], "o", color=f"C{i}", label=f"{name}: validation loss")
    ax.hlines(stage["unigram_cross_entropy"], offset, offset + stage["step"], colors=f"C{i}", linestyles="dashed",
              label=f"{name}: unigram baseline")
    offset += int(stage["step"])
  ax.set_xlabel("pretraining step (stages end to end)")
  ax.set_ylabel("cross entropy (nats / target token)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # Outside: no curve or baseline hidden.
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write_page(page_path: str, records: Sequence[Mapping[str, Any]], *, methods: Sequence[str],
               tasks: Sequence[str], majority: Mapping[str, float], meta: Mapping[str, Any],
               best_constant: Optional[Mapping[str, float]] = None,
               prior_loss: Optional[Mapping[str, float]] = None, missing_notes: Sequence[str] = ()) -> str:
  """Writes the markdown page and its plot (`<page stem>/methods.png`); returns the page text."""
  summary = summarise(records)
  best_constant = dict(best_constant or {})
  shown = [m for m in methods if any((m, t) in summary for t in tasks)]
  shown += sorted({m for m, _ in summary} - set(shown))
  stem = os.path.splitext(page_path)[0]
  plot_rel = f"{os.path.basename(stem)}/methods.png"
  bar_plot(f"{stem}/methods.png", summary, shown, tasks, majority, meta.get("plot_title", ""), best_constant)
  stages = meta.get("pretraining") or []
  if stages:
    pretraining_plot(f"{stem}/pretraining.png", stages)
  # The records travel with the page (the run folders usually do not): every number can be checked against them.
  with open(f"{stem}/records.jsonl", "w", encoding="utf-8") as f:
    for r in records:
      f.write(json.dumps(r, sort_keys=True) + "\n")
  if stages:
    with open(f"{stem}/pretraining.json", "w", encoding="utf-8") as f:
      json.dump([{k: v for k, v in stage.items() if k != "model_dir"} for stage in stages], f, indent=1)
  seconds = sum(float(r.get("seconds", 0.0)) for r in records)
  lines = [
      f"# {meta.get('title', 'Method comparison on the local backbone')}", "",
      "<!-- GENERATED FILE: do not edit by hand. -->",
      f"Generated by `{meta.get('command', 'python bench/compare_methods.py')}` on "
      f"{datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} from the records in "
      f"`{meta.get('results', '?')}` (copied beside this page: `{os.path.basename(stem)}/records.jsonl`"
      f"{', with the pretraining reports in ' + os.path.basename(stem) + '/pretraining.json' if stages else ''}); "
      "rerun the command to update it. Every number below is read from those records.",
      "", f"**Backbone.** {meta.get('backbone_line', '')}", "",
      *([f"![pretraining loss curves]({os.path.basename(stem)}/pretraining.png)", ""] if stages else []),
      f"**Protocol.** {meta.get('protocol', '')}", "",
      f"**Duration.** {len(records)} run{'s' if len(records) != 1 else ''} took {_duration(seconds)} on "
      f"{meta.get('machine', '?')} (the sum of each run's wall time; runs started side by side overlap).", "",
      "## Validation accuracy (%), mean ± std over seeds", "",
      "| method | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks),
      "| majority class (train split's most frequent label) | "
      + " | ".join(f"{majority[t]:.1f}" if t in majority else "—" for t in tasks) + " |"]
  if best_constant:
    lines.append("| best constant label (validation split's most frequent) | "
                 + " | ".join(f"{best_constant[t]:.1f}" if t in best_constant else "—" for t in tasks) + " |")
  for m in shown:
    lines.append(f"| {m} | " + " | ".join(_cell(summary.get((m, t))) for t in tasks) + " |")
  lines += ["", f"![validation accuracy per method and task]({plot_rel})", ""]
  final = summarise(records, "final_metrics")
  if final:
    lines += ["## Validation accuracy (%) at the last evaluation, mean ± std over seeds", "",
              "The same runs without early stopping: each run's last evaluation, so no number here was selected "
              "on the validation file (methods whose records keep only their best evaluation are left out).", "",
              "| method | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for m in [m for m in shown if any((m, t) in final for t in tasks)]:
      lines.append(f"| {m} | " + " | ".join(_cell(final.get((m, t))) for t in tasks) + " |")
    lines.append("")
  train_loss = summarise(records, "final_train_loss")
  if train_loss:
    prior_loss = dict(prior_loss or {})
    lines += ["## Training loss per target token at the last logged window, mean ± std over seeds", "",
              "Cross entropy in nats, the z-loss term left out. Whether each run fits its own training batches (the "
              "k shots in a k-shot comparison). A run near the "
              "first row has learnt its labels' frequencies and nothing of its input; a run well below it at the "
              "majority class on validation has fitted its training data without generalising.", "",
              "| method | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    if prior_loss:
      lines.append("| the training split's label frequencies, input ignored | "
                   + " | ".join(f"{prior_loss[t]:.3f}" if t in prior_loss else "—" for t in tasks) + " |")
    for m in [m for m in shown if any((m, t) in train_loss for t in tasks)]:
      lines.append(f"| {m} | " + " | ".join(_cell(train_loss.get((m, t)), 3) for t in tasks) + " |")
    lines.append("")
  lines += ["### Above the majority class (mean over seeds)", "",
            "Each task is followed by its margin over the majority class in points; set it against the validation "
            "split's size (one example of 56 is 1.8 points) and the seeds' std above.", ""]
  if best_constant:
    lines += ["A task marked * is not above the best constant label as well: a run that always predicts the "
              "validation split's most frequent label would score as much.", ""]
  if final:
    lines += ["Each line lists the tasks above it with the best evaluation, then (after *last:*) with the last.", ""]

  def above(stats: Mapping[tuple[str, str], dict], m: str) -> str:
    hits = [t for t in tasks if (m, t) in stats and t in majority and stats[(m, t)]["mean"] > majority[t]]
    return ", ".join(t + ("*" if t in best_constant and stats[(m, t)]["mean"] <= best_constant[t] else "")
                     + f" (+{stats[(m, t)]['mean'] - majority[t]:.1f})" for t in hits) or "(none)"

  for m in shown:
    last = f"; last: {above(final, m)}" if any((m, t) in final for t in tasks) else ""
    lines.append(f"- {m}: {above(summary, m)}{last}")
  lines.append("")
  lines += ["## The papers' orderings, as observed here", "",
            "Each row compares the two methods' means on one task; *holds* says whether the local run shows the "
            "paper's ordering. Both outcomes are results.", "",
            "| paper's claim | task | better (mean) | worse (mean) | holds here |", "|---|---|---|---|---|"]
  observed = orderings(summary, tasks)
  for o in observed:
    lines.append(f"| {o['source']} | {o['task']} | {o['better']} ({o['better_mean']:.1f}) | {o['worse']} "
                 f"({o['worse_mean']:.1f}) | {'yes' if o['holds'] else 'no'} |")
  if not observed:
    lines[-2:] = ["None: no pair of methods that a paper orders ran on the same task here."]
  errors = [r for r in records if r.get("error")]
  lines += ["", "## Not run or failed", ""]
  notes = list(missing_notes) + [f"{r['method']} on {r['task']} seed {r['seed']} failed: {r['error']}"
                                 for r in errors]
  for m in methods:
    absent = [t for t in tasks if (m, t) not in summary and not any(
        r["method"] == m and r["task"] == t for r in errors)]
    if absent and m in meta.get("method_tasks", {}):
      absent = [t for t in absent if t in meta["method_tasks"][m]]
    if absent:
      notes.append(f"{m}: no result on {', '.join(absent)}")
  lines += [f"- {n}" for n in notes] or ["- nothing: every planned run finished."]
  with_last = has_last_evaluations(records)
  lines += ["", "## Every run", "",
            "| method | task | seed | validation metrics (best evaluation) | "
            + ("last evaluation | " if with_last else "") + "minutes |",
            "|---|---|---|---|" + ("---|" if with_last else "") + "---|"]
  for r in sorted(records, key=lambda r: (r["method"], r["task"], r["seed"])):
    shown_metrics = "error" if r.get("error") else _fmt_metrics(r["metrics"])
    last = (f"step {r['final_step']}: {_fmt_metrics(r['final_metrics'])}" if "final_metrics" in r and not r.get("error")
            else "—")
    lines.append(f"| {r['method']} | {r['task']} | {r['seed']} | {shown_metrics} | "
                 + (f"{last} | " if with_last else "") + f"{float(r.get('seconds', 0.0)) / 60:.1f} |")
  text = "\n".join(lines) + "\n"
  os.makedirs(os.path.dirname(os.path.abspath(page_path)), exist_ok=True)
  with open(page_path, "w", encoding="utf-8") as f:
    f.write(text)
  return text


def pretraining_chain(backbone: Optional[str], max_stages: int = 8) -> list[dict]:
  """The pretraining stages behind a backbone exported by `xprompt-jax pretrain`, earliest first: each stage's
  report (`pretraining.train.read_report`) plus its `model_dir`, followed through each report's `start` (an earlier
  stage's export); [] when the backbone was not made here."""
  from xprompt_jax.pretraining import train as pretrain_lib
  chain, path = [], backbone
  while path and len(chain) < max_stages:
    report = pretrain_lib.read_report(path)
    if report is None:
      break
    chain.append({**report, "model_dir": pretrain_lib.model_dir_of_export(path)})
    path = chain[-1].get("start")
  return chain[::-1]


def backbone_line(backbone: Optional[str], config, stages: Optional[list[dict]] = None) -> str:
  """One paragraph naming the backbone, with each pretraining stage's validation loss vs the unigram baseline."""
  if not backbone:
    return (f"RANDOM-weight {config.name} ({config.num_params():,} parameters): these numbers check the plumbing, "
            "they say nothing about the methods.")
  line = f"`{backbone}` ({config.name}, {config.num_params():,} parameters)."
  stages = pretraining_chain(backbone) if stages is None else stages
  if stages:
    line += " Pretrained here, from random weights, on the training-split text of `../shared/data` only:"
  for r in stages:
    line += (f" {r['task']} to step {r['step']}: held-out validation cross entropy {r['validation_loss']:.3f} "
             f"nats/token vs the unigram baseline {r['unigram_cross_entropy']:.3f};")
  return line.rstrip(";") + ("." if stages else "")
