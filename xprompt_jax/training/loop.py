"""The training loop around the pure step: data, frozen model, sharding, checkpoints, evaluation, logging.

    xprompt-jax train --gin_file=runs/smoke_cpu.gin --model_dir=/tmp/xprompt_smoke

Everything here is plumbing; the maths is in `step.py` (loss and update) and the methods. The loop resumes from
the latest checkpoint in `model_dir` (state, optimizer, rng and input position), saves on SIGTERM at the next
step boundary, and stops (or skips, by configuration) on a non-finite loss or gradient, naming the step and the
offending examples.
"""
import dataclasses
import functools
import hashlib
import os
import time
from typing import Any, Callable, Mapping, Optional

from absl import logging
import gin
import jax
import jax.numpy as jnp
import numpy as np

from xprompt_jax import checkpoints as frozen_io
from xprompt_jax.methods import MPT, check_task_ids, get_method
from xprompt_jax.methods.base import Method
from xprompt_jax.models import t5
from xprompt_jax.models.config import T5Config
from xprompt_jax.training import data as data_lib
from xprompt_jax.training import metrics_log
from xprompt_jax.training import optim
from xprompt_jax.training import partitioning
from xprompt_jax.training import preemption as preemption_lib
from xprompt_jax.training import step as step_lib


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The loop's settings (T5X names where T5X has them)."""
  num_train_steps: int = 30_000
  log_period: int = 50
  eval_period: int = 1_000  # 0: evaluate only at the end.
  checkpoint_period: int = 1_000
  keep_checkpoints: int = 3
  best_metric: Optional[str] = None  # e.g. "super_glue_rte_v102/accuracy": also keep the best checkpoint.
  initial_checkpoint: Optional[str] = None  # The frozen T5 (HF/T5X/Orbax). None: random weights (tests only).
  encoder_length: Optional[int] = None  # Prompt + inputs must fit; None: no limit beyond the feature length.
  seed: int = 42
  nonfinite: str = "stop"  # "stop" | "skip": a step whose loss, gradients or updated parameters are not finite.
  # An update that takes the trainable parameters' global norm past this counts as non-finite (a diverging run:
  # at learning rate 1e30 the prompt reaches ~1e30 while T5's RMS norm keeps the loss finite). None: no limit.
  max_trainable_norm: Optional[float] = 1e6
  async_checkpointing: bool = True
  eval_tasks: Optional[tuple[str, ...]] = None  # Default: the training task's evaluation tasks (default_eval_tasks).
  progress_bar: bool = True

  def __post_init__(self):
    for name in ("num_train_steps", "log_period", "eval_period", "checkpoint_period", "seed"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"TrainConfig.{name}={value!r} must be an int, got a {type(value).__name__}")
    for name in ("log_period", "checkpoint_period"):
      if getattr(self, name) <= 0:
        raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r} must be > 0 (a step count)")
    keep = self.keep_checkpoints
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep <= 0):
      raise ValueError(f"TrainConfig.keep_checkpoints={keep!r} must be None (keep all) or an int > 0")
    if self.eval_period < 0:
      raise ValueError(f"TrainConfig.eval_period={self.eval_period!r} must be >= 0 (0: evaluate at the end only)")
    limit = self.max_trainable_norm
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float)) or not limit > 0):
      raise ValueError(f"TrainConfig.max_trainable_norm={limit!r} must be None or a number > 0")
    if self.nonfinite not in ("stop", "skip"):
      raise ValueError(f"TrainConfig.nonfinite={self.nonfinite!r} must be 'stop' or 'skip'")
    if self.num_train_steps < 0:
      raise ValueError(f"TrainConfig.num_train_steps={self.num_train_steps} must be >= 0")
    if self.best_metric:  # Lazily: the metric fns' libraries (sklearn, sacrebleu, ...) are slow to import.
      from xprompt_jax.evaluation import metrics as metrics_lib
      object.__setattr__(self, "best_metric", metrics_lib.t5_key(self.best_metric, "TrainConfig.best_metric"))


class NonFiniteError(FloatingPointError):
  """A non-finite loss or gradient with `TrainConfig.nonfinite='stop'`."""


def format_metrics(metrics: Mapping[str, float]) -> str:
  """`name=value` pairs sorted by name, as every "eval step ..." line prints them."""
  return "  ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))


def _input_meta(data_cfg: data_lib.DataConfig) -> dict:
  """What a checkpoint's input position counts in: the task and the batch size (checked on resume)."""
  return {"task": data_cfg.mixture_or_task_name, "batch_size": int(data_cfg.batch_size)}


def _check_same_input(meta: Mapping[str, Any], data_cfg: data_lib.DataConfig, where: str) -> None:
  """A resume on another task or batch size would continue a stream it did not start (its saved input position
  counts other batches): a one-line error instead."""
  for key, value in _input_meta(data_cfg).items():
    if key in meta and meta[key] != value:
      raise ValueError(f"{where} was trained with {key} {meta[key]!r}; this run binds {value!r}: resume with the same "
                       "task and DataConfig.batch_size, or train in another --model_dir")


def load_frozen(train_cfg: TrainConfig, config: T5Config, mesh, rules: str):
  """The frozen T5 placed by the logical-axis rules, and a reference to it (path + fingerprint) for checkpoints."""
  shardings = partitioning.logical_to_sharding(t5.param_logical_axes(config), mesh, rules,
                                               shapes=t5.abstract_params(config))
  if train_cfg.initial_checkpoint is None:
    logging.warning("TrainConfig.initial_checkpoint is None: the frozen model has RANDOM weights (seed %d) - "
                    "fine for smoke tests, meaningless for results", train_cfg.seed)
    init = jax.jit(lambda: t5.init_params(config, jax.random.PRNGKey(train_cfg.seed)), out_shardings=shardings)
    # A random backbone is identified by its architecture and seed (a resumed run must re-create the same one).
    identity = f"random-init:seed={train_cfg.seed}:{config!r}"
    fingerprint = "sha256:" + hashlib.sha256(identity.encode()).hexdigest()
    return init(), {"path": f"random-init:seed={train_cfg.seed}:{config.name}", "fingerprint": fingerprint}
  from xprompt_jax.training import checkpointing
  params, _ = frozen_io.load_params(train_cfg.initial_checkpoint, config, shardings)
  fingerprint = checkpointing.fingerprint_checkpoint(train_cfg.initial_checkpoint)
  return params, {"path": train_cfg.initial_checkpoint, "fingerprint": fingerprint}


def eval_lib_defaults(eval_cfg, data_cfg: data_lib.DataConfig):
  """Evaluation lengths default to the training feature lengths; `EvalConfig.inputs_length`/`targets_length`
  set explicitly win."""
  return dataclasses.replace(
      eval_cfg, inputs_length=eval_cfg.inputs_length or data_cfg.inputs_length,
      targets_length=eval_cfg.targets_length or data_cfg.targets_length)


def default_eval_tasks(train_cfg: TrainConfig, data_cfg: data_lib.DataConfig, eval_cfg) -> tuple[str, ...]:
  """What a run evaluates: `TrainConfig.eval_tasks`, else the training task's evaluation tasks for the eval split
  (`registry_utils.evaluation_tasks`: MNLI on matched + mismatched, WSC simple_train on simple_eval; a mixture on
  each of its tasks that has the split)."""
  from xprompt_jax.tasks import registry_utils as ru  # Lazily, as data.py: it registers every task.
  return tuple(train_cfg.eval_tasks or ru.evaluation_tasks(data_cfg.mixture_or_task_name, eval_cfg.split))


def _host(tree):
  return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


def _nonfinite_examples(metrics, position: int, batch_size: int) -> list[int]:
  losses = np.asarray(jax.device_get(metrics["example_loss"]))
  return [int(position * batch_size + i) for i in np.flatnonzero(~np.isfinite(losses))]


@gin.configurable(denylist=["model_dir"])
def train(model_dir: str, *, config: Optional[T5Config] = None, method: Optional[Method] = None,
          data_cfg: Optional[data_lib.DataConfig] = None, opt_cfg: Optional[optim.OptimizerConfig] = None,
          mesh_cfg: Optional[partitioning.MeshConfig] = None, train_cfg: Optional[TrainConfig] = None,
          loss_cfg: Optional[step_lib.LossConfig] = None, eval_cfg: Any = None, aux: Optional[dict] = None,
          initial_trainable: Optional[dict] = None, loss_fn: Optional[Callable] = None,
          batches_fn: Optional[Callable] = None, frozen: Any = None, frozen_ref: Optional[dict] = None,
          eval_task_ids: Optional[dict] = None) -> dict[str, Any]:
  """Trains `method` on the frozen T5 and returns `{"step", "train": last metrics, "eval": last eval metrics}`.

  Every argument left None is built from gin bindings (`T5Config()`, `get_method()`, `DataConfig()`, ...).
  `aux` are non-trained method inputs kept in the state (XPrompt masks); `initial_trainable` replaces the
  method's own initialisation (XPrompt rewinding, MPT target adaptation). Pipelines may also pass:
  `loss_fn(trainable, frozen, batch, aux, rng) -> (loss, metrics)` replacing the token loss (MPT distillation;
  metrics must include "loss", "z_loss", "accuracy" and "example_loss" [B]); `batches_fn(data_cfg, position)`
  replacing the SeqIO input stream (MPT task sampling; it must be deterministic in `position`); `frozen` and
  `frozen_ref` ({"path", "fingerprint"}) to reuse an already loaded frozen model across stages; and
  `eval_task_ids` ({task name: id}) so evaluation batches carry MPT's `task_id`.
  """
  config = config or T5Config()
  method = method or get_method()
  data_cfg = data_cfg or data_lib.DataConfig()
  opt_cfg = opt_cfg or optim.OptimizerConfig()
  mesh_cfg = mesh_cfg or partitioning.MeshConfig()
  train_cfg = train_cfg or TrainConfig()
  loss_cfg = loss_cfg or step_lib.LossConfig()
  from xprompt_jax.evaluation import evaluator as eval_lib
  from xprompt_jax.evaluation import inference_log
  eval_cfg = eval_lib_defaults(eval_cfg or eval_lib.EvalConfig(), data_cfg)

  if train_cfg.encoder_length is not None:
    method.check_lengths(train_cfg.encoder_length, data_cfg.inputs_length)
  data_lib.check_vocabulary(data_cfg, config.vocab_size)
  mesh = partitioning.make_mesh(mesh_cfg)
  if data_cfg.batch_size % mesh.shape["data"]:  # Fail before anything is loaded or written.
    raise ValueError(f"DataConfig.batch_size={data_cfg.batch_size} is not divisible by the 'data' mesh axis size "
                     f"{mesh.shape['data']} (MeshConfig.data={mesh_cfg.data}, {jax.device_count()} devices)")
  if not model_dir.startswith("gs://"):
    os.makedirs(model_dir, exist_ok=True)
  model = t5.T5(config)
  is_main = jax.process_index() == 0
  if is_main:
    print(f"data: {data_lib.describe(data_cfg)}")
  if frozen is None:
    frozen, frozen_ref = load_frozen(train_cfg, config, mesh, mesh_cfg.rules)
  elif frozen_ref is None:
    raise ValueError("train(frozen=...) needs frozen_ref={'path': ..., 'fingerprint': ...} to record the base model")

  labels = method.param_labels(method.abstract_trainable(config, frozen))
  label_lrs = dict(opt_cfg.label_learning_rates) if opt_cfg.label_learning_rates else None
  optimizer = optim.make_optimizer(opt_cfg, labels if label_lrs else None, label_lrs)
  lr_fn = optim.learning_rate_fn(opt_cfg)

  def fresh_state():
    state = step_lib.init_state(method, frozen, config, optimizer, jax.random.PRNGKey(train_cfg.seed), aux)
    if initial_trainable is not None:
      state["trainable"] = jax.tree.map(jnp.asarray, initial_trainable)
      state["opt_state"] = optimizer.init(state["trainable"])
    return state

  replicated = partitioning.replicated(mesh)
  state_shardings = jax.tree.map(lambda _: replicated, jax.eval_shape(fresh_state))

  from xprompt_jax.training import checkpointing
  ckpt = checkpointing.TrainCheckpointer(
      model_dir, keep=train_cfg.keep_checkpoints, best_metric=train_cfg.best_metric,
      async_save=train_cfg.async_checkpointing, frozen_path=frozen_ref["path"],
      frozen_fingerprint=frozen_ref["fingerprint"])
  try:  # Until the training loop owns it (its finally closes it), release the model_dir lock on any error.
    latest = ckpt.latest_step()
    if latest is not None:
      earlier = [s for s in ckpt.all_steps() if s < latest]
      hint = f"move {ckpt.checkpoint_dir(latest)} aside to " + (
          f"resume from step {earlier[-1]}" if earlier else "start again from step 0")
      state, meta = ckpt.restore(latest, abstract_state=jax.eval_shape(fresh_state), shardings=state_shardings,
                                 unreadable_hint=hint)
      position = int(meta["data_position"])
      _check_same_input(meta, data_cfg, f"checkpoint {latest} in {model_dir}")
      if is_main:
        print(f"resumed from step {latest} of {model_dir} (input position {position})")
    else:
      state = jax.jit(fresh_state, out_shardings=state_shardings)()
      position = 0

    n_trainable = method.num_params(state["trainable"])
    if is_main:
      print(f"method: {method.name}  trainable parameters: {n_trainable:,}  frozen parameters: "
            f"{config.num_params():,}  frozen model: {frozen_ref['path']}")

    train_step = jax.jit(step_lib.make_train_step(model, method, config, optimizer, loss_cfg, loss_fn=loss_fn,
                                                  skip_nonfinite=train_cfg.nonfinite == "skip",
                                                  max_trainable_norm=train_cfg.max_trainable_norm),
                         donate_argnums=(0,), out_shardings=(state_shardings, None))
    eval_tasks = default_eval_tasks(train_cfg, data_cfg, eval_cfg)
    evaluators = [eval_lib.make_evaluator(name, model, config, eval_cfg, task_ids=eval_task_ids)
                  for name in eval_tasks]

    def inject(trainable, batch, aux_state):
      return method.inject(trainable, step_lib.method_batch(batch, aux_state), config)

    def evaluate(step: int) -> dict[str, float]:
      results = {}
      rows = eval_cfg.log_inferences
      on_records = (functools.partial(inference_log.write, model_dir, step,
                                      max_rows=None if rows is True else int(rows))
                    if is_main and model_dir and rows else None)
      for ev in evaluators:
        prefix = getattr(ev, "task_name", None) or getattr(ev, "mixture_name", "")
        for k, v in ev.evaluate(frozen, state["trainable"], inject, state["aux"], on_records).items():
          results[f"{prefix}/{k}"] = v
      log.write(step, "eval", results)
      if is_main:
        print(f"eval step {step}: {format_metrics(results)}")
      return results

    log = metrics_log.MetricsLog(model_dir, resume_step=latest or 0)
    step = int(jax.device_get(state["step"]))
    stream = (batches_fn or data_lib.batches)(data_cfg, position)
    last_train, last_eval = {}, {}
    from tqdm import tqdm
    bar = tqdm(total=train_cfg.num_train_steps, initial=step, desc="train", unit="step",
               disable=not (is_main and train_cfg.progress_bar))
    window_start, window_steps, sums = time.time(), 0, {}
    trained_to_end = False
  except BaseException:
    ckpt.close()
    raise
  try:
    with preemption_lib.Preemption() as preemption:
      while step < train_cfg.num_train_steps:
        try:
          batch = next(stream)
        except StopIteration as e:
          raise ValueError(f"{data_cfg.mixture_or_task_name}[{data_cfg.split}] yielded no full batch of "
                           f"{data_cfg.batch_size} examples (empty or too small split)") from e
        if isinstance(method, MPT):  # Inside jit a bad id only shows as NaN: name it on the host first.
          check_task_ids(batch, method.num_tasks)
        state, metrics = train_step(state, partitioning.shard_batch(batch, mesh), frozen)
        if not bool(metrics["finite"]):
          bad = _nonfinite_examples(metrics, position, data_cfg.batch_size)
          if bool(metrics["params_finite"]) or bad:
            message = (f"non-finite loss or gradient at step {step + 1} (input batch {position}, example indices "
                       f"{bad or 'unknown: the loss is finite, a gradient is not'})")
          else:
            message = (f"the update of step {step + 1} diverged: the trainable parameters' norm became "
                       f"{float(metrics['update_norm']):.3g} (non-finite or above TrainConfig.max_trainable_norm="
                       f"{train_cfg.max_trainable_norm}); lower OptimizerConfig.learning_rate")
          if train_cfg.nonfinite == "stop":
            raise NonFiniteError(message + "; nothing was saved for this step (TrainConfig.nonfinite='skip' "
                                 "skips such steps instead)")
          logging.warning("%s: step skipped", message)
        step += 1
        position += 1
        window_steps += 1
        for k, v in metrics.items():  # Every scalar the step reports (MPT adds its distillation terms).
          if k not in ("finite", "params_finite") and getattr(v, "ndim", 1) == 0:
            sums[k] = sums.get(k, 0.0) + float(v)
        bar.update(1)
        if step % train_cfg.log_period == 0 or step == train_cfg.num_train_steps:
          elapsed = time.time() - window_start
          last_train = {k: v / window_steps for k, v in sums.items()}
          last_train.update(steps_per_second=window_steps / max(elapsed, 1e-9), learning_rate=float(lr_fn(step)))
          bar.set_postfix(loss=f"{last_train['loss']:.4f}", steps_per_s=f"{last_train['steps_per_second']:.2f}")
          log.write(step, "train", last_train)
          window_start, window_steps, sums = time.time(), 0, {}
        final = step == train_cfg.num_train_steps
        if final or train_cfg.eval_period and step % train_cfg.eval_period == 0:
          last_eval = evaluate(step)  # The last step's evaluation comes before its (only) save.
        preempted = preemption.check(step)
        if preempted or final or step % train_cfg.checkpoint_period == 0:
          ckpt.save(step, state, data_position=position, metrics=last_eval or None,
                    extra_meta={"method": method.name, "gin": gin.config_str(), **_input_meta(data_cfg)})
        if preempted and not final:  # At the last step the run is complete: it ends as usual.
          ckpt.wait()
          if is_main:
            why = "interrupted (Ctrl-C)" if preemption.interrupted else "preempted"
            print(f"{why}: saved step {step} to {model_dir}; rerun the same command to resume")
          return {"step": step, "train": last_train, "eval": last_eval, "preempted": True,
                  "interrupted": preemption.interrupted}
        trained_to_end = final
      if not trained_to_end:  # Resumed at the end (nothing trained in this call): report, save nothing.
        last_eval = evaluate(step)
    bar.close()
    ckpt.wait()
  finally:
    bar.close()
    ckpt.close()
    log.close()
  return {"step": step, "train": last_train, "eval": last_eval, "state": state, "frozen_ref": frozen_ref}
