"""The MPT table jobs: a teacher, a distilled source prompt, a target adaptation, each a stage of `pipelines.mpt`
in the job's folder, on the gin config `xprompt-jax mpt` would read (`MPTConfig`, `DistillConfig`, ...).

A source job reads its teachers' prompts from their folders, a target job its source job's export
(`<source job>/stage/mpt_source.npz`); the table runs those first (`Job.needs`). A job's `ablation` option names the row of
`pipelines.mpt_ablations.ABLATIONS` whose distillation / task-sampling overrides and target update it applies.
"""
import dataclasses

import numpy as np

from xprompt_jax.tables import base

# The pipeline's own stage (its checkpoints, export and record) sits in this subfolder of a source or target job, so
# the job folder's result.json is only ever the table's record (a teacher's record is the same for both: its folder).
STAGE = "stage"


def _setup(job: base.Job):
  """(mpt module, MPTConfig, Base with the job's ablation row applied, the ablation row) from gin."""
  from xprompt_jax.pipelines import mpt
  from xprompt_jax.pipelines import mpt_ablations
  cfg = mpt.MPTConfig()
  base_cfg = mpt.Base.from_gin(cfg.source_tasks[0])
  rows = {a.name: a for a in mpt_ablations.ABLATIONS}
  row = rows[job.option("ablation", "full")]
  base_cfg = dataclasses.replace(base_cfg, distill=dataclasses.replace(base_cfg.distill, **row.distill),
                                 sampling=dataclasses.replace(base_cfg.sampling, **row.sampling))
  return mpt, cfg.replace(**row.config), base_cfg, row


def _check_sources(cfg, tasks, row) -> None:
  """The table's teacher folders are the paper's source tasks; a config binding others is a one-line error."""
  bound = (*cfg.source_tasks, *(t for t in cfg.extended_source_tasks if t not in cfg.source_tasks
                                and row.extended_sources))
  if tuple(bound) != tuple(tasks):
    raise ValueError(f"the MPT tables train the paper's source tasks {list(tasks)}; the config binds "
                     f"MPTConfig.source_tasks (+ extended_source_tasks for sources_12) = {list(bound)}: use "
                     "`xprompt-jax mpt` for other source tasks")


def mpt_teacher_job(job: base.Job, run_dir: str, results_dir: str) -> dict:
  """Plain prompt tuning on one source task (`mpt.train_teacher`)."""
  del results_dir
  mpt, cfg, base_cfg, _ = _setup(job)
  _, record = mpt.train_teacher(run_dir, cfg, base_cfg, mpt.Frozen.load(base_cfg), job.task)
  return record


def mpt_source_job(job: base.Job, run_dir: str, results_dir: str) -> dict:
  """Distilled multitask source training from the finished teachers (`mpt.source_stage`)."""
  from xprompt_jax.checkpoints import storage
  mpt, cfg, base_cfg, row = _setup(job)
  tasks = list(job.option("source_tasks"))
  _check_sources(cfg, tasks, row)
  frozen = mpt.Frozen.load(base_cfg)
  teachers = np.stack([mpt.train_teacher(storage.join(results_dir, need), cfg, base_cfg, frozen, task)[0]
                       for need, task in zip(job.needs, tasks)])
  _, evals = mpt.source_stage(storage.join(run_dir, STAGE), cfg, base_cfg, frozen, teachers, tasks)
  return {"tasks": tasks, "ablation": row.name, "eval": evals}


def mpt_target_job(job: base.Job, run_dir: str, results_dir: str) -> dict:
  """Target adaptation of the job's task from its source job's export (`mpt.adapt_target`; on the job's `shots`
  examples of draw `draw` when it has them): its metrics by evaluation task ({eval task: metrics}, MNLI on matched
  and mismatched)."""
  from xprompt_jax.checkpoints import storage
  from xprompt_jax.tasks import registry_utils
  mpt, cfg, base_cfg, row = _setup(job)
  export = mpt.load_source_export(storage.join(results_dir, job.option("source"), STAGE, mpt.SOURCE_EXPORT))
  per_task = mpt.adapt_target(storage.join(run_dir, STAGE), cfg, base_cfg, mpt.Frozen.load(base_cfg), export,
                              [job.task], update=row.update, shots=job.option("shots"),
                              seed=job.option("draw", 0))[job.task]
  names = registry_utils.evaluation_tasks(job.task, base_cfg.eval.split)
  if len(names) == 1:
    by_task = {names[0]: per_task}
  else:  # Keyed "<eval task>/<metric>" (`mpt.per_task_metrics`).
    by_task = {n: {k[len(n) + 1:]: v for k, v in per_task.items() if k.startswith(f"{n}/")} for n in names}
  return {"task": job.task, "seed": job.seed, "ablation": row.name, "shots": job.option("shots"),
          "draw": job.option("draw"), "eval": by_task}
