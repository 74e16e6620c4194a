"""What each kind of table job runs: the same functions as the per-run commands, on the job's gin config.

The table command parses the paper config plus the job's bindings (and, for a dry run, `tables.dry_run`'s) before
each job, exactly as `xprompt-jax train` / `xprompt` / `mpt` / `ensemble` would parse their flags, then calls the
kind's function here with the job's folder as its model_dir. Each returns the job's record (json), which the stage
runner stores as the folder's `result.json`.
"""
from typing import Any, Callable

from xprompt_jax.tables import base


def evaluations(run_dir: str, names) -> dict[str, list]:
  """{eval task: [[step, metrics], ...]} of every evaluation the run logged (metrics.jsonl), in order."""
  from xprompt_jax import plotting
  from xprompt_jax.pipelines import compare
  rows = plotting.read_metrics(run_dir)
  return {name: [[step, metrics] for step, metrics in compare.evaluations(run_dir, name, rows)] for name in names}


def train_record(run_dir: str, job: base.Job, names, step: int) -> dict:
  evals = evaluations(run_dir, names)
  return {"task": job.task, "seed": job.seed, "step": int(step), "evals": evals,
          "last": {name: e[-1][1] for name, e in evals.items()}}


def train_job(job: base.Job, run_dir: str, results_dir: str) -> dict:
  """`xprompt-jax train --model_dir=<run_dir>` on the job's config; its evaluations."""
  del results_dir
  from xprompt_jax.training import data as data_lib
  from xprompt_jax.training import loop
  from xprompt_jax.training import run_configs
  from xprompt_jax.training import stages
  configs = run_configs.RunConfigs.from_gin(data_lib.DataConfig().mixture_or_task_name)
  configs.check_metric_keys()
  result = stages.check_preempted(loop.train(run_dir), run_dir)
  return train_record(run_dir, job, configs.eval_tasks(), result["step"])


def ensemble_job(job: base.Job, run_dir: str, results_dir: str) -> dict:
  """`xprompt-jax ensemble` of the prompts the job needs (their latest checkpoints) on the task's evaluation
  tasks: {"eval": {eval task: {"ensemble": metrics, "mean": ..., "best": ...}}}."""
  del run_dir
  from xprompt_jax.checkpoints import storage
  from xprompt_jax.commands import ensemble
  sources = {need: storage.join(results_dir, need) for need in job.needs}
  results, _, _ = ensemble.evaluate_runs(sources, step="best")  # The prompts' best checkpoints on dev.
  out = {}
  for task, metrics in results.items():
    grouped: dict[str, dict] = {}
    for key, value in metrics.items():
      who, name = key.split("/", 1)
      grouped.setdefault(who, {})[name] = float(value)
    out[task] = grouped
  return {"task": job.task, "prompts": list(job.needs), "eval": out}


def lm_adapt_job(job: base.Job, run_dir: str, results_dir: str) -> dict:
  """`xprompt-jax pretrain --model_dir=<run_dir>` on the job's config (LM adaptation of a span-corruption
  checkpoint): {"exports": [step, ...]} of every export it made (`<run_dir>/export/checkpoint_<step>`), in order."""
  del results_dir
  import os
  from xprompt_jax.pretraining import train as pretrain_lib
  report = pretrain_lib.pretrain(run_dir)
  root = os.path.join(run_dir, pretrain_lib.EXPORT_SUBDIR)
  steps = sorted(int(n.split("_")[-1]) for n in os.listdir(root) if n.startswith("checkpoint_"))
  return {"step": int(report["step"]), "validation_loss": report["validation_loss"],
          "exports": steps}


def backbone_bindings(job: base.Job, results_dir: str) -> list[str]:
  """The bindings that point a job at a backbone another job of the table made (its `backbone_export` option:
  (folder, index of that job's export)); none for a job on a public checkpoint."""
  made = job.option("backbone_export")
  if not made:
    return []
  from xprompt_jax.checkpoints import storage
  from xprompt_jax.training import stages
  folder, index = made
  record = stages.read_result(storage.join(results_dir, folder))
  exports = (record or {}).get("exports", [])
  if index >= len(exports):
    raise ValueError(f"{job.folder} loads export {index} of {folder}, which made {len(exports)} ({exports}); rerun "
                     f"{folder} (move its folder away) to make them")
  path = storage.join(results_dir, folder, "export", f"checkpoint_{exports[index]}")
  return [f"INITIAL_CHECKPOINT_PATH = {path!r}", f"TrainConfig.initial_checkpoint = {path!r}"]


def _lazy(module: str, name: str) -> Callable[[base.Job, str, str], Any]:
  """A job function of another module, imported when a job of its kind runs (XPrompt and MPT jobs)."""
  def run(job: base.Job, run_dir: str, results_dir: str) -> Any:
    import importlib
    return getattr(importlib.import_module(module), name)(job, run_dir, results_dir)
  return run


EXECUTORS: dict[str, Callable[[base.Job, str, str], Any]] = {  # (job, its model_dir, the results dir) -> record
    "train": train_job,
    "ensemble": ensemble_job,
    "lm_adapt": lm_adapt_job,
    "xprompt": _lazy("xprompt_jax.commands.table_jobs_xprompt", "xprompt_job"),
    "mpt_teacher": _lazy("xprompt_jax.commands.table_jobs_mpt", "mpt_teacher_job"),
    "mpt_source": _lazy("xprompt_jax.commands.table_jobs_mpt", "mpt_source_job"),
    "mpt_target": _lazy("xprompt_jax.commands.table_jobs_mpt", "mpt_target_job"),
}
