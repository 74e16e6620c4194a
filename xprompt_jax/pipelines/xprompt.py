"""XPrompt end to end (Ma et al., 2022): prompt tuning, importance, hierarchical pruning, rewinding, controls.

    xprompt-jax xprompt --gin_file=runs/xprompt_smoke_cpu.gin --model_dir=/tmp/xprompt_cb

Every stage is an ordinary `training.loop.train()` call (or a little host algorithm) writing into its own
subfolder of `model_dir`, a `training.stages` stage (done when its `result.json` exists; a preempted one leaves
none), so rerunning the command resumes at the first unfinished stage, from its own checkpoints:

  pt/                     1. prompt tuning of the full prompt (the masks are all ones)
  importance/             2. I = E_x |∂L(x)/∂γ| for the token and piece masks at γ = 1 (importance.npz)
  sweep/r0.30/            3. hierarchical pruning of the post-PT prompt at each ratio, the pruned prompt
                             evaluated on the validation split (no training)
  rewind_r0.30/           4. rewinding: surviving entries reset to their post-PT values (bit-exact), masks
                             fixed, retrained with the PT recipe
  controls/<variant>/     Reversed / Random / token-only / piece-only / Length prompts
  report/                 5. results table, pruning curve, importance heatmap, nearest words, final prompt

What the paper does and what we do. The paper searches the pruning ratios {10 %, ..., 90 %} linearly, repeating
token- and piece-level pruning to reach each compression ratio, rewinds and retrains the pruned prompt (weight
rewinding "applied once"), and reports the best dev score, the best checkpoint being chosen by early stopping on
the dev set; it retrains at every ratio (its limitations: "how to find the optimal compression ratio without
training" is open). `search='retrain_every_ratio'` (the paper configs) does that: every pruned prompt is rewound
and retrained, and the best retrained one on dev (ties: the larger ratio, i.e. the smaller prompt) is XPrompt's
result. `search='pruned_dev'` is the cheaper search: the pruned, not yet retrained prompt is evaluated at every
ratio and only the `num_rewind` best ratios are rewound and retrained; `rewind_ratios` names ratios instead. With
fixed importance scores, repeated token/piece rounds reaching a ratio prune exactly what one round does
(`methods.xprompt.prune_to_ratio`).
Early stopping: every training stage keeps its best checkpoint by `select_metric` on the validation split
(evaluated every `TrainConfig.eval_period` steps) and the stage's result is that checkpoint.

Controls (one flag each, all at the selected ratio, so the table comes out of one run): Reversed (prune the
most important entries instead), Random (a random subset of the same size at each level), token-only and
piece-only pruning (the granularity ablation), each rewound and retrained like XPrompt; Length (a plain prompt
with as many tokens as XPrompt keeps, trained from scratch). The 32-shot setting trains (and scores importance) on
`num_shots` training examples drawn with `shots_seed`; XPrompt Transfer starts the prompt-tuning stage from a
finished source run's pruned prompt (values and masks; the masks stay fixed, later pruning removes a fraction of
what survives). Prompt length and initialisation: `XPrompt.length` and `XPrompt.prompt_init` of separate runs.
"""
import dataclasses
import math
import os
from typing import Any, Optional

import gin
import jax.numpy as jnp
import numpy as np

from xprompt_jax import jsonl_io
from xprompt_jax.evaluation import metric_keys
from xprompt_jax.methods.xprompt import MASKS_KEY, XPrompt, XPromptMasks, check_pieces, prune_to_ratio
from xprompt_jax.models import t5
from xprompt_jax.models.config import T5Config
from xprompt_jax.pipelines import examples as examples_lib
from xprompt_jax.pipelines import importance as importance_lib
from xprompt_jax.pipelines.xprompt_parts import (choose_ratios, kept_counts, load_masks, load_transfer, ratio_tag,
                                                 rewind, save_array, save_masks, stage_steps)
from xprompt_jax.training import checkpointing
from xprompt_jax.training import data as data_lib
from xprompt_jax.training import loop
from xprompt_jax.training import optim
from xprompt_jax.training import partitioning
from xprompt_jax.training import stages
from xprompt_jax.training import step as step_lib

from xprompt_jax.pipelines.xprompt_config import XPromptPipelineConfig


class StopPipeline(Exception):
  """Raised inside `run_xprompt` to end a run early after a stage (stop_after); not an error. A preempted stage
  raises `training.stages.Preempted` instead."""


@dataclasses.dataclass
class _Run:
  """Everything the stages share (configs, the frozen model, data, one evaluator)."""
  model_dir: str
  cfg: XPromptPipelineConfig
  config: T5Config
  method: XPrompt
  data_cfg: data_lib.DataConfig
  opt_cfg: optim.OptimizerConfig
  mesh_cfg: partitioning.MeshConfig
  train_cfg: loop.TrainConfig
  loss_cfg: step_lib.LossConfig
  eval_cfg: Any
  frozen: Any = None
  frozen_ref: Optional[dict] = None
  train_examples: Optional[dict] = None
  batches_fn: Any = None
  start_masks: Optional[XPromptMasks] = None
  start_prompt: Optional[np.ndarray] = None
  evaluators: Optional[list] = None
  inject: Any = None

  @property
  def eval_tasks(self) -> tuple[str, ...]:
    """What every stage evaluates, as `loop.train` does: `TrainConfig.eval_tasks`, else the training task's
    `registry_utils.evaluation_tasks` (MNLI on matched + mismatched, WSC simple_train on simple_eval)."""
    return loop.default_eval_tasks(self.train_cfg, self.data_cfg, self.eval_cfg)

  @property
  def metric_key(self) -> str:
    return f"{self.eval_tasks[0]}/{self.cfg.select_metric}"

  def path(self, *parts: str) -> str:
    return os.path.join(self.model_dir, *parts)

  def metric(self, metrics: dict, where: str) -> float:
    if self.metric_key not in metrics:
      raise KeyError(f"{where}: no validation metric {self.metric_key!r} (XPromptPipelineConfig.select_metric="
                     f"{self.cfg.select_metric!r}); the evaluation reports {sorted(metrics)}")
    return float(metrics[self.metric_key])

  # -- Training stages.

  def stage_train_cfg(self) -> loop.TrainConfig:
    """Early stopping: a checkpoint at every evaluation, the best one kept by the selection metric."""
    period = self.train_cfg.eval_period or self.train_cfg.num_train_steps
    return dataclasses.replace(self.train_cfg, best_metric=self.metric_key, checkpoint_period=period,
                               keep_checkpoints=1, eval_tasks=self.eval_tasks)

  def train_stage(self, subdir: str, method: XPrompt, masks: XPromptMasks,
                  initial_prompt: Optional[np.ndarray] = None, extra: Optional[dict] = None) -> dict:
    """Trains (or resumes) one stage through the stage runner and returns its record (`<subdir>/result.json`; the
    best checkpoint's prompt is in `<subdir>/prompt.npy`, the masks in `<subdir>/masks.npz`)."""
    return stages.run(self.path(subdir), lambda: self._train_stage(subdir, method, masks, initial_prompt, extra))

  def _train_stage(self, subdir, method, masks, initial_prompt, extra) -> dict:
    stage_dir = self.path(subdir)
    save_masks(os.path.join(stage_dir, "masks.npz"), masks)
    if initial_prompt is not None:
      save_array(os.path.join(stage_dir, "initial_prompt.npy"), initial_prompt)
    train_cfg = self.stage_train_cfg()
    print(f"xprompt: stage {subdir} ({train_cfg.num_train_steps} steps)")
    result = loop.train(
        stage_dir, config=self.config, method=method, data_cfg=self.data_cfg, opt_cfg=self.opt_cfg,
        mesh_cfg=self.mesh_cfg, train_cfg=train_cfg, loss_cfg=self.loss_cfg, eval_cfg=self.eval_cfg,
        aux={MASKS_KEY: masks}, batches_fn=self.batches_fn, frozen=self.frozen, frozen_ref=self.frozen_ref,
        initial_trainable=None if initial_prompt is None else {"prompt": jnp.asarray(initial_prompt)})
    stages.check_preempted(result, f"XPrompt stage {subdir}")
    best_step, prompt, best_metrics = self.best_checkpoint(stage_dir)
    save_array(os.path.join(stage_dir, "prompt.npy"), prompt)
    return {"stage": subdir, "best_step": best_step, "last_step": int(result["step"]),
            "best_metrics": best_metrics, "metric": self.metric(best_metrics, subdir),
            "last_metrics": {k: float(v) for k, v in result["eval"].items()}, "prompt_length": method.length,
            **kept_counts(masks), **(extra or {})}

  def best_checkpoint(self, stage_dir: str) -> tuple[int, np.ndarray, dict]:
    ckpt = checkpointing.TrainCheckpointer(stage_dir, read_only=True, best_metric=self.metric_key,
                                           frozen_path=self.frozen_ref["path"],
                                           frozen_fingerprint=self.frozen_ref["fingerprint"])
    try:
      step = ckpt.best_step()
      step = ckpt.latest_step() if step is None else step
      state, meta = ckpt.restore(step)
    finally:
      ckpt.close()
    return int(step), np.asarray(state["trainable"]["prompt"]), dict(meta.get("metrics") or {})

  # -- Evaluation of pruned (not retrained) prompts.

  def evaluate(self, prompt: np.ndarray, masks: XPromptMasks) -> dict[str, float]:
    from xprompt_jax.evaluation import evaluator as eval_lib
    if self.evaluators is None:
      model = t5.T5(self.config)
      self.evaluators = [eval_lib.make_evaluator(name, model, self.config, self.eval_cfg) for name in self.eval_tasks]
      method, config = self.method, self.config  # One inject object: the evaluators' jitted functions compile once.
      self.inject = lambda trainable, batch, aux: method.inject(trainable, step_lib.method_batch(batch, aux), config)
    out = {}
    for ev in self.evaluators:
      prefix = getattr(ev, "task_name", None) or getattr(ev, "mixture_name", "")
      values = ev.evaluate(self.frozen, {"prompt": jnp.asarray(prompt)}, self.inject,
                           {MASKS_KEY: masks})
      out.update({f"{prefix}/{k}": float(v) for k, v in values.items()})
    return out


@gin.configurable
def run_xprompt(model_dir: str, *, pipeline_cfg: Optional[XPromptPipelineConfig] = None,
                config: Optional[T5Config] = None, method: Optional[XPrompt] = None,
                data_cfg: Optional[data_lib.DataConfig] = None, opt_cfg: Optional[optim.OptimizerConfig] = None,
                mesh_cfg: Optional[partitioning.MeshConfig] = None, train_cfg: Optional[loop.TrainConfig] = None,
                loss_cfg: Optional[step_lib.LossConfig] = None, eval_cfg: Any = None) -> dict[str, Any]:
  """Runs (or resumes) the whole procedure in `model_dir`; returns {"rows": the results table rows, "stopped":
  the stage it stopped after or None, "preempted": whether a stage was preempted (its checkpoint saved; rerun to
  resume)}. Arguments left None come from gin (the method: `XPrompt()`)."""
  from xprompt_jax.evaluation import evaluator as eval_lib
  pipeline_cfg = pipeline_cfg or XPromptPipelineConfig()
  config = config or T5Config()
  method = method or XPrompt()
  if not isinstance(method, XPrompt):
    raise ValueError(f"run_xprompt needs an XPrompt method, got {type(method).__name__}")
  check_pieces(config.emb_dim, method.pieces)  # Bad input fails before anything is built or trained.
  data_cfg = data_cfg or data_lib.DataConfig()
  # The lengths train() evaluates with, so the sweep's pruned-prompt metrics compare with the stages' metrics.
  eval_cfg = loop.eval_lib_defaults(eval_cfg or eval_lib.EvalConfig(), data_cfg)
  run = _Run(model_dir=model_dir, cfg=pipeline_cfg, config=config, method=method, data_cfg=data_cfg,
             opt_cfg=opt_cfg or optim.OptimizerConfig(), mesh_cfg=mesh_cfg or partitioning.MeshConfig(),
             train_cfg=train_cfg or loop.TrainConfig(), loss_cfg=loss_cfg or step_lib.LossConfig(), eval_cfg=eval_cfg)
  check_select_metric(run.cfg, run.train_cfg, run.data_cfg, run.eval_cfg)
  if run.cfg.transfer_from:
    run.start_prompt, run.start_masks = load_transfer(run.cfg.transfer_from, run.method.length,
                                                      run.config.emb_dim, run.method.pieces)
  else:
    run.start_masks = run.method.ones_masks()
  os.makedirs(model_dir, exist_ok=True)
  jsonl_io.write_json_atomic(run.path("pipeline.json"),
                             {"pipeline": dataclasses.asdict(run.cfg), "gin": gin.config_str()})
  mesh = partitioning.make_mesh(run.mesh_cfg)
  run.frozen, run.frozen_ref = loop.load_frozen(run.train_cfg, run.config, mesh, run.mesh_cfg.rules)
  _prepare_data(run)
  try:
    _run_stages(run)
  except (StopPipeline, stages.Preempted) as e:
    print(f"xprompt: {e}")
    return {"rows": None, "stopped": str(e), "preempted": isinstance(e, stages.Preempted)}
  from xprompt_jax.pipelines import report as report_lib
  rows = report_lib.write_report(run)
  return {"rows": rows, "stopped": None, "preempted": False}


def check_select_metric(cfg: XPromptPipelineConfig, train_cfg: loop.TrainConfig, data_cfg: data_lib.DataConfig,
                        eval_cfg: Any) -> None:
  """Before any work: a `select_metric` the first evaluation task does not report (MultiRC's are `f1` and `exact_match`)
  raises a one-line ValueError naming the keys it reports (so does an EvalConfig.mode it cannot be evaluated in)."""
  names = loop.default_eval_tasks(train_cfg, data_cfg, eval_cfg)
  metric_keys.check_key("XPromptPipelineConfig.select_metric", cfg.select_metric, names, eval_cfg, prefix=names[0])


def _prepare_data(run: _Run) -> None:
  """Training examples for the importance pass (all, the first `importance_max_examples`, or the k-shot draw),
  the training stream for the k-shot setting, and the number of steps per stage under `num_epochs`."""
  cfg = run.cfg
  if cfg.num_shots is not None:
    examples, indices = examples_lib.draw(run.data_cfg, cfg.num_shots, cfg.shots_seed)
    examples_lib.save_shots(run.path("shots.json"), run.data_cfg, cfg.shots_seed, indices)
    run.batches_fn = examples_lib.cycling_batches_fn(examples, run.data_cfg.seed)
    run.train_examples, num_train = examples, cfg.num_shots
  else:
    if not stages.is_done(run.path("importance")):
      run.train_examples = examples_lib.load_examples(run.data_cfg, cfg.importance_max_examples)
    complete = run.train_examples is not None and cfg.importance_max_examples is None
    num_train = (examples_lib.num_rows(run.train_examples) if complete
                 else examples_lib.count_examples(run.data_cfg) if cfg.num_epochs is not None else None)
  steps = stage_steps(cfg.num_epochs, num_train, run.data_cfg.batch_size, run.train_cfg.num_train_steps)
  period = run.train_cfg.eval_period
  if cfg.evaluations_per_stage is not None:
    period = max(1, math.ceil(steps / cfg.evaluations_per_stage))
  run.train_cfg = dataclasses.replace(run.train_cfg, num_train_steps=steps, eval_period=period)


def _stop_if(run: _Run, stage: str) -> None:
  if run.cfg.stop_after == stage:
    raise StopPipeline(f"stopped after stage {stage!r} (stop_after); rerun without it to continue")


def _run_stages(run: _Run) -> None:
  cfg = run.cfg
  # 1. Prompt tuning (from the source run's pruned prompt under XPrompt Transfer).
  pt = run.train_stage("pt", run.method, run.start_masks, initial_prompt=run.start_prompt)
  pt_prompt = np.load(run.path("pt", "prompt.npy"))
  _stop_if(run, "pt")
  # 2. Importance scores at the starting masks (γ = 1 for a fresh prompt).
  importance = _importance_stage(run, pt_prompt)
  _stop_if(run, "importance")
  # 3. Pruning sweep: the pruned post-PT prompt evaluated at each ratio.
  sweep = {}
  for ratio in cfg.ratios:
    sweep[ratio] = _sweep_point(run, pt_prompt, importance, ratio)["metric"]
  if cfg.rewind_ratios:
    chosen = list(cfg.rewind_ratios)
  elif cfg.search == "retrain_every_ratio":  # The paper: every ratio rewound and retrained, the best on dev.
    chosen = choose_ratios(sweep, len(sweep))
  else:  # "pruned_dev": only the ratios whose pruned, not yet retrained prompt scored best on dev.
    chosen = choose_ratios(sweep, cfg.num_rewind)
  jsonl_io.write_json_atomic(run.path("sweep", "chosen.json"),
                             {"ratios": chosen, "pt_metric": pt["metric"], "metric_key": run.metric_key,
                              "search": cfg.search})
  _stop_if(run, "sweep")
  # 4. Rewinding and retraining with the masks fixed.
  retrained = {}
  for ratio in chosen:
    masks = load_masks(run.path("sweep", ratio_tag(ratio), "masks.npz"))
    retrained[ratio] = run.train_stage(f"rewind_{ratio_tag(ratio)}", run.method, masks,
                                       initial_prompt=rewind(pt_prompt, masks),
                                       extra={"variant": "xprompt", "ratio": ratio})["metric"]
  _stop_if(run, "rewind")
  # Controls at the selected ratio: the best retrained one on dev (ties: the smaller prompt).
  _controls(run, pt_prompt, importance, choose_ratios(retrained, 1)[0])
  _stop_if(run, "controls")


def _importance_stage(run: _Run, pt_prompt: np.ndarray) -> XPromptMasks:
  path = run.path("importance", "importance.npz")
  stages.run(run.path("importance"), lambda: _importance(run, pt_prompt, path))
  return load_masks(path)


def _importance(run: _Run, pt_prompt: np.ndarray, path: str) -> dict:
  examples = run.train_examples
  if run.cfg.importance_max_examples is not None:  # The k-shot draw is loaded whole.
    n = min(run.cfg.importance_max_examples, examples_lib.num_rows(examples))
    examples = examples_lib.take(examples, np.arange(n))
  print(f"xprompt: stage importance ({examples_lib.num_rows(examples)} training examples)")
  scores, count = importance_lib.importance_scores(
      examples_lib.epoch_batches(examples, run.data_cfg.batch_size), model=t5.T5(run.config), method=run.method,
      config=run.config, loss_cfg=run.loss_cfg, frozen=run.frozen, prompt=jnp.asarray(pt_prompt),
      masks=run.start_masks)
  save_masks(path, scores)
  return {"num_examples": count}


def _sweep_point(run: _Run, pt_prompt: np.ndarray, importance: XPromptMasks, ratio: float, *,
                 granularity: Optional[str] = None, policy: str = "lowest", subdir: Optional[str] = None) -> dict:
  """Masks at `ratio` and the validation metrics of the pruned (not retrained) post-PT prompt."""
  subdir = subdir or os.path.join("sweep", ratio_tag(ratio))
  return stages.run(run.path(subdir), lambda: _prune_and_evaluate(run, pt_prompt, importance, ratio, granularity,
                                                                  policy, subdir))


def _prune_and_evaluate(run: _Run, pt_prompt, importance, ratio, granularity, policy, subdir) -> dict:
  masks = prune_to_ratio(run.start_masks, importance, ratio, granularity=granularity or run.cfg.granularity,
                         token_share=run.cfg.token_share, policy=policy, seed=run.cfg.control_seed)
  save_masks(run.path(subdir, "masks.npz"), masks)
  metrics = run.evaluate(pt_prompt, masks)
  summary = {"ratio": ratio, "policy": policy, "granularity": granularity or run.cfg.granularity,
             "metrics": metrics, "metric": run.metric(metrics, subdir), **kept_counts(masks)}
  print(f"xprompt: pruned at {ratio:.0%} ({summary['kept_tokens']} tokens, {summary['kept_pieces']} pieces): "
        f"{run.metric_key}={summary['metric']:.4g}")
  return summary


CONTROL_VARIANTS = {  # flag: (variant name, granularity or None = the run's, policy)
    "reversed_control": ("reversed", None, "highest"),
    "random_control": ("random", None, "random"),
    "token_only": ("token_only", "token", "lowest"),
    "piece_only": ("piece_only", "piece", "lowest"),
}


def _controls(run: _Run, pt_prompt: np.ndarray, importance: XPromptMasks, ratio: float) -> None:
  tag = ratio_tag(ratio)
  for flag, (variant, granularity, policy) in CONTROL_VARIANTS.items():
    if not getattr(run.cfg, flag):
      continue
    subdir = os.path.join("controls", f"{variant}_{tag}")
    pruned_dir = os.path.join(subdir, "pruned")  # Its own stage: the pruned, not retrained, prompt's evaluation.
    pruned = _sweep_point(run, pt_prompt, importance, ratio, granularity=granularity, policy=policy,
                          subdir=pruned_dir)
    masks = load_masks(run.path(pruned_dir, "masks.npz"))
    run.train_stage(subdir, run.method, masks, initial_prompt=rewind(pt_prompt, masks),
                    extra={"variant": variant, "ratio": ratio, "pruned_metric": pruned["metric"]})
  if run.cfg.length_control:
    xprompt_masks = load_masks(run.path("sweep", tag, "masks.npz"))
    length = kept_counts(xprompt_masks)["kept_tokens"]
    method = dataclasses.replace(run.method, length=length)
    run.train_stage(os.path.join("controls", f"length_n{length}"), method, method.ones_masks(),
                    extra={"variant": "length", "ratio": ratio})
