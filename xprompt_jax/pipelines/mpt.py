"""MPT end to end (Wang et al. 2023): teachers, distilled multitask source training, target adaptation.

Each stage is an ordinary `training.loop.train` run in its own folder under the pipeline's work dir, on one frozen
T5 loaded once; a finished stage leaves its result file and is skipped when the pipeline is rerun, an unfinished
one resumes from its checkpoints.

1. `teachers/<task>/`: one single-task prompt per source task by plain prompt tuning (`PromptTuning`).
2. `source[_<variant>]/`: the decomposed student `P_k = P* ∘ (u_k v_kᵀ)` trained on the source mixture with
   stochastic task sampling (`mpt_data`) and `L = L_PLM + lambda (L_logits + L_hidden)` (`training.distill`).
   The distilled prompt is exported to `mpt_source.npz` (`shared_prompt`, `u`, `v`, `task_names`) for reuse.
3. `target_<variant>/<task>/`: `P̂_t = P* ∘ (u_t v_tᵀ)` from the export (u_t, v_t the mean of the sources' by
   default) trained with the task loss and separate learning rates for P*, u_t and v_t (labels "shared", "u",
   "v"; a rate of 0 freezes), exported to `mpt_target.npz`. `MPTConfig.target_multitask` trains one MPT over
   the whole target group instead (P* shared, one u_t, v_t per task); `MPTConfig.few_shot = (4, 16, 32)` adapts
   on k examples per class for every seed in `few_shot_seeds`.

`pipelines.mpt_ablations` trains the paper's ablation rows (Table 6 and Sec. 4.3) from one set of teachers and
reruns the pipeline per prompt length. Every stage folder is a `training.stages` stage (its `result.json`). Numbers from these runs come from whatever backbone
`TrainConfig.initial_checkpoint` names (a random-weight one when None) and are labelled so by `mpt_report`.
"""
import dataclasses
import hashlib
import json
import math
import os
from typing import Any, Optional, Sequence

import jax
import numpy as np

from xprompt_jax import jsonl_io
from xprompt_jax.methods.mpt import MPT, target_init_from_sources
from xprompt_jax.methods.prompt import PromptTuning
from xprompt_jax.models import t5
from xprompt_jax.pipelines import mpt_data
from xprompt_jax.tasks import mixtures
from xprompt_jax.tasks import registry_utils as ru
from xprompt_jax.training import data as data_lib
from xprompt_jax.training import distill
from xprompt_jax.training import loop
from xprompt_jax.training import optim
from xprompt_jax.training import partitioning
from xprompt_jax.training import run_configs
from xprompt_jax.training import stages

from xprompt_jax.pipelines.mpt_config import TARGET_UPDATES, TARGET_UV_INITS, MPTConfig

SOURCE_EXPORT = "mpt_source.npz"
TARGET_EXPORT = "mpt_target.npz"


@dataclasses.dataclass(frozen=True)
class TargetMPT(MPT):
  """MPT whose P*, u and v carry their own labels ("shared", "u", "v"): separate target learning rates."""

  def param_labels(self, trainable):
    del trainable
    return {"shared_prompt": "shared", "u": "u", "v": "v"}


@dataclasses.dataclass(frozen=True)
class Base(run_configs.RunConfigs):
  """The per-run settings every stage starts from (each stage replaces its steps, task and learning rates)."""
  distill: distill.DistillConfig
  sampling: mpt_data.SamplingConfig

  @classmethod
  def gin_fields(cls, task: str) -> dict[str, Any]:
    return {**super().gin_fields(task), "distill": distill.DistillConfig(), "sampling": mpt_data.SamplingConfig()}

  @classmethod
  def extend(cls, configs: run_configs.RunConfigs) -> "Base":
    """`configs` plus the gin-bound distillation and task-sampling configs."""
    fields = {f.name: getattr(configs, f.name) for f in dataclasses.fields(run_configs.RunConfigs)}
    return cls(**fields, distill=distill.DistillConfig(), sampling=mpt_data.SamplingConfig())


@dataclasses.dataclass
class Frozen:
  """The frozen T5 loaded once and shared by every stage."""
  params: Any
  ref: dict

  @classmethod
  def load(cls, base: Base) -> "Frozen":
    mesh = partitioning.make_mesh(base.mesh)
    params, ref = loop.load_frozen(base.train, base.config, mesh, base.mesh.rules)
    return cls(params, ref)


def _host(tree):
  return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


def stage_eval(base: Base, tasks: Sequence[str], split: Optional[str] = None,
               task_ids: bool = False) -> tuple[Any, tuple[str, ...], Optional[dict[str, int]]]:
  """How a stage trained on `tasks` is evaluated: (EvalConfig with `split`, every task's evaluation tasks for it,
  and with `task_ids` their MPT task ids: an evaluation task gets the id of the task it evaluates)."""
  eval_cfg = base.eval if split is None else dataclasses.replace(base.eval, split=split)
  ids: dict[str, int] = {}
  for i, task in enumerate(tasks):
    for name in ru.evaluation_tasks(task, eval_cfg.split):
      ids.setdefault(name, i)
  return eval_cfg, tuple(ids), ids if task_ids else None


def _train(model_dir: str, base: Base, frozen: Frozen, *, method, task: str, steps: int, opt: optim.OptimizerConfig,
           evaluated: Sequence[str], eval_split: Optional[str] = None, task_ids: bool = False, **kwargs) -> dict:
  """One stage's `loop.train` run on `task`, evaluated on the evaluation tasks of `evaluated` (`stage_eval`)."""
  eval_cfg, eval_tasks, eval_task_ids = stage_eval(base, evaluated, eval_split, task_ids)
  result = loop.train(model_dir, config=base.config, method=method,
                      data_cfg=dataclasses.replace(base.data, mixture_or_task_name=task), opt_cfg=opt,
                      mesh_cfg=base.mesh, train_cfg=dataclasses.replace(base.train, num_train_steps=steps,
                                                                        eval_tasks=eval_tasks),
                      loss_cfg=base.loss, eval_cfg=eval_cfg, frozen=frozen.params, frozen_ref=frozen.ref,
                      eval_task_ids=eval_task_ids, **kwargs)
  return stages.check_preempted(result, model_dir)


def check_tasks(cfg: MPTConfig, extended: bool = False) -> None:
  """Fails before any training when a source, target or (with `extended`) extra source task is not registered."""
  names = [*cfg.source_tasks, *cfg.target_tasks, *(cfg.extended_source_tasks if extended else ())]
  for name in names:
    try:
      data_lib.get_task(name)
    except (ValueError, KeyError) as e:
      raise ValueError(f"MPT task {name!r} (MPTConfig source/target/extended tasks) is not usable: {e}") from e


def group_mixture(tasks: Sequence[str], rates: Optional[Sequence[float]] = None, kind: str = "group") -> str:
  """Registers (idempotently) a seqio mixture of `tasks`, named by their hash: the stage's training data name (its
  data log; the batches come from `mpt_data`). The stage evaluates each task's evaluation tasks (`stage_eval`)."""
  digest = hashlib.sha256(json.dumps([list(tasks), rates]).encode()).hexdigest()[:10]
  return mixtures.make_mixture(f"mpt_{kind}_{digest}", list(tasks), rates=None if rates is None else list(rates))


# ----------------------------------------------------------------------------------------------------------------------
# 1. Teachers.


def train_teachers(workdir: str, cfg: MPTConfig, base: Base, frozen: Frozen,
                   tasks: Optional[Sequence[str]] = None) -> tuple[np.ndarray, dict]:
  """Stacked teacher prompts [T, L, D] (one prompt-tuning run per task, in order, in `<workdir>/teachers/<task>`)
  and their eval metrics."""
  prompts, evals = [], {}
  for task in tasks or cfg.source_tasks:
    prompt, done = train_teacher(os.path.join(workdir, "teachers", task), cfg, base, frozen, task)
    prompts.append(prompt)
    evals[task] = done["eval"]
  return np.stack(prompts), evals


def train_teacher(model_dir: str, cfg: MPTConfig, base: Base, frozen: Frozen, task: str) -> tuple[np.ndarray, dict]:
  """One teacher: plain prompt tuning on `task` in `model_dir` (a stage) -> (its prompt [L, D], its record)."""
  prompt_path = os.path.join(model_dir, "prompt.npy")

  def train() -> dict:
    method = PromptTuning(length=cfg.prompt_length, prompt_init=cfg.prompt_init)
    opt = dataclasses.replace(base.opt, learning_rate=cfg.teacher_learning_rate, label_learning_rates=None)
    result = _train(model_dir, base, frozen, method=method, task=task, steps=cfg.teacher_steps, opt=opt,
                    evaluated=(task,), eval_split=cfg.source_eval_split)
    np.save(prompt_path, _host(result["state"]["trainable"]["prompt"]))
    return {"task": task, "step": result["step"], "eval": result["eval"]}

  done = stages.run(model_dir, train)
  prompt = np.load(prompt_path)
  if prompt.shape != (cfg.prompt_length, base.config.emb_dim):
    raise ValueError(f"teacher prompt {prompt_path} has shape {prompt.shape}; this run needs "
                     f"[{cfg.prompt_length}, {base.config.emb_dim}] (MPTConfig.prompt_length, T5Config.emb_dim): "
                     "use another work dir for another prompt length or model")
  return prompt, done


# ----------------------------------------------------------------------------------------------------------------------
# 2. Source training.


def source_steps(cfg: MPTConfig, base: Base, tasks: Sequence[str]) -> int:
  """`cfg.source_steps`, or `source_epochs` passes over the capped source mixture."""
  if cfg.source_steps is not None:
    return cfg.source_steps
  total = int(mpt_data.task_sizes(tasks, base.data.split).sum())
  return max(1, math.ceil(cfg.source_epochs * total / base.data.batch_size))


def load_source_export(path: str) -> dict:
  """The distilled prompt of `train_source`: {"shared_prompt", "u", "v", "task_names"}."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"no MPT source export at {path}: run the source stage first (xprompt-jax mpt "
                            "--stage=source) or point to an existing mpt_source.npz")
  with np.load(path, allow_pickle=False) as f:
    export = {k: f[k] for k in f.files}
  missing = {"shared_prompt", "u", "v", "task_names"} - set(export)
  if missing:
    raise ValueError(f"{path} is not an MPT source export: it lacks {sorted(missing)}")
  export["task_names"] = [str(t) for t in export["task_names"]]
  return export


def train_source(workdir: str, cfg: MPTConfig, base: Base, frozen: Frozen, teachers: np.ndarray, *,
                 variant: str = "", tasks: Optional[Sequence[str]] = None) -> tuple[dict, dict]:
  """Distilled multitask source training in `<workdir>/source[_<variant>]`; returns (the export, the final
  source-task metrics)."""
  model_dir = os.path.join(workdir, f"source_{variant}" if variant else "source")
  return source_stage(model_dir, cfg, base, frozen, teachers, tasks)


def source_stage(model_dir: str, cfg: MPTConfig, base: Base, frozen: Frozen, teachers: np.ndarray,
                 tasks: Optional[Sequence[str]] = None) -> tuple[dict, dict]:
  """The source training stage in `model_dir`: (the export `mpt_source.npz`, the final source-task metrics)."""
  tasks = list(tasks or cfg.source_tasks)
  done = stages.run(model_dir, lambda: _distill_sources(model_dir, cfg, base, frozen, teachers, tasks))
  return load_source_export(os.path.join(model_dir, SOURCE_EXPORT)), done["eval"]


def _distill_sources(model_dir, cfg, base, frozen, teachers, tasks) -> dict:
  method = MPT(length=cfg.prompt_length, num_tasks=len(tasks), rank=cfg.rank,
               prompt_init=cfg.student_prompt_init or cfg.prompt_init,
               uv_init=cfg.student_uv_init if cfg.source_decomposition else "ones")
  distill.check_teachers(teachers, method, base.config, tasks)
  rates = cfg.source_rates if tasks == list(cfg.source_tasks) else None
  mixture = group_mixture(tasks, rates, "source")
  loss_fn = distill.make_distill_loss(t5.T5(base.config), method, base.config, base.loss, base.distill)
  # Without decomposition u, v are frozen at ones: every task shares the one prompt P*.
  label_rates = None if cfg.source_decomposition else (("shared", cfg.source_learning_rate), ("task", 0.0))
  opt = dataclasses.replace(base.opt, learning_rate=cfg.source_learning_rate, label_learning_rates=label_rates)
  result = _train(model_dir, base, frozen, method=method, task=mixture, steps=source_steps(cfg, base, tasks),
                  opt=opt, evaluated=tasks, eval_split=cfg.source_eval_split, task_ids=True,
                  aux={distill.TEACHERS_KEY: np.asarray(teachers)},
                  loss_fn=loss_fn, batches_fn=mpt_data.make_sampled_batches_fn(tasks, base.sampling, rates))
  trainable = _host(result["state"]["trainable"])
  np.savez(os.path.join(model_dir, SOURCE_EXPORT), shared_prompt=trainable["shared_prompt"], u=trainable["u"],
           v=trainable["v"], task_names=np.asarray(tasks))
  return {"tasks": tasks, "step": result["step"], "eval": result["eval"], "distill": dataclasses.asdict(base.distill),
          "sampling": dataclasses.asdict(base.sampling)}


# ----------------------------------------------------------------------------------------------------------------------
# 3. Target adaptation.


def target_initial_trainable(export: dict, targets: Sequence[str], uv_init: str = "mean",
                             update: str = "both") -> dict:
  """P̂_t = P* ∘ (u_t v_tᵀ) for each target: P* from the export, u_t, v_t by `uv_init` (ones when only P* trains)."""
  if uv_init not in TARGET_UV_INITS:
    raise ValueError(f"target uv init {uv_init!r}; known: {', '.join(TARGET_UV_INITS)}")
  if update not in TARGET_UPDATES:
    raise ValueError(f"target update {update!r}; known: {', '.join(TARGET_UPDATES)}")
  init = _host(target_init_from_sources({k: export[k] for k in ("shared_prompt", "u", "v")}, len(targets)))
  if update == "shared_only" or uv_init == "ones":
    init["u"], init["v"] = np.ones_like(init["u"]), np.ones_like(init["v"])
  elif uv_init == "matching_source":
    names = list(export["task_names"])
    missing = [t for t in targets if t not in names]
    if missing:
      raise ValueError(f"target tasks {missing} have no source prompt to start from (target_uv_init="
                       f"'matching_source'); the source tasks are {names}")
    index = [names.index(t) for t in targets]
    init["u"], init["v"] = np.asarray(export["u"])[index], np.asarray(export["v"])[index]
  return init


def target_learning_rates(cfg: MPTConfig, update: str) -> tuple[tuple[str, float], ...]:
  """(label, lr) pairs for P* ("shared"), u and v; 0 freezes (task-only: P*; shared-only: u, v)."""
  shared = 0.0 if update == "task_only" else cfg.shared_learning_rate
  u, v = (0.0, 0.0) if update == "shared_only" else (cfg.u_learning_rate, cfg.v_learning_rate)
  if shared == u == v == 0:
    raise ValueError(f"target adaptation with update={update!r} would train nothing: every learning rate is 0")
  return (("shared", shared), ("u", u), ("v", v))


def adapt_target(model_dir: str, cfg: MPTConfig, base: Base, frozen: Frozen, export: dict,
                 targets: Sequence[str], *, update: str = "both", shots: Optional[int] = None,
                 seed: int = 0) -> dict:
  """Target adaptation of one task (or, with several, one multitask MPT over them) in `model_dir` (a stage);
  returns per-task metrics."""
  targets = list(targets)
  return stages.run(model_dir, lambda: _adapt(model_dir, cfg, base, frozen, export, targets, update, shots,
                                              seed))["per_task"]


def _adapt(model_dir, cfg, base, frozen, export, targets, update, shots, seed) -> dict:
  if shots is not None and len(targets) != 1:
    raise ValueError(f"few-shot adaptation takes one target task at a time, got {targets}")
  init = target_initial_trainable(export, targets, cfg.target_uv_init, update)
  if init["shared_prompt"].shape != (cfg.prompt_length, base.config.emb_dim):
    raise ValueError(f"the source export's P* has shape {init['shared_prompt'].shape}; this run needs "
                     f"[{cfg.prompt_length}, {base.config.emb_dim}]")
  method = TargetMPT(length=cfg.prompt_length, num_tasks=len(targets), rank=init["u"].shape[-1],
                     prompt_init="random_uniform", uv_init="ones")
  opt = dataclasses.replace(base.opt, label_learning_rates=target_learning_rates(cfg, update))
  kwargs: dict[str, Any] = {"initial_trainable": init}
  if len(targets) == 1:
    task = targets[0]
    if shots is not None:
      pool = mpt_data.few_shot_pool(task, base.data, shots, seed, per_class=cfg.few_shot_per_class)
      kwargs["batches_fn"] = mpt_data.make_pool_batches_fn(pool, seed)
  else:
    task = group_mixture(targets, kind="target")
    kwargs["batches_fn"] = mpt_data.make_sampled_batches_fn(targets, mpt_data.SamplingConfig(stochastic=False))
  result = _train(model_dir, base, frozen, method=method, task=task, steps=cfg.target_steps, opt=opt,
                  evaluated=targets, task_ids=len(targets) > 1, **kwargs)
  per_task = per_task_metrics(result["eval"], targets, base.eval.split)
  trainable = _host(result["state"]["trainable"])
  np.savez(os.path.join(model_dir, TARGET_EXPORT), **trainable, task_names=np.asarray(targets))
  return {"targets": targets, "update": update, "shots": shots, "seed": seed, "step": result["step"],
          "per_task": per_task}


def per_task_metrics(eval_results: dict, tasks: Sequence[str],
                     split: Optional[str] = None) -> dict[str, dict[str, float]]:
  """{task: {metric: value}} from an evaluation's `<...>/<eval task>/<metric>` keys, a task's metrics being those
  of its evaluation tasks for `split` (`registry_utils.evaluation_tasks`; with several, as MNLI's matched and
  mismatched sets, each metric is keyed `<eval task>/<metric>`)."""
  out: dict[str, dict[str, float]] = {t: {} for t in tasks}
  for t in tasks:
    names = ru.evaluation_tasks(t, split)
    for key, value in eval_results.items():
      for name in names:
        marker = f"{name}/"
        if key.startswith(marker) or f"/{marker}" in key:
          metric = key.split(marker, 1)[1]
          out[t][metric if len(names) == 1 else f"{name}/{metric}"] = float(value)
  return out


def task_score(metrics: dict[str, float]) -> float:
  """A task's score: the mean of its metrics (T5's benchmark convention)."""
  return float(np.mean(list(metrics.values()))) if metrics else float("nan")


def adapt_targets(workdir: str, cfg: MPTConfig, base: Base, frozen: Frozen, export: dict, *,
                  variant: str = "", update: Optional[str] = None) -> dict:
  """Every target task (one run each, a multitask run, or few-shot runs over k and seeds) -> {task: metrics}."""
  update = update or cfg.target_update
  root = os.path.join(workdir, f"target_{variant}" if variant else "target")
  if cfg.target_multitask:
    return adapt_target(os.path.join(root, "multitask"), cfg, base, frozen, export, cfg.target_tasks,
                        update=update)
  if not cfg.few_shot:
    out = {}
    for task in cfg.target_tasks:
      out.update(adapt_target(os.path.join(root, task), cfg, base, frozen, export, [task], update=update))
    return out
  out = {}
  for shots in cfg.few_shot:
    for task in cfg.target_tasks:
      runs = [adapt_target(os.path.join(root, f"{shots}shot", f"seed{seed}", task), cfg, base, frozen, export,
                           [task], update=update, shots=shots, seed=seed)[task] for seed in cfg.few_shot_seeds]
      out[f"{task}@{shots}shot"] = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
  return out


# ----------------------------------------------------------------------------------------------------------------------
# Whole runs.


def run_pipeline(workdir: str, cfg: MPTConfig, base: Base, frozen: Optional[Frozen] = None) -> dict:
  """Teachers -> distilled source training -> target adaptation; returns every stage's metrics."""
  check_tasks(cfg)
  frozen = frozen or Frozen.load(base)
  teachers, teacher_eval = train_teachers(workdir, cfg, base, frozen)
  export, source_eval = train_source(workdir, cfg, base, frozen, teachers)
  targets = adapt_targets(workdir, cfg, base, frozen, export)
  result = {"teachers": teacher_eval, "source": source_eval, "targets": targets,
            "average": float(np.mean([task_score(m) for m in targets.values()])), "backbone": frozen.ref["path"]}
  jsonl_io.write_json_atomic(os.path.join(workdir, "results.json"), result)
  return result
