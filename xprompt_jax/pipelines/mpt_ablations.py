"""MPT's ablation table (Wang et al. 2023, Table 6 and Sec. 4.3) and prompt-length sweep: whole `pipelines.mpt`
pipelines per row / length, sharing one set of teachers (and the full source prompt) where the rows agree.

    xprompt-jax mpt --gin_file=paper/mpt_base.gin --model_dir=/mnt/BUCKET/mpt_base --stage=ablations
"""
import dataclasses
import os
from typing import Optional, Sequence

import numpy as np

from xprompt_jax import jsonl_io
from xprompt_jax.pipelines import mpt
from xprompt_jax.pipelines.mpt import Base, Frozen, MPTConfig


@dataclasses.dataclass(frozen=True)
class Ablation:
  """One row of the ablation table: how its source training and its target adaptation differ from full MPT."""
  name: str
  description: str
  distill: dict = dataclasses.field(default_factory=dict)  # DistillConfig overrides.
  sampling: dict = dataclasses.field(default_factory=dict)  # SamplingConfig overrides.
  update: str = "both"
  extended_sources: bool = False
  config: dict = dataclasses.field(default_factory=dict)  # MPTConfig overrides (source_decomposition).

  @property
  def source_variant(self) -> str:
    """Rows that train the same source prompt share it (the target-side ablations reuse the full source)."""
    if self.distill or self.sampling or self.extended_sources or self.config:
      return self.name
    return ""

  @property
  def target_variant(self) -> str:
    """The full row's target runs are the plain pipeline's (`target/`), so a finished pipeline is reused."""
    return "" if self.name == "full" else self.name


ABLATIONS = (
    # Table 6: decomposition and distillation, each without the other, and neither (the seed's "first row").
    Ablation("neither", "no decomposition, no distillation (one multitask prompt)", distill={"weight": 0.0},
             config={"source_decomposition": False}),
    Ablation("decomposition_only", "decomposition without distillation", distill={"weight": 0.0}),
    Ablation("distillation_only", "distillation into one plain prompt (no decomposition)",
             config={"source_decomposition": False}),
    Ablation("full", "MPT (distillation: logits + hidden states, task sampling, P* and u, v tuned)"),
    Ablation("no_hidden", "without the hidden-state loss", distill={"objective": "logits"}),
    Ablation("distance", "prompt-distance (MSE) loss instead of logits + hidden distillation",
             distill={"objective": "distance"}),
    Ablation("shared_only", "target: only P* updated (task-specific vectors removed)", update="shared_only"),
    Ablation("task_only", "target: only u, v updated (P* frozen)", update="task_only"),
    Ablation("no_task_sampling", "without stochastic task sampling", sampling={"stochastic": False}),
    Ablation("sources_12", "12 source tasks (MPTConfig.extended_source_tasks)", extended_sources=True),
)


def run_ablations(workdir: str, cfg: MPTConfig, base: Base, names: Optional[Sequence[str]] = None,
                  frozen: Optional[Frozen] = None) -> dict[str, dict]:
  """Every ablation row from one set of teachers: {row name: {"targets", "average", "description"}}."""
  if names is None:  # Every row; the 12-task one only when its extra tasks are configured.
    rows = [a for a in ABLATIONS if a.name != "sources_12" or cfg.extended_source_tasks]
  else:
    rows = [a for a in ABLATIONS if a.name in names]
  unknown = sorted(set(names or ()) - {a.name for a in ABLATIONS})
  if unknown:
    raise ValueError(f"unknown MPT ablations {unknown}; known: {[a.name for a in ABLATIONS]}")
  mpt.check_tasks(cfg, extended=any(a.extended_sources for a in rows))
  frozen = frozen or Frozen.load(base)
  results = {}
  for row in rows:
    tasks = list(cfg.source_tasks)
    if row.extended_sources:
      if not cfg.extended_source_tasks:
        raise ValueError("the 'sources_12' ablation needs MPTConfig.extended_source_tasks (the extra tasks)")
      tasks += [t for t in cfg.extended_source_tasks if t not in tasks]
    row_base = dataclasses.replace(base, distill=dataclasses.replace(base.distill, **row.distill),
                                   sampling=dataclasses.replace(base.sampling, **row.sampling))
    row_cfg = cfg.replace(**row.config)
    teachers, _ = mpt.train_teachers(workdir, row_cfg, row_base, frozen, tasks)
    export, source_eval = mpt.train_source(workdir, row_cfg, row_base, frozen, teachers, variant=row.source_variant,
                                       tasks=tasks)
    targets = mpt.adapt_targets(workdir, row_cfg, row_base, frozen, export, variant=row.target_variant,
                                update=row.update)
    results[row.name] = {"description": row.description, "targets": targets, "source": source_eval,
                         "average": float(np.mean([mpt.task_score(m) for m in targets.values()]))}
  jsonl_io.write_json_atomic(os.path.join(workdir, "ablations.json"), {"backbone": frozen.ref["path"], "rows": results})
  return results


def run_length_sweep(workdir: str, cfg: MPTConfig, base: Base, lengths: Optional[Sequence[int]] = None,
                     frozen: Optional[Frozen] = None) -> dict[int, dict]:
  """The whole pipeline per prompt length (teachers included: they must match the student's length)."""
  lengths = list(lengths or cfg.lengths)
  if not lengths:
    raise ValueError("run_length_sweep: no prompt lengths (bind MPTConfig.lengths, e.g. (50, 100, 200, 300))")
  frozen = frozen or Frozen.load(base)
  out = {}
  for length in lengths:
    out[int(length)] = mpt.run_pipeline(os.path.join(workdir, f"length_{length}"), cfg.replace(prompt_length=length),
                                    base, frozen)
  jsonl_io.write_json_atomic(os.path.join(workdir, "lengths.json"),
                             {"backbone": frozen.ref["path"], "lengths": {str(k): v for k, v in out.items()}})
  return out
