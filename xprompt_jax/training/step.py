"""The pure training and evaluation steps: `train_step(state, batch, frozen) -> (state, metrics)`.

The state is a plain pytree `{"step", "trainable", "opt_state", "aux", "rng"}` (what the checkpointer saves).
Gradients are taken only with respect to `state["trainable"]`; the frozen T5 parameters are an input of the
step, never part of the state or the optimizer. `state["aux"]` holds non-trained method inputs (e.g. XPrompt's
pruning masks); they reach the method through the batch, so every method keeps the same `inject` signature.
"""
import dataclasses
from typing import Any, Callable, Optional

import gin
import jax
import jax.numpy as jnp
import optax

from xprompt_jax.methods.base import Method
from xprompt_jax.models.config import T5Config
from xprompt_jax.models.t5 import T5
from xprompt_jax.training import losses

State = dict[str, Any]


@gin.configurable
@dataclasses.dataclass(frozen=True)
class LossConfig:
  """T5X cross entropy options. `loss_normalizing_factor`: see `losses.normalize_loss` (T5X's default is a sum;
  we default to the mean over real target tokens so logged losses read per token)."""
  z_loss: float = 1e-4
  label_smoothing: float = 0.0
  loss_normalizing_factor: Any = "num_real_target_tokens"


def init_state(method: Method, frozen, config: T5Config, optimizer: optax.GradientTransformation, rng,
               aux: Optional[dict] = None) -> State:
  """A fresh state: the method's initial trainable tree and the optimizer state of that tree only."""
  init_rng, dropout_rng = jax.random.split(rng)
  trainable = method.init(init_rng, frozen, config)
  return {"step": jnp.zeros((), jnp.int32), "trainable": trainable, "opt_state": optimizer.init(trainable),
          "aux": dict(aux or {}), "rng": dropout_rng}


def method_batch(batch: dict, aux: dict) -> dict:
  """The batch as a method sees it: data features plus the state's non-trained inputs (masks, ...)."""
  return {**batch, **aux} if aux else batch


def forward(model: T5, method: Method, config: T5Config, frozen, trainable, batch: dict, aux: dict, *,
            rng=None, return_hidden: bool = False):
  """Teacher-forced logits of the frozen model with the method's injection (dropout when `rng` is given)."""
  injection = method.inject(trainable, method_batch(batch, aux), config)
  dropout = rng is not None and config.dropout_rate > 0
  return model.apply({"params": frozen}, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
                     injection=injection, encoder_segment_ids=batch.get("encoder_segment_ids"),
                     decoder_segment_ids=batch.get("decoder_segment_ids"), enable_dropout=dropout,
                     return_hidden=return_hidden, rngs={"dropout": rng} if dropout else None,
                     encoder_prompt_positions=batch.get("encoder_prompt_positions"))


def token_loss(logits, batch: dict, loss_cfg: LossConfig):
  """(scalar loss, metrics) of the T5X cross entropy with z-loss on `decoder_target_tokens`."""
  targets = batch["decoder_target_tokens"]
  weights = batch.get("decoder_loss_weights", (targets > 0).astype(jnp.float32))
  total, z_term, per_token = losses.cross_entropy_with_z_loss(
      logits, targets, weights, z_loss=loss_cfg.z_loss, label_smoothing=loss_cfg.label_smoothing,
      loss_normalizing_factor=loss_cfg.loss_normalizing_factor)
  correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32) * weights
  num_tokens = jnp.sum(weights)
  metrics = {"loss": total, "z_loss": z_term, "accuracy": jnp.sum(correct) / jnp.maximum(num_tokens, 1.0),
             "num_target_tokens": num_tokens,
             # Per-example loss, so a non-finite loss can be traced to the offending rows.
             "example_loss": jnp.sum(per_token, axis=-1)}
  return total, metrics


def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def make_train_step(model: T5, method: Method, config: T5Config, optimizer: optax.GradientTransformation,
                    loss_cfg: LossConfig = LossConfig(), loss_fn: Optional[Callable] = None,
                    skip_nonfinite: bool = False, max_trainable_norm: Optional[float] = None):
  """`train_step(state, batch, frozen) -> (state, metrics)`, pure and ready for `jax.jit`.

  `loss_fn(trainable, frozen, batch, aux, rng) -> (loss, metrics)` replaces the default token loss (used by
  MPT distillation). A step is finite when its loss, its gradients and the updated trainable parameters are, and
  the parameters' global norm stays within `max_trainable_norm` (None: any finite norm). With `skip_nonfinite` a
  step that is not leaves the state unchanged except for the step counter and rng; `metrics["finite"]` (and
  `metrics["params_finite"]`, the parameters' part) tell the loop either way.
  """

  def default_loss(trainable, frozen, batch, aux, rng):
    logits = forward(model, method, config, frozen, trainable, batch, aux, rng=rng)
    return token_loss(logits, batch, loss_cfg)

  loss_fn = loss_fn or default_loss

  def train_step(state: State, batch: dict, frozen) -> tuple[State, dict]:
    rng, step_rng = jax.random.split(state["rng"])
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["trainable"], frozen, batch,
                                                                      state["aux"], step_rng)
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["trainable"])
    trainable = optax.apply_updates(state["trainable"], updates)
    norm = optax.global_norm(trainable)
    params_finite = _all_finite(trainable) & jnp.isfinite(norm)
    if max_trainable_norm is not None:
      params_finite = params_finite & (norm <= max_trainable_norm)
    finite = jnp.isfinite(loss) & _all_finite(grads) & params_finite
    if skip_nonfinite:
      keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
      trainable, opt_state = keep(trainable, state["trainable"]), keep(opt_state, state["opt_state"])
    metrics = {**metrics, "finite": finite, "params_finite": params_finite, "update_norm": norm,
               "grad_norm": optax.global_norm(grads),
               "trainable_norm": optax.global_norm(trainable)}
    new_state = {"step": state["step"] + 1, "trainable": trainable, "opt_state": opt_state, "aux": state["aux"],
                 "rng": rng}
    return new_state, metrics

  return train_step


def make_eval_loss(model: T5, method: Method, config: T5Config, loss_cfg: LossConfig = LossConfig()):
  """`eval_loss(trainable, aux, batch, frozen) -> metrics` (no dropout), for validation loss."""

  def eval_loss(trainable, aux, batch, frozen):
    logits = forward(model, method, config, frozen, trainable, batch, aux)
    return token_loss(logits, batch, loss_cfg)[1]

  return eval_loss
