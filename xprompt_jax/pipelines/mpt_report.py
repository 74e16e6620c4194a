"""MPT reports: parameter counts, per-task and ablation tables (next to the paper's numbers), learning curves.

Our numbers are labelled with the backbone they come from: a run whose `TrainConfig.initial_checkpoint` is None
uses a RANDOM-weight frozen T5, and even a real checkpoint is only as good as the (self-trained) prompts; the
paper's numbers (Wang et al. 2023, T5-Base, SuperGLUE average) are quoted in their own, labelled column.
"""
import os
from typing import Optional, Sequence

import numpy as np

from xprompt_jax.methods.base import count_params
from xprompt_jax.methods.mpt import MPT
from xprompt_jax.methods.prompt import PromptTuning
from xprompt_jax.models.config import T5Config

# Table 6 / Sec. 4.3 of the paper: SuperGLUE average with T5-Base after target adaptation.
PAPER_SUPERGLUE = {"full": 74.1, "no_hidden": 73.7, "distance": 73.6, "shared_only": 62.5, "task_only": 71.3,
                   "no_task_sampling": 73.7}
PAPER_LABEL = "paper (T5-Base, SuperGLUE avg)"


def backbone_label(backbone: str) -> str:
  """How our numbers are labelled: random-weight or a named checkpoint, always with self-trained prompts."""
  if backbone.startswith("random-init"):
    return f"ours: RANDOM-weight backbone ({backbone}), self-trained prompts - a plumbing check, not a result"
  return f"ours: backbone {backbone}, self-trained prompts"


def parameter_counts(emb_dim: int, length: int, num_targets: int = 1, rank: int = 1) -> dict[str, int]:
  """Trainable parameters, counted from the methods' own trees (no model allocated)."""
  config = T5Config(vocab_size=8, emb_dim=emb_dim, num_heads=1, head_dim=1, mlp_dim=1, num_encoder_layers=1,
                    num_decoder_layers=1)
  frozen = {"token_embedder": {"embedding": np.zeros((8, emb_dim), np.float32)}}
  pt = PromptTuning(length=length, prompt_init="random_uniform").abstract_trainable(config, frozen)
  one = MPT(length=length, num_tasks=1, rank=rank, prompt_init="random_uniform").abstract_trainable(config, frozen)
  group = MPT(length=length, num_tasks=num_targets, rank=rank,
              prompt_init="random_uniform").abstract_trainable(config, frozen)
  return {"prompt_tuning_per_task": count_params(pt), "mpt_per_target_task": count_params(one),
          f"mpt_group_of_{num_targets}": count_params(group)}


def parameter_table(emb_dim: int, length: int, num_targets: int, rank: int = 1, model: str = "this model") -> str:
  """Markdown rows for this run's model and for the paper's T5-Base (D = 768, L = 100: 77,668 vs 76,800)."""
  lines = ["| model | L | prompt tuning / task | MPT / target task | MPT, group of τ targets |",
           "|---|---|---|---|---|"]
  for name, d, l in ((model, emb_dim, length), ("T5-Base (paper)", 768, 100)):
    c = parameter_counts(d, l, num_targets, rank)
    lines.append(f"| {name} (D={d}) | {l} | {c['prompt_tuning_per_task']:,} | {c['mpt_per_target_task']:,} | "
                 f"τ={num_targets}: {c[f'mpt_group_of_{num_targets}']:,} |")
  return "\n".join(lines)


def _score(metrics: dict) -> float:
  return float(np.mean(list(metrics.values()))) if metrics else float("nan")


def targets_table(targets: dict[str, dict[str, float]], backbone: str) -> str:
  """Per-task metrics of a target adaptation run (0-100)."""
  lines = [f"{backbone_label(backbone)}", "", "| task | metrics | score |", "|---|---|---|"]
  for task, metrics in targets.items():
    shown = ", ".join(f"{k}={v:.2f}" for k, v in sorted(metrics.items()))
    lines.append(f"| {task} | {shown} | {_score(metrics):.2f} |")
  lines.append(f"| **average** | | {np.mean([_score(m) for m in targets.values()]):.2f} |")
  return "\n".join(lines)


def ablation_table(rows: dict[str, dict], backbone: str) -> str:
  """The ablation table: our average target score per row next to the paper's SuperGLUE number."""
  tasks = sorted({t for r in rows.values() for t in r["targets"]})
  head = ["ablation", "description", "ours: avg"] + [f"ours: {t}" for t in tasks] + [PAPER_LABEL]
  lines = [backbone_label(backbone), "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name, r in rows.items():
    cells = [name, r["description"], f"{r['average']:.2f}"]
    cells += [f"{_score(r['targets'][t]):.2f}" if t in r["targets"] else "" for t in tasks]
    paper = PAPER_SUPERGLUE.get(name)
    cells.append(f"{paper:.1f}" if paper is not None else "n/a")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def plot_all_stages(workdir: str, out_dir: Optional[str] = None) -> list[str]:
  """Learning curves of every stage run under `workdir` (each folder holding a metrics.jsonl): one train and one
  eval png per stage, `<stage path with __>_{train,eval}.png`, drawn by `xprompt_jax.plotting`."""
  from xprompt_jax import plotting
  out_dir = out_dir or os.path.join(workdir, plotting.PLOTS_DIR)
  os.makedirs(out_dir, exist_ok=True)
  written = []
  for root, _, files in sorted(os.walk(workdir)):
    if plotting.METRICS_FILE not in files:
      continue
    stage = os.path.relpath(root, workdir)
    rows = plotting.read_metrics(root)
    for kind in ("train", "eval"):
      data = plotting.series(rows, kind)
      if data:
        path = os.path.join(out_dir, f"{stage.replace(os.sep, '__')}_{kind}.png")
        written.append(plotting.curves(path, data, f"MPT stage {stage}: {kind} metrics"))
  return written


def write_report(path: str, sections: Sequence[tuple[str, str]]) -> str:
  """A markdown file of (heading, body) sections."""
  with open(path, "w", encoding="utf-8") as f:
    for heading, body in sections:
      f.write(f"## {heading}\n\n{body}\n\n")
  return path
