"""The `xprompt` table job: one whole `xprompt-jax xprompt` run in the job's folder, and its record for the table.

The record holds, per variant of the run's report (prompt tuning, XPrompt = the best rewound ratio, each control),
the evaluation of its best checkpoint (early stopping on dev) as {eval task: metrics}, so a table reads any metric
the task reports, not only the selection metric.
"""
from typing import Any

from xprompt_jax.tables import base


def by_eval_task(flat: dict[str, float], names) -> dict[str, dict[str, float]]:
  """{eval task: {metric: value}} from a checkpoint's `<eval task>/<metric>` keys."""
  out: dict[str, dict[str, float]] = {name: {} for name in names}
  for key, value in flat.items():
    for name in names:
      if key.startswith(f"{name}/"):
        out[name][key[len(name) + 1:]] = float(value)
  return out


def variants(run_dir: str, rows, names) -> dict[str, Any]:
  """{variant: {"stage", "ratio", "metric", "eval"}} of the best row of each variant (pruned-only points left out)."""
  from xprompt_jax.checkpoints import storage
  from xprompt_jax.pipelines import xprompt_parts
  from xprompt_jax.training import stages
  best = xprompt_parts.best_per_variant(rows)
  out = {}
  for variant, row in best.items():
    stage = stages.read_result(storage.join(run_dir, row["stage"]))
    out[variant] = {"stage": row["stage"], "ratio": row["ratio"], "metric": row["metric"],
                    "kept_pieces": row["kept_pieces"], "eval": by_eval_task(stage["best_metrics"], names)}
  return out


def xprompt_job(job: base.Job, run_dir: str, results_dir: str) -> dict:
  """`xprompt-jax xprompt --model_dir=<run_dir>` on the job's config (checked first, as the command does)."""
  del results_dir
  from xprompt_jax.evaluation import evaluator
  from xprompt_jax.pipelines import xprompt
  from xprompt_jax.training import data as data_lib
  from xprompt_jax.training import loop
  from xprompt_jax.training import stages
  cfg, train_cfg, data_cfg = xprompt.XPromptPipelineConfig(), loop.TrainConfig(), data_lib.DataConfig()
  eval_cfg = evaluator.EvalConfig()
  xprompt.check_select_metric(cfg, train_cfg, data_cfg, eval_cfg)
  out = xprompt.run_xprompt(run_dir)
  if out["preempted"]:
    raise stages.Preempted(out["stopped"])
  if out["rows"] is None:
    raise RuntimeError(f"the XPrompt run stopped early: {out['stopped']}")
  names = loop.default_eval_tasks(train_cfg, data_cfg, loop.eval_lib_defaults(eval_cfg, data_cfg))
  return {"task": job.task, "seed": job.seed, "variants": variants(run_dir, out["rows"], names)}
