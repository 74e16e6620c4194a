"""Tests for xprompt_jax.training.optim: the Adafactor recipe against the numpy reference, schedules, labels."""
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import numerics
import numpy_adafactor as ref
from xprompt_jax.training import optim


def _tree(seed=0):
  rng = np.random.default_rng(seed)
  return {
      "factored": rng.normal(size=(130, 160)).astype(np.float32),  # Both dims >= 128: factored.
      "prompt": rng.normal(size=(5, 16)).astype(np.float32),  # Small: full second moment.
      "vec": rng.normal(size=(7,)).astype(np.float32),
      "tall": rng.normal(size=(300, 4)).astype(np.float32),  # One dim >= 128 only: unfactored.
      "stacked": rng.normal(size=(3, 140, 128)).astype(np.float32),  # Rank 3: factors dims 1 and 2.
  }


def _grads(seed, tree):
  rng = np.random.default_rng(1000 + seed)
  return jax.tree.map(lambda p: (rng.normal(size=p.shape) * rng.uniform(0.01, 3.0)).astype(np.float32), tree)


def _run_both(cfg, steps, hp=None):
  params = _tree()
  tx = optim.make_optimizer(cfg)
  state = tx.init(params)
  hp = ref.hparams_from_config(cfg) if hp is None else hp
  ref_state = ref.init(params, hp)
  p_jax, p_ref = params, params
  update = jax.jit(tx.update)
  for s in range(steps):
    g = _grads(s, params)
    updates, state = update(g, state, p_jax)
    p_jax = optax.apply_updates(p_jax, updates)
    p_ref, ref_state = ref.update(g, ref_state, p_ref, hp)
  return p_jax, p_ref


@pytest.mark.parametrize("steps", [1, 5])
def test_default_adafactor_matches_numpy_reference(steps):
  p_jax, p_ref = _run_both(optim.OptimizerConfig(), steps)
  # FEW per optimizer update; the gradients do not depend on the parameters, so the steps' roundings add rather
  # than compound. Still < 1/10 of what dropping the 1e-5 weight decay moves (168 roundings per step).
  for name in p_ref:
    numerics.assert_close(np.asarray(p_jax[name]), p_ref[name], roundings=steps * numerics.FEW, err_msg=name)


def test_adafactor_options_match_numpy_reference():
  cfg = optim.OptimizerConfig(multiply_by_parameter_scale=True, beta1=0.9, clipping_threshold=0.5,
                              weight_decay_rate=1e-3, global_norm_clip=5.0, step_offset=-10)
  p_jax, p_ref = _run_both(cfg, 3)
  for name in p_ref:  # FEW per update, as above.
    numerics.assert_close(np.asarray(p_jax[name]), p_ref[name], roundings=3 * numerics.FEW, err_msg=name)


def test_reference_actually_factors_and_clips():
  hp = ref.AdafactorHParams()
  assert ref.factored_dims((130, 160), hp) == (0, 1)
  assert ref.factored_dims((300, 4), hp) is None
  assert ref.factored_dims((5, 16), hp) is None
  assert ref.factored_dims((3, 140, 128), hp) == (2, 1)
  # With beta2 = 0 and no clipping, an unfactored first step is lr * sign(g) (minus weight decay).
  p = {"w": np.ones((3, 4), np.float32)}
  g = {"w": np.arange(-6, 6, dtype=np.float32).reshape(3, 4) + 0.5}
  new, _ = ref.update(g, ref.init(p, hp), p, hp)
  numerics.assert_close(new["w"], 1.0 - 0.3 * np.sign(g["w"]).astype(np.float64) - 1e-5, roundings=numerics.FEW,
                        dtype=np.float64)  # The float64 reference: one update's roundings in float64.


def test_second_moment_decay_is_t5x_formula():
  steps = np.arange(0, 50)
  ours = np.asarray(optim.second_moment_decay(steps, 0.8))
  numerics.assert_close(ours, 1.0 - (steps + 1.0) ** -0.8, roundings=numerics.FEW)  # One pow, one subtraction.
  assert ours[0] == 0.0


def test_first_updates_use_t5x_beta2_sequence():
  # Unfactored leaf, two steps: v1 = g1^2 + eps (beta2_0 = 0), v2 = b g1^2 + (1 - b) g2^2 with b = 1 - 2**-0.8.
  cfg = optim.OptimizerConfig(clipping_threshold=None, weight_decay_rate=None)
  tx = optim.make_optimizer(cfg)
  params = {"p": jnp.zeros((4,))}
  g1, g2 = jnp.array([1.0, -2.0, 3.0, 0.5]), jnp.array([0.5, 1.0, -1.0, 2.0])
  state = tx.init(params)
  u1, state = tx.update({"p": g1}, state, params)
  numerics.assert_close(u1["p"], -0.3 * np.sign(g1), roundings=numerics.FEW)
  u2, state = tx.update({"p": g2}, state, params)
  b = 1.0 - 2.0 ** -0.8
  v2 = b * np.asarray(g1) ** 2 + (1 - b) * np.asarray(g2) ** 2
  numerics.assert_close(u2["p"], -0.3 * np.asarray(g2) / np.sqrt(v2), roundings=numerics.FEW)


def test_step_offset_shifts_the_decay():
  cfg = optim.OptimizerConfig(clipping_threshold=None, weight_decay_rate=None, step_offset=-99)
  tx = optim.make_optimizer(cfg)
  params = {"p": jnp.zeros((2,))}
  g = jnp.array([1.0, 2.0])
  u, _ = tx.update({"p": g}, tx.init(params), params)
  beta2 = ref.decay_rate_at(0, 0.8, -99)
  assert beta2 == pytest.approx(1 - 100 ** -0.8)
  # 1 - beta2 = 100^-0.8 ~ 0.025 is recovered from beta2 ~ 0.975 held in float32, which magnifies beta2's rounding
  # 1 / 0.025 = 40 times (halved again by the square root); FEW for the rest of the update.
  numerics.assert_close(u["p"], -0.3 * g / np.sqrt((1 - beta2) * g ** 2), roundings=40 + numerics.FEW)


def test_weight_decay_is_not_lr_scaled():
  cfg = optim.OptimizerConfig(weight_decay_rate=0.1)
  tx = optim.make_optimizer(cfg)
  params = {"p": jnp.full((3,), 2.0)}
  u, _ = tx.update({"p": jnp.zeros((3,))}, tx.init(params), params)
  numerics.assert_close(u["p"], -0.1 * 2.0, roundings=numerics.FEW)  # Zero gradient: only the decay moves p.


def test_schedules():
  # Float32 schedules: a few elementwise operations (a ratio, a min, a sqrt or a cosine) each.
  const = optim.learning_rate_fn(optim.OptimizerConfig())
  numerics.assert_close([float(const(0)), float(const(10_000))], [0.3, 0.3], roundings=numerics.FEW)
  warm = optim.learning_rate_fn(optim.OptimizerConfig(warmup_steps=10))
  numerics.assert_close([float(warm(s)) for s in (0, 5, 10, 100)], [0.0, 0.15, 0.3, 0.3], roundings=numerics.FEW)
  rsqrt = optim.learning_rate_fn(optim.OptimizerConfig(schedule="rsqrt", warmup_steps=100, learning_rate=1.0))
  numerics.assert_close([float(rsqrt(s)) for s in (50, 100, 400)], [0.5, 1.0, 0.5], roundings=numerics.FEW)
  cos = optim.learning_rate_fn(optim.OptimizerConfig(schedule="cosine", warmup_steps=10, total_steps=110,
                                                     end_learning_rate=0.01))
  numerics.assert_close([float(cos(s)) for s in (0, 10, 60, 110)], [0.0, 0.3, 0.155, 0.01], roundings=numerics.FEW)
  # The optimizer really uses the schedule: first update of a warmup schedule is zero.
  tx = optim.make_optimizer(optim.OptimizerConfig(warmup_steps=10, weight_decay_rate=None))
  params = {"p": jnp.ones((3,))}
  u, _ = tx.update({"p": jnp.ones((3,))}, tx.init(params), params)
  np.testing.assert_array_equal(u["p"], 0.0)


def test_bad_config_errors():
  with pytest.raises(ValueError, match="schedule='cosine' needs total_steps"):
    optim.OptimizerConfig(schedule="cosine")
  with pytest.raises(ValueError, match="optimizer='sgd'"):
    optim.OptimizerConfig(optimizer="sgd")
  with pytest.raises(ValueError, match="schedule='linear'"):
    optim.OptimizerConfig(schedule="linear")


def test_adamw_alternative_runs_and_decreases_a_quadratic():
  tx = optim.make_optimizer(optim.OptimizerConfig(optimizer="adamw", learning_rate=0.1, weight_decay_rate=0.0))
  params = {"w": jnp.array([3.0, -2.0])}
  state = tx.init(params)
  loss = lambda p: jnp.sum(p["w"] ** 2)
  for _ in range(20):
    u, state = tx.update(jax.grad(loss)(params), state, params)
    params = optax.apply_updates(params, u)
  assert float(loss(params)) < 13.0 * 0.5


def _mpt_tree():
  return {"shared_prompt": jnp.ones((6, 8)), "task": {"u": jnp.ones((6,)), "v": jnp.ones((8,))}}


@pytest.mark.parametrize("as_function", [False, True])
def test_label_learning_rates(as_function):
  params = _mpt_tree()
  labels = {"shared_prompt": "shared", "task": "task"}  # A prefix of the params tree.
  tx = optim.make_optimizer(optim.OptimizerConfig(weight_decay_rate=None),
                            param_labels=(lambda p: labels) if as_function else labels,
                            label_lrs={"shared": 0.3, "task": 0.05})
  grads = jax.tree.map(lambda p: jnp.full(p.shape, 0.7), params)  # Uniform gradients: |update| = lr exactly.
  u, _ = tx.update(grads, tx.init(params), params)
  numerics.assert_close(u["shared_prompt"], -0.3, roundings=numerics.FEW)
  numerics.assert_close(u["task"]["u"], -0.05, roundings=numerics.FEW)
  numerics.assert_close(np.asarray(u["shared_prompt"])[0, 0] / np.asarray(u["task"]["v"])[0], 6.0,
                        roundings=numerics.FEW)


def test_unknown_label_errors_with_label_and_paths():
  labels = {"shared_prompt": "shared", "task": {"u": "tsak", "v": "task"}}
  with pytest.raises(ValueError, match=r"'tsak' \(on task/u\)"):
    optim.make_optimizer(param_labels=labels, label_lrs={"shared": 0.3, "task": 0.05})
  tx = optim.make_optimizer(param_labels=lambda p: labels, label_lrs={"shared": 0.3, "task": 0.05})
  with pytest.raises(ValueError, match=r"'tsak' \(on task/u\)"):
    tx.init(_mpt_tree())
  with pytest.raises(ValueError, match="both param_labels and label_lrs"):
    optim.make_optimizer(param_labels=labels)


def test_mismatched_label_tree_errors():
  tx = optim.make_optimizer(param_labels=lambda p: {"other": "shared"}, label_lrs={"shared": 0.3})
  with pytest.raises(ValueError, match="param_labels do not match the trainable params"):
    tx.init(_mpt_tree())


def test_state_holds_only_the_trainable_leaves():
  prompt = {"prompt": jnp.zeros((100, 512))}  # Lester prompt: 100 < 128, so a full (unfactored) second moment.
  state = optim.make_optimizer().init(prompt)
  big = [x for x in jax.tree.leaves(state) if x.size > 1]
  assert [x.shape for x in big] == [(100, 512)]
  assert sum(x.size for x in jax.tree.leaves(state)) < 100 * 512 + 16


def test_config_is_gin_bindable():
  gin.clear_config()
  try:
    gin.parse_config("OptimizerConfig.learning_rate = 0.05\nOptimizerConfig.schedule = 'rsqrt'")
    cfg = optim.OptimizerConfig()
    assert (cfg.learning_rate, cfg.schedule, cfg.decay_rate) == (0.05, "rsqrt", 0.8)
  finally:
    gin.clear_config()
