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

`run_ablations` trains the paper's ablation rows (Table 6 and Sec. 4.3) from one set of teachers; `run_length_sweep`
reruns the pipeline per prompt length. Numbers from these runs come from whatever backbone
`TrainConfig.initial_checkpoint` names (a random-weight one when None) and are labelled so by `mpt_report`.
"""
import dataclasses
import hashlib
import json
import math
import os
from typing import Any, Optional, Sequence

import gin
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

SUPER_GLUE_TARGETS = ("super_glue_multirc_v102", "super_glue_boolq_v102", "super_glue_wic_v102",
                      "super_glue_wsc_v102_simple_train", "super_glue_cb_v102")
TARGET_UPDATES = ("both", "shared_only", "task_only")
TARGET_UV_INITS = ("mean", "matching_source", "ones")
SOURCE_EXPORT = "mpt_source.npz"
TARGET_EXPORT = "mpt_target.npz"
RESULT_FILE = "result.json"


class Preempted(RuntimeError):
  """A stage was preempted (SIGTERM) and saved; rerunning the same command resumes it."""


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MPTConfig:
  """The pipeline's settings; paper defaults (T5-Base: L = 100, 6 source tasks, 5 source epochs)."""
  source_tasks: tuple[str, ...] = mixtures.MPT_SOURCE_TASKS
  source_rates: Optional[tuple[float, ...]] = None  # None: examples-proportional mixing.
  target_tasks: tuple[str, ...] = SUPER_GLUE_TARGETS
  prompt_length: int = 100
  rank: int = 1
  prompt_init: str = "sampled_vocab"
  # 1. Teachers (plain prompt tuning).
  teacher_steps: int = 30_000
  teacher_learning_rate: float = 0.3
  # The split the source-side stages (teachers, distillation) are evaluated on; each task on its evaluation tasks
  # for it (`registry_utils.evaluation_tasks`: MNLI's "validation" is its matched and mismatched sets). Offline,
  # MNLI and QQP have no official validation file: "resplit_dev" (the held-out part of the local GLUE re-split
  # train, which MNLI itself has) monitors them.
  source_eval_split: str = "validation"
  # 2. Source training.
  source_epochs: float = 5.0
  source_steps: Optional[int] = None  # None: `source_epochs` passes over the (capped) source mixture.
  source_learning_rate: float = 0.3
  student_uv_init: str = "normal"  # The paper initialises the students randomly.
  # 3. Target adaptation.
  target_steps: int = 30_000
  shared_learning_rate: float = 0.3
  u_learning_rate: float = 0.3
  v_learning_rate: float = 0.3
  target_uv_init: str = "mean"  # "mean" of the sources' u_k, v_k | "matching_source" (same-named source) | "ones".
  target_update: str = "both"  # "both" | "shared_only" (u, v removed) | "task_only" (P* frozen).
  target_multitask: bool = False  # One MPT over the target group (P* shared across it).
  few_shot: tuple[int, ...] = ()  # k examples per class, e.g. (4, 16, 32); () trains on the full split.
  few_shot_seeds: tuple[int, ...] = (0, 1, 2)
  # Ablation extras.
  extended_source_tasks: tuple[str, ...] = mixtures.MPT_EXTRA_SOURCE_TASKS  # The `sources_12` ablation's extra tasks.
  lengths: tuple[int, ...] = ()  # Prompt lengths of `run_length_sweep`.

  def __post_init__(self):
    if not self.source_tasks:
      raise ValueError("MPTConfig.source_tasks is empty")
    if not self.target_tasks:
      raise ValueError("MPTConfig.target_tasks is empty")
    if self.source_rates is not None and len(self.source_rates) != len(self.source_tasks):
      raise ValueError(f"MPTConfig.source_rates has {len(self.source_rates)} rates for "
                       f"{len(self.source_tasks)} source tasks {list(self.source_tasks)}")
    for field in ("prompt_length", "rank", "teacher_steps", "target_steps"):
      value = getattr(self, field)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"MPTConfig.{field} must be a positive int, got {value!r}")
    if self.target_update not in TARGET_UPDATES:
      raise ValueError(f"MPTConfig.target_update={self.target_update!r}; known: {', '.join(TARGET_UPDATES)}")
    if self.target_uv_init not in TARGET_UV_INITS:
      raise ValueError(f"MPTConfig.target_uv_init={self.target_uv_init!r}; known: {', '.join(TARGET_UV_INITS)}")
    for field in ("teacher_learning_rate", "source_learning_rate"):
      if not getattr(self, field) > 0:
        raise ValueError(f"MPTConfig.{field} must be > 0, got {getattr(self, field)}")
    for field in ("shared_learning_rate", "u_learning_rate", "v_learning_rate"):
      if not getattr(self, field) >= 0:
        raise ValueError(f"MPTConfig.{field} must be >= 0 (0 freezes), got {getattr(self, field)}")
    if any(not isinstance(k, int) or k <= 0 for k in self.few_shot):
      raise ValueError(f"MPTConfig.few_shot must hold positive ints (examples per class), got {self.few_shot}")
    if self.few_shot and not self.few_shot_seeds:
      raise ValueError("MPTConfig.few_shot is set but few_shot_seeds is empty")
    if self.few_shot and self.target_multitask:
      raise ValueError("MPTConfig.few_shot and MPTConfig.target_multitask are exclusive: few-shot adaptation runs "
                       "one target task at a time")

  def replace(self, **kwargs) -> "MPTConfig":
    return dataclasses.replace(self, **kwargs)


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
  if result.get("preempted"):
    raise Preempted(f"preempted in {model_dir} at step {result['step']}; rerun the same command to resume")
  return result


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
  """Stacked teacher prompts [T, L, D] (one prompt-tuning run per task, in order) and their eval metrics."""
  prompts, evals = [], {}
  for task in tasks or cfg.source_tasks:
    model_dir = os.path.join(workdir, "teachers", task)
    done = jsonl_io.read_json_if_exists(os.path.join(model_dir, RESULT_FILE))
    prompt_path = os.path.join(model_dir, "prompt.npy")
    if done is None or not os.path.exists(prompt_path):
      method = PromptTuning(length=cfg.prompt_length, prompt_init=cfg.prompt_init)
      opt = dataclasses.replace(base.opt, learning_rate=cfg.teacher_learning_rate, label_learning_rates=None)
      result = _train(model_dir, base, frozen, method=method, task=task, steps=cfg.teacher_steps, opt=opt,
                      evaluated=(task,), eval_split=cfg.source_eval_split)
      np.save(prompt_path, _host(result["state"]["trainable"]["prompt"]))
      done = {"task": task, "step": result["step"], "eval": result["eval"]}
      jsonl_io.write_json_atomic(os.path.join(model_dir, RESULT_FILE), done)
    prompt = np.load(prompt_path)
    if prompt.shape != (cfg.prompt_length, base.config.emb_dim):
      raise ValueError(f"teacher prompt {prompt_path} has shape {prompt.shape}; this run needs "
                       f"[{cfg.prompt_length}, {base.config.emb_dim}] (MPTConfig.prompt_length, T5Config.emb_dim): "
                       "use another work dir for another prompt length or model")
    prompts.append(prompt)
    evals[task] = done["eval"]
  return np.stack(prompts), evals


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
  """Distilled multitask source training; returns (the export, the final source-task metrics)."""
  tasks = list(tasks or cfg.source_tasks)
  model_dir = os.path.join(workdir, f"source_{variant}" if variant else "source")
  export_path = os.path.join(model_dir, SOURCE_EXPORT)
  done = jsonl_io.read_json_if_exists(os.path.join(model_dir, RESULT_FILE))
  if done is not None and os.path.exists(export_path):
    return load_source_export(export_path), done["eval"]
  method = MPT(length=cfg.prompt_length, num_tasks=len(tasks), rank=cfg.rank, prompt_init=cfg.prompt_init,
               uv_init=cfg.student_uv_init)
  distill.check_teachers(teachers, method, base.config, tasks)
  rates = cfg.source_rates if tasks == list(cfg.source_tasks) else None
  mixture = group_mixture(tasks, rates, "source")
  loss_fn = distill.make_distill_loss(t5.T5(base.config), method, base.config, base.loss, base.distill)
  opt = dataclasses.replace(base.opt, learning_rate=cfg.source_learning_rate, label_learning_rates=None)
  result = _train(model_dir, base, frozen, method=method, task=mixture, steps=source_steps(cfg, base, tasks),
                  opt=opt, evaluated=tasks, eval_split=cfg.source_eval_split, task_ids=True,
                  aux={distill.TEACHERS_KEY: np.asarray(teachers)},
                  loss_fn=loss_fn, batches_fn=mpt_data.make_sampled_batches_fn(tasks, base.sampling, rates))
  trainable = _host(result["state"]["trainable"])
  np.savez(export_path, shared_prompt=trainable["shared_prompt"], u=trainable["u"], v=trainable["v"],
           task_names=np.asarray(tasks))
  done = {"tasks": tasks, "step": result["step"], "eval": result["eval"], "distill": dataclasses.asdict(base.distill),
          "sampling": dataclasses.asdict(base.sampling)}
  jsonl_io.write_json_atomic(os.path.join(model_dir, RESULT_FILE), done)
  return load_source_export(export_path), done["eval"]


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
  """Target adaptation of one task (or, with several, one multitask MPT over them); returns per-task metrics."""
  targets = list(targets)
  done = jsonl_io.read_json_if_exists(os.path.join(model_dir, RESULT_FILE))
  if done is not None:
    return done["per_task"]
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
      pool = mpt_data.few_shot_pool(task, base.data, shots, seed)
      kwargs["batches_fn"] = mpt_data.make_pool_batches_fn(pool, seed)
  else:
    task = group_mixture(targets, kind="target")
    kwargs["batches_fn"] = mpt_data.make_sampled_batches_fn(targets, mpt_data.SamplingConfig(stochastic=False))
  result = _train(model_dir, base, frozen, method=method, task=task, steps=cfg.target_steps, opt=opt,
                  evaluated=targets, task_ids=len(targets) > 1, **kwargs)
  per_task = per_task_metrics(result["eval"], targets, base.eval.split)
  trainable = _host(result["state"]["trainable"])
  np.savez(os.path.join(model_dir, TARGET_EXPORT), **trainable, task_names=np.asarray(targets))
  jsonl_io.write_json_atomic(os.path.join(model_dir, RESULT_FILE), {
      "targets": targets, "update": update, "shots": shots, "seed": seed, "step": result["step"],
      "per_task": per_task})
  return per_task


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


@dataclasses.dataclass(frozen=True)
class Ablation:
  """One row of the ablation table: how its source training and its target adaptation differ from full MPT."""
  name: str
  description: str
  distill: dict = dataclasses.field(default_factory=dict)  # DistillConfig overrides.
  sampling: dict = dataclasses.field(default_factory=dict)  # SamplingConfig overrides.
  update: str = "both"
  extended_sources: bool = False

  @property
  def source_variant(self) -> str:
    """Rows that train the same source prompt share it (the target-side ablations reuse the full source)."""
    if self.distill or self.sampling or self.extended_sources:
      return self.name
    return ""

  @property
  def target_variant(self) -> str:
    """The full row's target runs are the plain pipeline's (`target/`), so a finished pipeline is reused."""
    return "" if self.name == "full" else self.name


ABLATIONS = (
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
  check_tasks(cfg, extended=any(a.extended_sources for a in rows))
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
    teachers, _ = train_teachers(workdir, cfg, row_base, frozen, tasks)
    export, source_eval = train_source(workdir, cfg, row_base, frozen, teachers, variant=row.source_variant,
                                       tasks=tasks)
    targets = adapt_targets(workdir, cfg, row_base, frozen, export, variant=row.target_variant, update=row.update)
    results[row.name] = {"description": row.description, "targets": targets, "source": source_eval,
                         "average": float(np.mean([task_score(m) for m in targets.values()]))}
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
    out[int(length)] = run_pipeline(os.path.join(workdir, f"length_{length}"), cfg.replace(prompt_length=length),
                                    base, frozen)
  jsonl_io.write_json_atomic(os.path.join(workdir, "lengths.json"),
                             {"backbone": frozen.ref["path"], "lengths": {str(k): v for k, v in out.items()}})
  return out
