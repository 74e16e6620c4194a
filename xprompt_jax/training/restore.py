"""A trained run, loaded back: gin-bound model and method, the frozen T5 and the trainable state of a checkpoint.

Used by `xprompt-jax eval` and `infer`. The checkpoint is opened read-only (a running trainer may hold the
model_dir lock), and the frozen model is checked against the one recorded with the checkpoint.
"""
import dataclasses
from typing import Any, Optional

import jax

from xprompt_jax.methods import get_method
from xprompt_jax.methods.base import Method
from xprompt_jax.models import t5
from xprompt_jax.models.config import T5Config
from xprompt_jax.training import checkpointing
from xprompt_jax.training import loop
from xprompt_jax.training import optim
from xprompt_jax.training import partitioning
from xprompt_jax.training import step as step_lib


UnreadableCheckpointError = checkpointing.UnreadableCheckpointError
_EVAL_HINT = "evaluate another step with --step"


def _unreadable(step: int, model_dir: str, error: Exception) -> UnreadableCheckpointError:
  return checkpointing.unreadable(f"checkpoint {step} in {model_dir}", error, _EVAL_HINT)


@dataclasses.dataclass
class Run:
  config: T5Config
  method: Method
  model: t5.T5
  frozen: Any
  frozen_ref: dict
  state: dict
  meta: dict
  step: int

  def inject_fn(self):
    """`inject(trainable, batch, aux)` for the evaluator (one function object per run: compiled once)."""
    method, config = self.method, self.config

    def inject(trainable, batch, aux):
      return method.inject(trainable, step_lib.method_batch(batch, aux), config)

    return inject


def _stored_labels(stored: dict, trainable) -> Optional[Any]:
  """The per-parameter optimizer labels a checkpoint was saved with (optax.multi_transform's
  `opt_state.inner_states.<label>...` leaves), as a tree like `trainable`; None without per-label states."""
  prefix = "opt_state.inner_states."
  owner = {}
  for name in stored:
    if name.startswith(prefix):
      label, rest = name[len(prefix):].split(".", 1)
      for path in (n[len("trainable."):] for n in stored if n.startswith("trainable.")):
        if rest.endswith("." + path):
          owner[path] = label
  if not owner:
    return None
  dotted = lambda path: ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
  return jax.tree_util.tree_map_with_path(lambda path, _: owner.get(dotted(path), "frozen"), trainable)


def load_run(model_dir: str, step: Optional[str] = "latest") -> Run:
  """The run in `model_dir` at `step` ("latest", "best" or a number), with gin-bound configs."""
  config, method = T5Config(), get_method()
  train_cfg, mesh_cfg, opt_cfg = loop.TrainConfig(), partitioning.MeshConfig(), optim.OptimizerConfig()
  mesh = partitioning.make_mesh(mesh_cfg)
  frozen, frozen_ref = loop.load_frozen(train_cfg, config, mesh, mesh_cfg.rules)
  ckpt = checkpointing.TrainCheckpointer(model_dir, read_only=True, frozen_path=frozen_ref["path"],
                                         frozen_fingerprint=frozen_ref["fingerprint"],
                                         best_metric=train_cfg.best_metric)
  try:
    steps = ckpt.all_steps()
    if step in (None, "latest"):
      number = ckpt.latest_step()
    elif step == "best":
      if train_cfg.best_metric is None:
        raise ValueError(f"--step=best needs TrainConfig.best_metric (the metric checkpoints were ranked by); "
                         f"{model_dir} has steps {steps}: give one with --step=N or bind the metric")
      number = ckpt.best_step()
      if number is None:
        raise ValueError(f"--step=best: no checkpoint in {model_dir} recorded {train_cfg.best_metric!r}; its steps "
                         f"are {steps}: give one with --step=N")
    else:
      try:
        number = int(step)
      except ValueError as e:
        raise ValueError(f"--step={step!r} must be latest, best or a step number") from e
      if steps and number not in steps:
        raise ValueError(f"--step={number}: {model_dir} has no checkpoint {number}; its steps are {steps}")
    if number is None:
      raise FileNotFoundError(f"{model_dir} holds no checkpoint; train first (xprompt-jax train ...)")
    try:
      stored = ckpt.stored_shapes(number)
    except (ValueError, OSError) as e:
      raise _unreadable(number, model_dir, e) from e
    trainable = method.abstract_trainable(config, frozen)
    labels = method.param_labels(trainable)
    label_lrs = dict(opt_cfg.label_learning_rates) if opt_cfg.label_learning_rates else None
    stored_labels = _stored_labels(stored, trainable)
    if label_lrs is None and stored_labels is not None:
      # Trained with per-label learning rates that a pipeline set (MPT's target adaptation), not gin: the optimizer
      # state has that per-label layout. Its values are restored, never used, so any rates give the right tree.
      labels, label_lrs = stored_labels, {label: 1.0 for label in set(jax.tree.leaves(stored_labels))}
    optimizer = optim.make_optimizer(opt_cfg, labels if label_lrs else None, label_lrs)
    abstract = jax.eval_shape(lambda: step_lib.init_state(method, frozen, config, optimizer, jax.random.PRNGKey(0)))
    if any(name.startswith("aux") for name in stored):
      # Non-trained method inputs saved with the state: XPrompt's pruning masks are the only kind so far.
      if not hasattr(method, "ones_masks"):
        raise ValueError(f"checkpoint {number} in {model_dir} holds method inputs (aux) that the gin-bound method "
                         f"{method.name!r} does not take; bind get_method.name to the method that trained it")
      from xprompt_jax.methods.xprompt import MASKS_KEY
      abstract["aux"] = {MASKS_KEY: jax.eval_shape(method.ones_masks)}
    replicated = partitioning.replicated(mesh)
    state, meta = ckpt.restore(number, abstract_state=abstract, shardings=jax.tree.map(lambda _: replicated, abstract),
                               unreadable_hint=_EVAL_HINT)
  finally:
    ckpt.close()
  return Run(config, method, t5.T5(config), frozen, frozen_ref, state, meta, number)
