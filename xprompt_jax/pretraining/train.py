"""Full-parameter T5 pretraining (span corruption, then LM adaptation) with T5's optimizer recipe.

    xprompt-jax pretrain --gin_file=pretrain/span_corruption_small.gin --model_dir=/tmp/t5_small_sc
    xprompt-jax pretrain --gin_file=pretrain/lm_adaptation_small.gin --model_dir=/tmp/t5_small_lm \
      --gin.PretrainConfig.initial_checkpoint="'/tmp/t5_small_sc'"

Unlike `training.loop` (a method on a frozen T5), every T5 parameter is trained: the state is
`{"step", "trainable": all T5 params, "opt_state", "rng"}`, saved by the same Orbax `TrainCheckpointer` (so a rerun
resumes), and the step is one pure jitted function. The optimizer is T5's pretraining Adafactor (`optax.adafactor`:
factored second moments, decay rate 0.8, update clipping 1.0, updates scaled by the parameter RMS, no momentum)
with T5's inverse-square-root schedule `lr(s) = learning_rate * sqrt(warmup / max(s + offset, warmup))` - with
learning_rate 1e-2 and warmup 10k that is T5's `1 / sqrt(max(step, 10^4))`; small runs scale the warmup down.

At the end the params are exported in T5X layout (`<model_dir>/export/checkpoint_<step>`), so every other command
loads the backbone like a public T5 (`TrainConfig.initial_checkpoint`), and `<model_dir>/pretrain_report.json`
(kept per export as `<model_dir>/reports/pretrain_report_<step>.json`, since a resumed run exports again) records
the held-out validation cross entropy next to the unigram baseline: the cross entropy, on the same validation
targets, of the add-one-smoothed unigram distribution of the training targets.
"""
import dataclasses
import hashlib
import json
import os
import time
from typing import Any, Callable, Iterator, Mapping, Optional

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax

from xprompt_jax import checkpoints as ckpt_io
from xprompt_jax.checkpoints import t5x as t5x_io
from xprompt_jax.models import t5
from xprompt_jax.models.config import T5Config
from xprompt_jax.pretraining import tasks as _tasks  # noqa: F401  (registers the pretraining tasks)
from xprompt_jax.training import data as data_lib
from xprompt_jax.training import loop
from xprompt_jax.training import metrics_log
from xprompt_jax.training import partitioning
from xprompt_jax.training import step as step_lib

EXPORT_SUBDIR = "export"
REPORT_NAME = "pretrain_report.json"
REPORTS_SUBDIR = "reports"


@gin.configurable
@dataclasses.dataclass(frozen=True)
class PretrainConfig:
  """Pretraining settings; defaults are T5's (2^19 steps, lr 1e-2 = 1/sqrt(10^4) for 10k steps, then rsqrt)."""
  num_train_steps: int = 524_288
  learning_rate: float = 1e-2
  warmup_steps: int = 10_000
  schedule_offset: int = 0  # Steps already taken by the run this one continues (LM adaptation: T5's 1M).
  decay_rate: float = 0.8
  clipping_threshold: float = 1.0
  z_loss: float = 1e-4
  initial_checkpoint: Optional[str] = None  # None: random init. A checkpoint, or a pretraining model_dir.
  log_period: int = 100
  eval_period: int = 1_000  # 0: evaluate only at the end.
  eval_batches: int = 20  # Validation batches (held-out training text) for the validation loss.
  unigram_batches: int = 100  # Training batches whose targets give the unigram baseline's distribution.
  checkpoint_period: int = 1_000
  keep_checkpoints: int = 2
  export_steps: tuple[int, ...] = ()  # Steps before the last at which a T5X export is also written (LM-adaptation
  # sweeps load each one as a backbone).
  seed: int = 0
  progress_bar: bool = True

  def __post_init__(self):
    for name in ("num_train_steps", "warmup_steps", "schedule_offset", "log_period", "eval_period",
                 "eval_batches", "unigram_batches", "checkpoint_period", "keep_checkpoints", "seed"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"PretrainConfig.{name}={value!r} must be an int >= 0")
    for name in ("log_period", "checkpoint_period", "eval_batches", "keep_checkpoints"):
      if getattr(self, name) == 0:
        raise ValueError(f"PretrainConfig.{name} must be > 0")
    steps = self.export_steps
    if not isinstance(steps, (tuple, list)) or any(not isinstance(x, int) or isinstance(x, bool) or
                                                   not 0 < x < self.num_train_steps for x in steps):
      raise ValueError(f"PretrainConfig.export_steps={steps!r} must be steps between 1 and num_train_steps - 1 "
                       f"({self.num_train_steps - 1})")
    if not self.learning_rate > 0:
      raise ValueError(f"PretrainConfig.learning_rate must be > 0, got {self.learning_rate}")


def rsqrt_schedule(learning_rate: float, warmup_steps: int, offset: int = 0) -> optax.Schedule:
  """T5's schedule: constant `learning_rate` for `warmup_steps`, then `learning_rate * sqrt(warmup / step)`."""
  warmup = max(int(warmup_steps), 1)

  def schedule(count):
    step = jnp.asarray(count, jnp.float32) + offset
    return learning_rate * jnp.sqrt(warmup / jnp.maximum(step, warmup))

  return schedule


def make_optimizer(cfg: PretrainConfig) -> optax.GradientTransformation:
  """T5's pretraining Adafactor (optax.adafactor with the T5/T5X defaults) on the rsqrt schedule."""
  return optax.adafactor(rsqrt_schedule(cfg.learning_rate, cfg.warmup_steps, cfg.schedule_offset),
                         decay_rate=cfg.decay_rate, clipping_threshold=cfg.clipping_threshold,
                         multiply_by_parameter_scale=True, momentum=None, factored=True)


def _logits(model: t5.T5, params, batch: dict, rng=None):
  dropout = rng is not None and model.config.dropout_rate > 0
  return model.apply({"params": params}, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
                     encoder_segment_ids=batch.get("encoder_segment_ids"),
                     decoder_segment_ids=batch.get("decoder_segment_ids"), enable_dropout=dropout,
                     rngs={"dropout": rng} if dropout else None)


def make_train_step(model: t5.T5, optimizer: optax.GradientTransformation, loss_cfg: step_lib.LossConfig):
  """`train_step(state, batch) -> (state, metrics)`: one update of every T5 parameter (pure; jit it)."""

  def loss_fn(params, batch, rng):
    return step_lib.token_loss(_logits(model, params, batch, rng), batch, loss_cfg)

  def train_step(state, batch):
    rng, step_rng = jax.random.split(state["rng"])
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["trainable"], batch, step_rng)
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["trainable"])
    params = optax.apply_updates(state["trainable"], updates)
    metrics = {k: metrics[k] for k in ("loss", "z_loss", "accuracy")}
    metrics["grad_norm"] = optax.global_norm(grads)
    return {"step": state["step"] + 1, "trainable": params, "opt_state": opt_state, "rng": rng}, metrics

  return train_step


def make_eval_step(model: t5.T5):
  """`eval_step(params, batch) -> (summed cross entropy, number of target tokens)` (no z-loss, no dropout)."""
  loss_cfg = step_lib.LossConfig(z_loss=0.0, loss_normalizing_factor=None)

  def eval_step(params, batch):
    metrics = step_lib.token_loss(_logits(model, params, batch), batch, loss_cfg)[1]
    return jnp.sum(metrics["example_loss"]), metrics["num_target_tokens"]

  return eval_step


def validation_loss(eval_step, params, batches: list[dict]) -> float:
  """Per-target-token cross entropy (nats) of `params` over `batches`."""
  total, tokens = 0.0, 0.0
  for batch in batches:
    loss, n = eval_step(params, batch)
    total, tokens = total + float(loss), tokens + float(n)
  return total / max(tokens, 1.0)


def target_tokens(batches) -> np.ndarray:
  """The real (weighted) target token ids of `batches`, flattened."""
  ids = [b["decoder_target_tokens"][b["decoder_loss_weights"] > 0] for b in batches]
  return np.concatenate(ids) if ids else np.zeros([0], np.int64)


def unigram_cross_entropy(train_ids: np.ndarray, eval_ids: np.ndarray, vocab_size: int) -> float:
  """Cross entropy (nats/token) on `eval_ids` of the add-one-smoothed unigram distribution of `train_ids`."""
  if len(eval_ids) == 0:
    raise ValueError("unigram_cross_entropy: no evaluation tokens")
  if np.max(train_ids, initial=0) >= vocab_size or np.max(eval_ids) >= vocab_size:
    raise ValueError(f"token ids must be < vocab_size={vocab_size}")
  counts = np.bincount(train_ids, minlength=vocab_size).astype(np.float64) + 1.0
  log_p = np.log(counts) - np.log(counts.sum())
  return float(-np.mean(log_p[eval_ids]))


def resolve_initial_checkpoint(path: str) -> str:
  """A checkpoint path, or a pretraining model_dir (its latest T5X export)."""
  export = os.path.join(path, EXPORT_SUBDIR)
  if os.path.isdir(export):
    steps = sorted((int(n.split("_")[-1]), n) for n in os.listdir(export) if n.startswith("checkpoint_"))
    if not steps:
      raise FileNotFoundError(f"{export} holds no checkpoint_<step> export (did the pretraining run finish?)")
    return os.path.join(export, steps[-1][1])
  return path


def export_path(model_dir: str, step: int) -> str:
  return os.path.join(model_dir, EXPORT_SUBDIR, f"checkpoint_{step}")


def model_dir_of_export(export: str) -> str:
  """The pretraining model_dir an `export_path` lies in (absolute)."""
  return os.path.dirname(os.path.dirname(os.path.abspath(export)))


def report_path(model_dir: str, step: int) -> str:
  """Where the report of the export at `step` is kept (`<model_dir>/pretrain_report.json` is the latest one's)."""
  return os.path.join(model_dir, REPORTS_SUBDIR, f"pretrain_report_{step}.json")


def read_report(export: str) -> Optional[dict]:
  """The pretraining report of the export at `export` (`<model_dir>/export/checkpoint_<step>`), or None when it was
  not made by `pretrain`. A run resumed to more steps exports again, so the latest report may describe a later
  export: it is only used when it names this one."""
  export = os.path.abspath(export)
  model_dir = model_dir_of_export(export)
  name = os.path.basename(export)
  if name.startswith("checkpoint_") and name[len("checkpoint_"):].isdigit():
    kept = report_path(model_dir, int(name[len("checkpoint_"):]))
    if os.path.exists(kept):
      with open(kept, encoding="utf-8") as f:
        return json.load(f)
  latest = os.path.join(model_dir, REPORT_NAME)
  if os.path.exists(latest):
    with open(latest, encoding="utf-8") as f:
      report = json.load(f)
    if os.path.abspath(report.get("export", "")) == export:
      return report
  return None


def initial_params(checkpoint: Optional[str], config: T5Config, seed: int, mesh, rules) -> tuple[Any, dict]:
  """(params placed by the logical-axis rules, {"path", "fingerprint"} of the start): the checkpoint, or a
  seeded random initialisation (pretraining from scratch) identified by its seed and architecture."""
  if checkpoint is not None:
    return loop.load_frozen(loop.TrainConfig(initial_checkpoint=checkpoint, seed=seed), config, mesh, rules)
  shardings = partitioning.logical_to_sharding(t5.param_logical_axes(config), mesh, rules,
                                               shapes=t5.abstract_params(config))
  params = jax.jit(lambda: t5.init_params(config, jax.random.PRNGKey(seed)), out_shardings=shardings)()
  identity = f"random-init:seed={seed}:{config!r}"
  return params, {"path": f"random-init:seed={seed}:{config.name}",
                  "fingerprint": "sha256:" + hashlib.sha256(identity.encode()).hexdigest()}


@gin.configurable(denylist=["model_dir"])
def pretrain(model_dir: str, *, config: Optional[T5Config] = None, data_cfg: Optional[data_lib.DataConfig] = None,
             cfg: Optional[PretrainConfig] = None, mesh_cfg: Optional[partitioning.MeshConfig] = None,
             evaluate: Optional[Callable[[Any], Mapping[str, float]]] = None,
             batches_fn: Optional[Callable[[data_lib.DataConfig, int], Iterator[dict]]] = None) -> dict[str, Any]:
  """Trains every parameter of a T5 on `data_cfg`'s task, exports it as T5X and returns the report dict.

  `evaluate(params) -> {name: value}` adds metrics to every evaluation row of `metrics.jsonl` beside the
  validation loss (model tuning logs its task's official metrics this way); the last ones are the report's
  "eval_metrics". `batches_fn(data_cfg, position)` replaces the training stream as in `training.loop.train` (model
  tuning on k shots); the validation loss still reads `data_cfg`'s task."""
  config = config or T5Config()
  data_cfg = data_cfg or data_lib.DataConfig()
  cfg = cfg or PretrainConfig()
  mesh_cfg = mesh_cfg or partitioning.MeshConfig()
  data_lib.check_vocabulary(data_cfg, config.vocab_size)
  mesh = partitioning.make_mesh(mesh_cfg)
  if data_cfg.batch_size % mesh.shape["data"]:
    raise ValueError(f"DataConfig.batch_size={data_cfg.batch_size} is not divisible by the 'data' mesh axis size "
                     f"{mesh.shape['data']} (MeshConfig.data={mesh_cfg.data}, {jax.device_count()} devices)")
  os.makedirs(model_dir, exist_ok=True)
  is_main = jax.process_index() == 0
  initial = resolve_initial_checkpoint(cfg.initial_checkpoint) if cfg.initial_checkpoint else None
  params, start_ref = initial_params(initial, config, cfg.seed, mesh, mesh_cfg.rules)
  model = t5.T5(config)
  optimizer = make_optimizer(cfg)

  def fresh_state(p):
    return {"step": jnp.zeros((), jnp.int32), "trainable": p, "opt_state": optimizer.init(p),
            "rng": jax.random.PRNGKey(cfg.seed + 1)}

  from xprompt_jax.training import checkpointing
  ckpt = checkpointing.TrainCheckpointer(model_dir, keep=cfg.keep_checkpoints, async_save=False,
                                         frozen_path=start_ref["path"], frozen_fingerprint=start_ref["fingerprint"])
  state = jax.jit(fresh_state)(params)
  del params
  position = 0
  latest = ckpt.latest_step()
  if latest is not None:
    state, meta = ckpt.restore(latest, abstract_state=jax.eval_shape(lambda: state))
    position = int(meta["data_position"])
  if is_main:
    print(f"data: {data_lib.describe(data_cfg)}")
    print(f"pretrain: {config.name}  parameters: {config.num_params():,}  start: {start_ref['path']}"
          + (f"  resumed from step {latest}" if latest is not None else ""))

  eval_cfg = dataclasses.replace(data_cfg, split="validation", shuffle=False)
  eval_batches = list(data_lib.dataset(eval_cfg, num_epochs=1).take(cfg.eval_batches).as_numpy_iterator())
  if not eval_batches:
    raise ValueError(f"{data_cfg.mixture_or_task_name}[validation] yielded no batch of {data_cfg.batch_size}")
  eval_step = jax.jit(make_eval_step(model))
  train_step = jax.jit(make_train_step(model, optimizer, step_lib.LossConfig(z_loss=cfg.z_loss)),
                       donate_argnums=(0,))
  log = metrics_log.MetricsLog(model_dir, resume_step=latest or 0)
  step = int(jax.device_get(state["step"]))
  stream = (batches_fn or data_lib.batches)(data_cfg, position)
  from tqdm import tqdm
  bar = tqdm(total=cfg.num_train_steps, initial=step, desc="pretrain", unit="step",
             disable=not (is_main and cfg.progress_bar))
  sums, window, started = {}, 0, time.time()
  val_loss, eval_metrics = None, {}
  trained_to_end = False

  def evaluation(at: int) -> tuple[float, dict[str, float]]:
    loss = validation_loss(eval_step, state["trainable"], eval_batches)
    extra = {k: float(v) for k, v in evaluate(state["trainable"]).items()} if evaluate else {}
    log.write(at, "eval", {"validation_loss": loss, **extra})
    if extra and is_main:
      bar.write(f"eval step {at}: validation_loss={loss:.4f}  {loop.format_metrics(extra)}")
    return loss, extra
  try:
    while step < cfg.num_train_steps:
      state, metrics = train_step(state, partitioning.shard_batch(next(stream), mesh))
      step, position, window = step + 1, position + 1, window + 1
      for k, v in metrics.items():
        sums[k] = sums.get(k, 0.0) + float(v)
      bar.update(1)
      if step % cfg.log_period == 0 or step == cfg.num_train_steps:
        values = {k: v / window for k, v in sums.items()}
        values["steps_per_second"] = window / max(time.time() - started, 1e-9)
        log.write(step, "train", values)
        bar.set_postfix(loss=f"{values['loss']:.3f}")
        sums, window, started = {}, 0, time.time()
      final = step == cfg.num_train_steps
      if final or cfg.eval_period and step % cfg.eval_period == 0:
        val_loss, eval_metrics = evaluation(step)  # The last step's evaluation comes before its only save.
      if final or step % cfg.checkpoint_period == 0:
        ckpt.save(step, state, data_position=position, extra_meta={"pretrain": gin.config_str()})
        trained_to_end = final
      if step in cfg.export_steps and not os.path.exists(os.path.join(export_path(model_dir, step),
                                                                      t5x_io.MSGPACK_NAME)):
        ckpt_io.save_params(state["trainable"], export_path(model_dir, step), "t5x", config, step=step)
        if is_main:
          bar.write(f"exported T5X checkpoint: {export_path(model_dir, step)}")
    bar.close()
    if not trained_to_end:  # Resumed at the end: evaluate for the report, save nothing (the step is saved).
      val_loss, eval_metrics = evaluation(step)
  finally:
    bar.close()
    ckpt.close()
    log.close()

  export = export_path(model_dir, step)
  ckpt_io.save_params(state["trainable"], export, "t5x", config, step=step)
  train_ids = target_tokens(data_lib.dataset(dataclasses.replace(data_cfg, shuffle=False), num_epochs=1)
                            .take(cfg.unigram_batches).as_numpy_iterator())
  vocab_size = data_lib.get_task(data_cfg.mixture_or_task_name).output_features["targets"].vocabulary.vocab_size
  unigram = unigram_cross_entropy(train_ids, target_tokens(eval_batches), vocab_size)
  report = {"step": step, "task": data_cfg.mixture_or_task_name, "model": config.name,
            "num_params": config.num_params(), "validation_loss": val_loss, "unigram_cross_entropy": unigram,
            "validation_tokens": int(len(target_tokens(eval_batches))), "unigram_train_tokens": int(len(train_ids)),
            "start": start_ref["path"], "export": export, **({"eval_metrics": eval_metrics} if evaluate else {})}
  if is_main:
    os.makedirs(os.path.join(model_dir, REPORTS_SUBDIR), exist_ok=True)
    for path in (report_path(model_dir, step), os.path.join(model_dir, REPORT_NAME)):
      with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    print(f"validation cross entropy {val_loss:.4f} nats/token vs unigram baseline {unigram:.4f} "
          f"({data_cfg.mixture_or_task_name}, {report['validation_tokens']} held-out target tokens)")
    print(f"exported T5X checkpoint: {export}")
  return {**report, "state": state}
