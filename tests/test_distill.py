"""Tests for xprompt_jax.training.distill: hand-computed KL/MSE, routing per task, lambda = 0, ablations, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numerics
from xprompt_jax.methods.mpt import MPT, task_prompts
from xprompt_jax.models import t5
from xprompt_jax.models.config import T5Config
from xprompt_jax.training import distill
from xprompt_jax.training import step as step_lib

CFG = T5Config(vocab_size=64, emb_dim=16, num_heads=2, head_dim=4, mlp_dim=32, num_encoder_layers=2,
               num_decoder_layers=2, relpos_num_buckets=8, relpos_max_distance=16, name="tiny")
LENGTH = 3


@pytest.fixture(scope="module")
def frozen():
  return jax.jit(lambda: t5.init_params(CFG, jax.random.PRNGKey(0)))()


def _batch(task_id):
  rng = np.random.default_rng(0)
  enc = rng.integers(2, CFG.vocab_size, (4, 6)).astype(np.int32)
  enc[:, -1] = 0  # Padding position: excluded from the encoder hidden-state loss.
  targets = rng.integers(2, CFG.vocab_size, (4, 3)).astype(np.int32)
  targets[:, -1] = 0
  dec_in = np.concatenate([np.zeros((4, 1), np.int32), targets[:, :-1]], axis=1)
  return {"encoder_input_tokens": enc, "decoder_input_tokens": dec_in, "decoder_target_tokens": targets,
          "decoder_loss_weights": (targets > 0).astype(np.float32), "task_id": np.asarray(task_id, np.int32)}


def _method(num_tasks=2):
  return MPT(length=LENGTH, num_tasks=num_tasks, prompt_init="random_uniform", uv_init="normal")


def _trainable(method, frozen, seed=1):
  return method.init(jax.random.PRNGKey(seed), frozen, CFG)


def _teacher_scales(frozen, teachers, batch):
  """(KL terms of the teacher against itself, largest hidden-state magnitude) of the teachers' forward pass."""
  logits, hidden = t5.T5(CFG).apply({"params": frozen}, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
                                    injection=distill.teacher_injection(teachers, batch["task_id"]), return_hidden=True)
  log_p = jax.nn.log_softmax(logits, axis=-1)
  return numerics.kl_terms(log_p, log_p), max(float(jnp.max(jnp.abs(hidden["encoder"]))),
                                      float(jnp.max(jnp.abs(hidden["decoder"]))))


def test_terms_equal_hand_computed_values():
  t_logits = np.array([[[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]]], np.float32)  # [1, 2, 3]
  s_logits = np.array([[[0.5, 1.0, 1.0], [2.0, -1.0, 0.0]]], np.float32)
  weights = np.array([[1.0, 0.0]], np.float32)  # Only the first target token counts.
  temperature = 2.0
  p = np.exp(t_logits[0, 0] / temperature) / np.exp(t_logits[0, 0] / temperature).sum()
  q = np.exp(s_logits[0, 0] / temperature) / np.exp(s_logits[0, 0] / temperature).sum()
  want_kl = float(np.sum(p * np.log(p / q)))
  t_enc = np.array([[[1.0, 2.0], [3.0, 4.0]]], np.float32)
  s_enc = np.array([[[0.0, 2.0], [9.0, 9.0]]], np.float32)
  enc_valid = np.array([[True, False]])
  t_dec = np.array([[[1.0, 1.0], [0.0, 0.0]]], np.float32)
  s_dec = np.array([[[2.0, 3.0], [5.0, 5.0]]], np.float32)
  want_enc = (1.0 + 0.0) / 2  # First position only, mean over features.
  want_dec = (1.0 + 4.0) / 2
  batch = {"decoder_target_tokens": np.array([[5, 0]]), "decoder_loss_weights": weights}
  cfg = distill.DistillConfig(temperature=temperature)
  terms = distill.distillation_terms((t_logits, {"encoder": t_enc, "decoder": t_dec}),
                                     (s_logits, {"encoder": s_enc, "encoder_valid": enc_valid, "decoder": s_dec}),
                                     batch, cfg)
  kl_terms = numerics.kl_terms(np.log(p), np.log(q))  # The KL cancels its 3 terms: a few roundings of their size.
  numerics.assert_close(terms["kl_loss"], want_kl, roundings=numerics.FEW, scale=kl_terms)
  numerics.assert_close(terms["hidden_loss"], want_enc + want_dec, roundings=numerics.FEW)
  no_hidden = distill.distillation_terms((t_logits, {}), (s_logits, {}), batch,
                                         distill.DistillConfig(temperature=temperature, objective="logits"))
  assert float(no_hidden["hidden_loss"]) == 0.0
  numerics.assert_close(no_hidden["kl_loss"], want_kl, roundings=numerics.FEW, scale=kl_terms)


def test_lambda_zero_is_multitask_prompt_tuning(frozen):
  method = _method()
  model = t5.T5(CFG)
  trainable = _trainable(method, frozen)
  batch = _batch([0, 1, 1, 0])
  aux = {distill.TEACHERS_KEY: jnp.zeros((2, LENGTH, CFG.emb_dim))}
  loss_fn = distill.make_distill_loss(model, method, CFG, cfg=distill.DistillConfig(weight=0.0))
  (loss, metrics), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(trainable, frozen, batch, aux, None)

  def plain(tr):
    return step_lib.token_loss(step_lib.forward(model, method, CFG, frozen, tr, batch, {}), batch,
                               step_lib.LossConfig())

  (want, _), want_grads = jax.jit(jax.value_and_grad(plain, has_aux=True))(trainable)
  # The same forward and backward pass, compiled in two programs.
  numerics.assert_close(loss, want, roundings=numerics.NETWORK)
  numerics.assert_trees_close(grads, want_grads, roundings=numerics.NETWORK)
  for key in ("loss", "z_loss", "accuracy", "example_loss", "kl_loss", "hidden_loss"):
    assert key in metrics
  assert metrics["example_loss"].shape == (4,)


def test_examples_route_to_their_own_teacher_and_factors(frozen):
  """Teachers equal to each task's own student prompt: zero distillation when routed right, not when swapped."""
  method = _method()
  model = t5.T5(CFG)
  trainable = _trainable(method, frozen)
  aux = {distill.TEACHERS_KEY: task_prompts(trainable)}
  loss_fn = jax.jit(distill.make_distill_loss(model, method, CFG))
  _, right = loss_fn(trainable, frozen, _batch([0, 1, 1, 0]), aux, None)
  # Teacher and student are two passes of one network with one prompt. The KL is second order in their logits'
  # difference, so only its own FEW roundings of its terms remain; the hidden loss sums two mean squared
  # differences, so its square root is at most sqrt(2) max |difference|: NETWORK at the hidden states' scale.
  kl_terms, hidden_scale = _teacher_scales(frozen, aux[distill.TEACHERS_KEY], _batch([0, 1, 1, 0]))
  numerics.assert_close(right["kl_loss"], 0.0, roundings=numerics.FEW, scale=kl_terms)
  numerics.assert_close(np.sqrt(right["hidden_loss"]), 0.0, roundings=numerics.NETWORK, scale=np.sqrt(2) * hidden_scale)
  numerics.assert_close(right["loss"], right["task_loss"], roundings=numerics.FEW,
                        scale=float(right["task_loss"]) + kl_terms)  # Plus rounding-sized distillation terms.
  swapped_aux = {distill.TEACHERS_KEY: task_prompts(trainable)[::-1]}
  _, wrong = loss_fn(trainable, frozen, _batch([0, 1, 1, 0]), swapped_aux, None)
  numerics.assert_differs(wrong["kl_loss"], 0.0, roundings=numerics.FEW, scale=kl_terms)
  numerics.assert_differs(np.sqrt(wrong["hidden_loss"]), 0.0, roundings=numerics.NETWORK,
                          scale=np.sqrt(2) * hidden_scale)
  _, swapped_ids = loss_fn(trainable, frozen, _batch([1, 0, 0, 1]), aux, None)
  numerics.assert_differs(swapped_ids["loss"], right["loss"], roundings=numerics.NETWORK)


def test_one_task_with_unit_factors_is_the_shared_prompt(frozen):
  method = MPT(length=LENGTH, num_tasks=1, prompt_init="random_uniform", uv_init="ones")
  trainable = _trainable(method, frozen)
  prompt = method.inject(trainable, {"task_id": np.zeros(4, np.int32)}, CFG).prompt
  np.testing.assert_array_equal(prompt, np.broadcast_to(trainable["shared_prompt"], prompt.shape))
  loss_fn = jax.jit(distill.make_distill_loss(t5.T5(CFG), method, CFG))
  aux = {distill.TEACHERS_KEY: trainable["shared_prompt"][None]}
  _, metrics = loss_fn(trainable, frozen, _batch([0, 0, 0, 0]), aux, None)
  # KL plus hidden MSE of two passes with one prompt: the KL's FEW roundings of its terms (the MSE is second order
  # in the passes' difference: (NETWORK u H)^2 = u H^2, under 10 u for these hidden states of size H < 3).
  kl_terms, _ = _teacher_scales(frozen, aux[distill.TEACHERS_KEY], _batch([0, 0, 0, 0]))
  numerics.assert_close(metrics["distill_loss"], 0.0, roundings=numerics.FEW, scale=kl_terms)


def test_distance_objective_is_prompt_mse(frozen):
  method = _method()
  trainable = _trainable(method, frozen)
  teachers = jax.random.normal(jax.random.PRNGKey(3), (2, LENGTH, CFG.emb_dim))
  cfg = distill.DistillConfig(weight=0.5, objective="distance")
  loss_fn = jax.jit(distill.make_distill_loss(t5.T5(CFG), method, CFG, cfg=cfg))
  ids = np.array([0, 1, 1, 1], np.int32)
  _, metrics = loss_fn(trainable, frozen, _batch(ids), {distill.TEACHERS_KEY: teachers}, None)
  students = np.asarray(task_prompts(trainable))[ids]
  want = np.mean((students - np.asarray(teachers)[ids]) ** 2)
  # A mean of students.size squares (all positive: the sum is its terms' scale), in two orders.
  numerics.assert_close(metrics["distance_loss"], want, roundings=numerics.sum_of(students.size))
  numerics.assert_close(metrics["loss"], metrics["task_loss"] + 0.5 * want, roundings=numerics.sum_of(students.size))
  assert float(metrics["kl_loss"]) == 0.0


def test_teacher_gradients_are_zero_and_student_gets_distillation_gradient(frozen):
  method = _method()
  trainable = _trainable(method, frozen)
  teachers = jax.random.normal(jax.random.PRNGKey(4), (2, LENGTH, CFG.emb_dim))
  loss_fn = distill.make_distill_loss(t5.T5(CFG), method, CFG, cfg=distill.DistillConfig(weight=1.0))
  g_teacher = jax.jit(jax.grad(lambda t: loss_fn(trainable, frozen, _batch([0, 1, 0, 1]), {distill.TEACHERS_KEY: t},
                                         None)[0]))(teachers)
  np.testing.assert_array_equal(g_teacher, 0.0)


def test_bad_inputs_raise_clear_errors(frozen):
  with pytest.raises(ValueError, match="lambda"):
    distill.DistillConfig(weight=-0.1)
  with pytest.raises(ValueError, match="temperature"):
    distill.DistillConfig(temperature=0.0)
  with pytest.raises(ValueError, match="objective"):
    distill.DistillConfig(objective="hidden")
  method = _method()
  with pytest.raises(ValueError, match=r"shape \(2, 5, 16\).*\(2, 3, 16\)"):
    distill.check_teachers(np.zeros((2, 5, CFG.emb_dim)), method, CFG)
  distill.check_teachers(np.zeros((2, LENGTH, CFG.emb_dim)), method, CFG)
  loss_fn = distill.make_distill_loss(t5.T5(CFG), method, CFG)
  with pytest.raises(ValueError, match="teacher_prompts"):
    loss_fn(_trainable(method, frozen), frozen, _batch([0, 1, 0, 1]), {}, None)
  with pytest.raises(ValueError, match="MPT student"):
    from xprompt_jax.methods.prompt import PromptTuning
    distill.make_distill_loss(t5.T5(CFG), PromptTuning(length=LENGTH), CFG)
