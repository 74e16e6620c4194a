"""Tests for xprompt_jax.training.step: state layout, token loss metrics, forward, learning, non-finite handling."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numerics
from xprompt_jax.methods import MPT, PrefixTuning, PromptTuning, XPrompt, XPromptMasks
from xprompt_jax.methods.xprompt import MASKS_KEY
from xprompt_jax.models import t5
from xprompt_jax.models.config import T5Config
from xprompt_jax.models.injection import Injection
from xprompt_jax.training import optim
from xprompt_jax.training import step as step_lib

CONFIG = T5Config(vocab_size=64, emb_dim=32, num_heads=2, head_dim=8, mlp_dim=32, num_encoder_layers=2,
                  num_decoder_layers=2, name="step_tiny")
OPTIMIZER = optim.make_optimizer(optim.OptimizerConfig())


@pytest.fixture(scope="module")
def frozen():
  return t5.init_params(CONFIG, jax.random.PRNGKey(0))


def _batch(batch_size=4, seed=0):
  rng = np.random.default_rng(seed)
  enc = rng.integers(2, 64, size=(batch_size, 8)).astype(np.int32)
  tgt = rng.integers(2, 64, size=(batch_size, 4)).astype(np.int32)
  tgt[:, -1] = 1
  tgt[0, 2:] = 0
  dec = np.concatenate([np.zeros((batch_size, 1), np.int32), tgt[:, :-1]], axis=1)
  return {"encoder_input_tokens": enc, "decoder_input_tokens": dec, "decoder_target_tokens": tgt,
          "decoder_loss_weights": (tgt > 0).astype(np.float32)}


def _masks(length=6, pieces=4):
  token = np.ones(length, np.float32)
  token[2] = 0
  piece = np.ones((length, pieces), np.float32)
  piece[0, 0] = piece[3, 2] = 0
  return XPromptMasks(token=jnp.asarray(token), piece=jnp.asarray(piece))


METHODS = {
    "prompt": (PromptTuning(length=6, prompt_init="random_uniform"), None, {}),
    "prefix": (PrefixTuning(length=3, hidden_dim=16), None, {}),
    "mpt": (MPT(length=6, prompt_init="random_uniform", num_tasks=3), None,
            {"task_id": np.array([0, 2, 1, 2], np.int32)}),
    "xprompt": (XPrompt(length=6, prompt_init="random_uniform", pieces=4), {MASKS_KEY: _masks()}, {}),
}


def _state(name, frozen, optimizer=OPTIMIZER):
  method, aux, extra = METHODS[name]
  return method, step_lib.init_state(method, frozen, CONFIG, optimizer, jax.random.PRNGKey(1), aux), extra


@pytest.mark.parametrize("name", sorted(METHODS))
def test_init_state_layout_and_optimizer_holds_only_trainable_leaves(frozen, name):
  method, state, _ = _state(name, frozen)
  assert set(state) == {"step", "trainable", "opt_state", "aux", "rng"}
  assert int(state["step"]) == 0
  assert jax.tree.structure(state["trainable"]) == jax.tree.structure(method.init(jax.random.PRNGKey(0), frozen,
                                                                                  CONFIG))
  # The optimizer state is exactly the optimizer's state of the trainable tree: same leaf count and shapes.
  expected = OPTIMIZER.init(state["trainable"])
  assert [np.shape(x) for x in jax.tree.leaves(state["opt_state"])] == [np.shape(x) for x in jax.tree.leaves(expected)]
  # ... and nothing the size of a frozen weight: no leaf of a frozen (>1-D) shape, fewer scalars than the model.
  frozen_shapes = {np.shape(x) for x in jax.tree.leaves(frozen) if np.ndim(x) > 1}
  trainable_shapes = {np.shape(x) for x in jax.tree.leaves(state["trainable"])}
  for leaf in jax.tree.leaves(state["opt_state"]):
    assert np.shape(leaf) not in frozen_shapes - trainable_shapes
  opt_scalars = sum(np.size(x) for x in jax.tree.leaves(state["opt_state"]))
  assert opt_scalars <= 2 * method.num_params(state["trainable"]) + 16 * len(jax.tree.leaves(state["trainable"]))
  assert opt_scalars < CONFIG.num_params()  # A copy of any frozen statistic would need at least that many.


def test_method_batch_adds_aux_without_copying_when_empty():
  batch = {"a": 1}
  assert step_lib.method_batch(batch, {}) is batch
  assert step_lib.method_batch(batch, {"m": 2}) == {"a": 1, "m": 2}


def test_forward_is_the_model_with_the_methods_injection(frozen):
  method, state, _ = _state("xprompt", frozen)
  batch = _batch()
  logits = step_lib.forward(t5.T5(CONFIG), method, CONFIG, frozen, state["trainable"], batch, state["aux"])
  masks = state["aux"][MASKS_KEY]
  scale = np.repeat(np.asarray(masks.token)[:, None] * np.asarray(masks.piece), 8, axis=1)
  direct = t5.T5(CONFIG).apply({"params": frozen}, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
                               injection=Injection(prompt=state["trainable"]["prompt"] * scale))
  numerics.assert_close(logits, direct)
  # The masks matter: without them the logits differ.
  unmasked = step_lib.forward(t5.T5(CONFIG), method, CONFIG, frozen, state["trainable"], batch, {})
  numerics.assert_differs(unmasked, logits)


def test_token_loss_metrics():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(2, 3, 5)).astype(np.float32))
  targets = np.array([[1, 2, 0], [4, 4, 3]], np.int32)
  weights = (targets > 0).astype(np.float32)
  batch = {"decoder_target_tokens": targets, "decoder_loss_weights": weights}
  loss, metrics = step_lib.token_loss(logits, batch, step_lib.LossConfig(z_loss=0.0))
  logp = np.asarray(jax.nn.log_softmax(logits))
  nll = -np.take_along_axis(logp, targets[..., None], -1)[..., 0] * weights
  # Each side: per token lse - logit (lse: a 5-term sum of exps and a log, two formulas), then a weighted sum over
  # the tokens (6 in the batch, 3 in a row) and one division. An nll cancels its terms |lse| + |logit|, so their sum
  # over the summed tokens is the scale.
  lse = np.log(np.exp(np.asarray(logits, np.float64)).sum(-1))
  target_logit = np.take_along_axis(np.asarray(logits), targets[..., None], -1)[..., 0]
  row_terms = ((np.abs(lse) + np.abs(target_logit)) * weights).sum(-1)
  numerics.assert_close(loss, nll.sum() / weights.sum(), roundings=numerics.sum_of(5) + numerics.sum_of(6)
                        + numerics.FEW, scale=row_terms.sum() / weights.sum())
  numerics.assert_close(metrics["example_loss"], nll.sum(-1), roundings=numerics.sum_of(5) + numerics.sum_of(3)
                        + numerics.FEW, scale=row_terms.max())
  assert float(metrics["num_target_tokens"]) == 5
  correct = (np.argmax(np.asarray(logits), -1) == targets) * weights
  # A count over 5, on the scale of a fraction (it may be 0).
  numerics.assert_close(metrics["accuracy"], correct.sum() / 5, roundings=numerics.FEW, scale=1.0)
  assert float(metrics["z_loss"]) == 0
  # Without decoder_loss_weights, padding (id 0) is excluded.
  loss2, _ = step_lib.token_loss(logits, {"decoder_target_tokens": targets}, step_lib.LossConfig(z_loss=0.0))
  numerics.assert_close(loss2, loss, roundings=numerics.FEW)  # The same weights, derived instead of given.


def test_eval_loss_matches_train_loss_without_update(frozen):
  method, state, extra = _state("mpt", frozen)
  batch = {**_batch(), **extra}
  model = t5.T5(CONFIG)
  eval_metrics = jax.jit(step_lib.make_eval_loss(model, method, CONFIG))(state["trainable"], state["aux"], batch,
                                                                         frozen)
  _, train_metrics = jax.jit(step_lib.make_train_step(model, method, CONFIG, OPTIMIZER))(state, batch, frozen)
  numerics.assert_close(eval_metrics["loss"], train_metrics["loss"])  # One forward pass, compiled twice.


@pytest.mark.parametrize("name", sorted(METHODS))
def test_loss_falls_on_a_fixed_batch_and_frozen_is_untouched(frozen, name):
  method, state, extra = _state(name, frozen)
  batch = {**_batch(), **extra}
  frozen_before = jax.tree.map(lambda x: np.array(jax.device_get(x)), frozen)
  aux_before = jax.tree.map(np.asarray, state["aux"])
  train_step = jax.jit(step_lib.make_train_step(t5.T5(CONFIG), method, CONFIG, OPTIMIZER), donate_argnums=(0,))
  losses = []
  for _ in range(20):
    state, metrics = train_step(state, batch, frozen)
    assert bool(metrics["finite"])
    losses.append(float(metrics["loss"]))
  assert int(state["step"]) == 20
  assert losses[-1] < 0.85 * losses[0], f"{name}: loss {losses[0]:.3f} -> {losses[-1]:.3f}"
  assert np.mean(losses[-5:]) < np.mean(losses[:5])
  assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(jax.tree.leaves(frozen_before), jax.tree.leaves(frozen)))
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, np.asarray(b)), aux_before, state["aux"])


def _nan_state(frozen):
  method, state, _ = _state("prompt", frozen)
  prompt = np.array(state["trainable"]["prompt"])
  prompt[2, 5] = np.nan
  state = {**state, "trainable": {"prompt": jnp.asarray(prompt)}}
  return method, state


def test_skip_nonfinite_keeps_trainable_and_optimizer_state(frozen):
  method, state = _nan_state(frozen)
  before = jax.tree.map(np.asarray, {"trainable": state["trainable"], "opt_state": state["opt_state"]})
  step = jax.jit(step_lib.make_train_step(t5.T5(CONFIG), method, CONFIG, OPTIMIZER, skip_nonfinite=True))
  new, metrics = step(state, _batch(), frozen)
  assert not bool(metrics["finite"])
  assert not np.all(np.isfinite(np.asarray(metrics["example_loss"])))
  assert int(new["step"]) == 1 and not np.array_equal(np.asarray(new["rng"]), np.asarray(state["rng"]))
  after = jax.tree.map(np.asarray, {"trainable": new["trainable"], "opt_state": new["opt_state"]})
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), before, after)  # NaN == NaN positionally.


def test_nonfinite_without_skip_is_reported_and_applied(frozen):
  method, state = _nan_state(frozen)
  step = jax.jit(step_lib.make_train_step(t5.T5(CONFIG), method, CONFIG, OPTIMIZER, skip_nonfinite=False))
  new, metrics = step(state, _batch(), frozen)
  assert not bool(metrics["finite"])
  assert not np.all(np.isfinite(np.asarray(new["trainable"]["prompt"])))


def test_custom_loss_fn_replaces_token_loss(frozen):
  method, state, _ = _state("prompt", frozen)

  def loss_fn(trainable, frozen_params, batch, aux, rng):
    del frozen_params, batch, aux, rng
    loss = jnp.sum(trainable["prompt"] ** 2)
    return loss, {"loss": loss, "example_loss": jnp.zeros((4,))}

  step = jax.jit(step_lib.make_train_step(t5.T5(CONFIG), method, CONFIG, OPTIMIZER, loss_fn=loss_fn))
  new, metrics = step(state, _batch(), frozen)
  p = np.asarray(state["trainable"]["prompt"])
  # Sums of p.size positive squares (float32 against float64), and the square root of one.
  numerics.assert_close(metrics["loss"], np.sum(p**2), roundings=numerics.sum_of(p.size) + numerics.FEW)
  numerics.assert_close(metrics["grad_norm"], np.linalg.norm(2 * p), roundings=numerics.sum_of(p.size) + numerics.FEW)
  assert np.sum(np.asarray(new["trainable"]["prompt"]) ** 2) < np.sum(p**2)
