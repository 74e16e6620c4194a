"""MPT: parameter count, P_k = P* ∘ (u_k v_kᵀ) per example, task-id checks, labels and target initialisation."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import numerics
from xprompt_jax.methods.mpt import MPT, check_task_ids, target_init_from_sources, task_prompts
from xprompt_jax.models.config import PRESETS, T5Config
from xprompt_jax.models.injection import Injection
from xprompt_jax.models.t5 import T5, init_params
from xprompt_jax.training import partitioning

CFG = T5Config(vocab_size=64, emb_dim=16, num_heads=2, head_dim=4, mlp_dim=32, num_encoder_layers=2,
               num_decoder_layers=3, relpos_num_buckets=8, relpos_max_distance=16)
RNG = jax.random.PRNGKey(0)
ENC = jnp.asarray(np.random.default_rng(0).integers(2, 64, (3, 5)), jnp.int32)
DEC = jnp.asarray(np.random.default_rng(1).integers(2, 64, (3, 4)), jnp.int32)


@pytest.fixture(scope="module")
def frozen():
  return jax.jit(init_params, static_argnums=0)(CFG, jax.random.PRNGKey(42))


@jax.jit
def _logits(frozen, injection=None):
  return T5(CFG).apply({"params": frozen}, ENC, DEC, injection=injection)


def test_t5_base_one_task_has_77668_parameters():
  method = MPT(length=100, num_tasks=1, rank=1)
  shapes = method.abstract_trainable(PRESETS["t5_1_1_base"])  # eval_shape: nothing of T5-Base is allocated.
  assert isinstance(shapes["shared_prompt"], jax.ShapeDtypeStruct)
  assert method.num_params(shapes) == 76_800 + 100 + 768 == 77_668


def test_ones_init_gives_the_shared_prompt_for_every_task(frozen):
  method = MPT(length=4, num_tasks=3)
  trainable = method.init(RNG, frozen, CFG)
  assert trainable["u"].shape == (3, 4, 1) and trainable["v"].shape == (3, 16, 1)
  prompt = method.inject(trainable, {"task_id": np.array([2, 0, 1])}, CFG).prompt
  assert prompt.shape == (3, 4, 16)
  for row in prompt:
    np.testing.assert_array_equal(row, trainable["shared_prompt"])
  table = np.asarray(frozen["token_embedder"]["embedding"])  # P* is sampled vocab by default.
  assert all((table == np.asarray(r)).all(axis=1).any() for r in trainable["shared_prompt"])


def test_per_example_prompts_follow_task_ids(frozen):
  method = MPT(length=4, num_tasks=3, rank=2, uv_init="normal")
  trainable = method.init(RNG, frozen, CFG)
  expected = trainable["shared_prompt"] * jnp.einsum("tlr,tdr->tld", trainable["u"], trainable["v"])
  # P* ∘ (u vᵀ) of rank 2: a product, a 2-term sum and a product per entry.
  numerics.assert_close(task_prompts(trainable), expected, roundings=numerics.FEW)
  ids = np.array([0, 2, 1])
  prompt = method.inject(trainable, {"task_id": ids}, CFG).prompt
  numerics.assert_close(prompt, expected[ids], roundings=numerics.FEW)
  swapped = method.inject(trainable, {"task_id": ids[[1, 0, 2]]}, CFG).prompt
  np.testing.assert_array_equal(swapped[0], prompt[1])
  np.testing.assert_array_equal(swapped[1], prompt[0])
  numerics.assert_differs(swapped[0], prompt[0], roundings=numerics.FEW)
  # The per-example prompt through the model equals a direct [B, L, D] Injection, and differs per task.
  inj = method.inject(trainable, {"task_id": jnp.asarray(ids)}, CFG)
  np.testing.assert_array_equal(_logits(frozen, inj), _logits(frozen, Injection(prompt=expected[ids])))
  swapped_logits = _logits(frozen, method.inject(trainable, {"task_id": jnp.asarray(ids[[1, 0, 2]])}, CFG))
  numerics.assert_differs(swapped_logits[0], _logits(frozen, inj)[0], roundings=numerics.NETWORK)


def test_out_of_range_task_ids_error_clearly(frozen):
  method = MPT(length=4, num_tasks=3)
  trainable = method.init(RNG, frozen, CFG)
  with pytest.raises(ValueError, match=r"out-of-range task ids \[3, -1\] at positions \[1, 2\]; valid ids are 0..2"):
    method.inject(trainable, {"task_id": jnp.array([0, 3, -1])}, CFG)
  with pytest.raises(ValueError, match=r"needs batch\['task_id'\]"):
    method.inject(trainable, {}, CFG)
  with pytest.raises(ValueError, match="1-D int array"):
    check_task_ids({"task_id": np.array([0.0])}, 3)
  check_task_ids({"task_id": np.array([0, 2])}, 3)
  # Inside jit the ids are not concrete: an out-of-range id selects NaN factors instead of another task's prompt.
  jitted = jax.jit(lambda t, ids: method.inject(t, {"task_id": ids}, CFG).prompt)(trainable, jnp.array([1, 3]))
  assert np.isfinite(jitted[0]).all() and np.isnan(jitted[1]).all()


def test_single_task_needs_no_task_id(frozen):
  method = MPT(length=4)
  trainable = method.init(RNG, frozen, CFG)
  np.testing.assert_array_equal(method.inject(trainable, {}, CFG).prompt, trainable["shared_prompt"])


def test_target_init_is_the_mean_of_the_sources(frozen):
  source = MPT(length=4, num_tasks=5, rank=2, uv_init="normal").init(RNG, frozen, CFG)
  target = target_init_from_sources(source, num_targets=2)
  np.testing.assert_array_equal(target["shared_prompt"], source["shared_prompt"])
  assert target["u"].shape == (2, 4, 2) and target["v"].shape == (2, 16, 2)
  for t in range(2):
    # A mean of 5 source rows.
    numerics.assert_close(target["u"][t], np.mean(np.asarray(source["u"]), axis=0), roundings=numerics.FEW)
    numerics.assert_close(target["v"][t], np.mean(np.asarray(source["v"]), axis=0), roundings=numerics.FEW)
  target_method = MPT(length=4, num_tasks=2, rank=2)
  assert jax.tree_util.tree_structure(target) == jax.tree_util.tree_structure(target_method.init(RNG, frozen, CFG))
  with pytest.raises(ValueError, match="num_targets must be positive"):
    target_init_from_sources(source, 0)


def test_labels_drive_separate_learning_rates(frozen):
  method = MPT(length=4, num_tasks=2)
  trainable = method.init(RNG, frozen, CFG)
  labels = method.param_labels(trainable)
  assert labels == {"shared_prompt": "shared", "u": "task", "v": "task"}
  loss = lambda t: jnp.sum(_logits(frozen, method.inject(t, {"task_id": jnp.array([0, 1, 1])}, CFG)) ** 2)
  grads = jax.jit(jax.grad(loss))(trainable)
  for name, g in grads.items():
    assert float(jnp.max(jnp.abs(g))) > 0, name
  opt = optax.multi_transform({"shared": optax.sgd(1.0), "task": optax.set_to_zero()}, labels)
  updates, _ = opt.update(grads, opt.init(trainable), trainable)
  assert float(jnp.max(jnp.abs(updates["shared_prompt"]))) > 0
  assert float(jnp.max(jnp.abs(updates["u"]))) == 0 and float(jnp.max(jnp.abs(updates["v"]))) == 0


def test_logical_axes_and_config_errors(frozen):
  method = MPT(length=4, num_tasks=2, rank=3)
  trainable = method.init(RNG, frozen, CFG)
  specs = partitioning.logical_to_mesh_axes(method.logical_axes(CFG), shapes=trainable)
  assert sorted(specs) == sorted(trainable)
  assert method.logical_axes(CFG)["v"] == jax.sharding.PartitionSpec("tasks", "prompt_embed", "rank")
  with pytest.raises(ValueError, match="MPT.uv_init='zeros'"):
    MPT(uv_init="zeros")
  with pytest.raises(ValueError, match="MPT.num_tasks must be a positive int"):
    MPT(num_tasks=0)
