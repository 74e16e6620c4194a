"""Tests for xprompt_jax.training.losses against numpy, finite differences and hand-computed values."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_softmax, logsumexp

import numerics
from xprompt_jax.training import losses


def _batch(seed=0, b=3, l=5, v=11):
  rng = np.random.default_rng(seed)
  logits = rng.normal(scale=3.0, size=(b, l, v)).astype(np.float32)
  targets = rng.integers(0, v, size=(b, l)).astype(np.int32)
  weights = (rng.uniform(size=(b, l)) > 0.3).astype(np.float32)
  weights[0, 0] = 1.0
  return logits, targets, weights


def _numpy_ce(logits, targets, weights, z_loss, label_smoothing=0.0):
  x = logits.astype(np.float64)
  v = x.shape[-1]
  on, off = 1.0 - label_smoothing, label_smoothing / (v - 1)
  q = np.full(x.shape, off)
  np.put_along_axis(q, targets[..., None], on, axis=-1)
  ent = -np.sum(np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0), axis=-1)
  lse = logsumexp(x, axis=-1)
  z = z_loss * lse ** 2
  per_token = (-np.sum(q * log_softmax(x, axis=-1), axis=-1) - ent + z) * weights
  return per_token, z * weights


def _kl_terms(teacher, student, temperature=1.0):
  """The magnitude of the terms a KL sums (and cancels): max over tokens of sum_v p_v (|log p_v| + |log q_v|)."""
  return numerics.kl_terms(log_softmax(np.asarray(teacher, np.float64) / temperature, axis=-1),
                           log_softmax(np.asarray(student, np.float64) / temperature, axis=-1))


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_cross_entropy_and_z_loss_equal_numpy(label_smoothing):
  logits, targets, weights = _batch()
  total, z_term, per_token = losses.cross_entropy_with_z_loss(logits, targets, weights, z_loss=1e-2,
                                                              label_smoothing=label_smoothing)
  want, want_z = _numpy_ce(logits, targets, weights, 1e-2, label_smoothing)
  v, n = logits.shape[-1], targets.size
  # Per token: a logsumexp and a smoothing sum over the vocab (v terms each); the totals add n tokens on top.
  numerics.assert_close(per_token, want, roundings=numerics.sum_of(v))
  numerics.assert_close(total, want.sum(), roundings=numerics.sum_of(v) + numerics.sum_of(n))
  numerics.assert_close(z_term, want_z.sum(), roundings=numerics.sum_of(v) + numerics.sum_of(n))
  assert float(z_term) > 0.0


def test_perfect_smoothed_prediction_has_zero_loss():
  v, eps = 4, 0.2
  q = np.full((1, 1, v), eps / (v - 1))
  q[0, 0, 2] = 1 - eps
  _, _, per_token = losses.cross_entropy_with_z_loss(np.log(q).astype(np.float32), np.array([[2]]), z_loss=0.0,
                                                     label_smoothing=eps)
  # The loss cancels to 0 against the subtracted target entropy: the terms are of the entropy's size.
  numerics.assert_close(per_token, 0.0, roundings=numerics.sum_of(v), scale=-np.sum(q * np.log(q)))


def test_bf16_logits_are_computed_in_float32():
  logits, targets, weights = _batch(1)
  bf = jnp.asarray(logits, jnp.bfloat16)
  total, _, per_token = losses.cross_entropy_with_z_loss(bf, targets, weights)
  assert per_token.dtype == jnp.float32 and total.dtype == jnp.float32
  want, _ = _numpy_ce(np.asarray(bf.astype(jnp.float32)), targets, weights, 1e-4)
  numerics.assert_close(per_token, want, roundings=numerics.sum_of(logits.shape[-1]))


def test_gradient_matches_finite_differences_and_t5x_formula():
  logits, targets, weights = _batch(2, b=2, l=3, v=7)
  logits64 = logits.astype(np.float64)
  z = 0.05

  def f(x):
    return losses.cross_entropy_with_z_loss(x, targets, weights, z_loss=z)[0]

  grad = np.asarray(jax.grad(f)(jnp.asarray(logits)))
  # T5X's custom VJP: weight * ((1 + 2 z lse) softmax - onehot).
  lse = logsumexp(logits64, axis=-1, keepdims=True)
  onehot = np.eye(7)[targets]
  t5x = weights[..., None] * ((1 + 2 * z * lse) * np.exp(logits64 - lse) - onehot)
  numerics.assert_close(grad, t5x, roundings=numerics.sum_of(7))  # A 7-term logsumexp, then elementwise.
  # Central finite differences on a few coordinates, in float64 numpy.
  # Float64 central differences with h = 1e-4 are off by h^2 |f'''| / 6 ~ 1e-9 (truncation, far below float32
  # rounding of `grad`); 1e-3 of the gradient's scale bounds both, and a wrong gradient is off by O(1) of it.
  fd_tol = 1e-3 * np.abs(t5x).max()
  rng = np.random.default_rng(0)
  for idx in [tuple(rng.integers(0, s) for s in logits.shape) for _ in range(6)]:
    h = 1e-4
    up, down = logits64.copy(), logits64.copy()
    up[idx] += h
    down[idx] -= h
    fd = (_numpy_ce(up, targets, weights, z)[0].sum() - _numpy_ce(down, targets, weights, z)[0].sum()) / (2 * h)
    assert abs(grad[idx] - fd) <= fd_tol, (idx, grad[idx], fd)


def test_normalization_modes():
  per_token = np.array([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 0.0]], np.float32)
  weights = np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], np.float32)
  # Sums of 9 small integers and one division: a handful of roundings.
  numerics.assert_close(losses.normalize_loss(per_token, weights, None), 6.0, roundings=numerics.FEW)
  numerics.assert_close(losses.normalize_loss(per_token, weights, "sum"), 6.0, roundings=numerics.FEW)
  numerics.assert_close(losses.normalize_loss(per_token, weights, "num_real_target_tokens"), 2.0,
                        roundings=numerics.FEW)
  numerics.assert_close(losses.normalize_loss(per_token, weights, "NUM_TOTAL_TARGET_TOKENS"), 6.0 / 9,
                        roundings=numerics.FEW)
  # Sequence means 1.5 and 3.0; the empty third sequence does not count.
  numerics.assert_close(losses.normalize_loss(per_token, weights, "average_per_sequence"), 2.25,
                        roundings=numerics.FEW)
  numerics.assert_close(losses.normalize_loss(per_token, weights, 4.0), 1.5, roundings=numerics.FEW)
  for mode in ("num_real_target_tokens", "average_per_sequence"):  # An all-padding batch gives 0, not NaN.
    assert float(losses.normalize_loss(0 * per_token, 0 * weights, mode)) == 0.0
  with pytest.raises(ValueError, match="unknown mode 'per_token'"):
    losses.normalize_loss(per_token, weights, "per_token")
  with pytest.raises(ValueError, match="must be > 0"):
    losses.normalize_loss(per_token, weights, 0.0)


def test_cross_entropy_normalising_factor_is_applied_to_both_scalars():
  logits, targets, weights = _batch(3)
  total, z_term, per_token = losses.cross_entropy_with_z_loss(logits, targets, weights,
                                                              loss_normalizing_factor="num_real_target_tokens")
  v, n = logits.shape[-1], targets.size
  numerics.assert_close(total, np.sum(per_token) / weights.sum(), roundings=numerics.sum_of(n))  # One sum, two orders.
  _, want_z = _numpy_ce(logits, targets, weights, 1e-4)
  numerics.assert_close(z_term, want_z.sum() / weights.sum(), roundings=numerics.sum_of(v) + numerics.sum_of(n))


def test_shape_errors_name_both_shapes():
  logits, targets, weights = _batch()
  with pytest.raises(ValueError, match=r"logits shape \(3, 5, 11\) must be targets shape \(3, 4\)"):
    losses.cross_entropy_with_z_loss(logits, targets[:, :4])
  with pytest.raises(ValueError, match=r"weights shape \(3, 4\) != targets shape \(3, 5\)"):
    losses.cross_entropy_with_z_loss(logits, targets, weights[:, :4])


def test_sequence_log_likelihood_equals_numpy():
  logits, targets, weights = _batch(4)
  got = losses.sequence_log_likelihood(jnp.asarray(logits, jnp.bfloat16), targets, weights)
  assert got.shape == (3,) and got.dtype == jnp.float32
  lp = log_softmax(np.asarray(jnp.asarray(logits, jnp.bfloat16).astype(jnp.float32), np.float64), axis=-1)
  want = np.sum(np.take_along_axis(lp, targets[..., None], -1)[..., 0] * weights, axis=-1)
  # A log_softmax over the vocab per token, then a sum over the sequence's tokens.
  numerics.assert_close(got, want, roundings=numerics.sum_of(logits.shape[-1]) + numerics.sum_of(logits.shape[1]))


def test_kl_hand_computed_and_zero_for_equal():
  teacher = np.log(np.array([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]], np.float32))  # [1, 2, 3]
  student = np.log(np.array([[[0.25, 0.5, 0.25], [0.2, 0.6, 0.2]]], np.float32))
  kl0 = 0.5 * np.log(2.0) + 0.25 * np.log(0.5)  # = 0.25 ln 2
  kl1 = 0.2 * np.log(0.5) + 0.8 * np.log(0.8 / 0.6)
  # A KL cancels its terms p log p - p log q (3 per token): the error is on their scale, a few roundings each.
  terms = _kl_terms(teacher, student)
  got = losses.kl_divergence_loss(teacher, student, np.ones((1, 2), np.float32))
  numerics.assert_close(got, (kl0 + kl1) / 2, roundings=numerics.FEW, scale=terms)
  got_w = losses.kl_divergence_loss(teacher, student, np.array([[1.0, 0.0]], np.float32))
  numerics.assert_close(got_w, kl0, roundings=numerics.FEW, scale=terms)
  # Temperature 2: softmax of logits / 2, i.e. the square roots renormalised.
  p, q = np.sqrt(np.exp(teacher)), np.sqrt(np.exp(student))
  p, q = p / p.sum(-1, keepdims=True), q / q.sum(-1, keepdims=True)
  want_t = np.mean(np.sum(p * np.log(p / q), axis=-1))
  terms_t = _kl_terms(teacher, student, temperature=2.0)
  numerics.assert_close(losses.kl_divergence_loss(teacher, student, temperature=2.0), want_t,
                        roundings=numerics.FEW, scale=terms_t)
  numerics.assert_close(losses.kl_divergence_loss(teacher, student, temperature=2.0,
                                                  scale_by_temperature_squared=True), 4 * want_t,
                        roundings=numerics.FEW, scale=4 * terms_t)
  numerics.assert_close(losses.kl_divergence_loss(teacher, teacher), 0.0, roundings=numerics.FEW,
                        scale=_kl_terms(teacher, teacher))


def test_kl_does_not_differentiate_the_teacher():
  logits, _, _ = _batch(5)
  g_teacher = jax.grad(lambda t: losses.kl_divergence_loss(t, logits * 0.5))(jnp.asarray(logits))
  np.testing.assert_array_equal(g_teacher, 0.0)
  g_student = jax.grad(lambda s: losses.kl_divergence_loss(logits, s))(jnp.asarray(logits * 0.5))
  assert float(jnp.abs(g_student).max()) > 0.0


def test_hidden_mse_on_tiny_example():
  teacher = np.zeros((1, 3, 2), np.float32)
  student = np.array([[[1.0, 1.0], [2.0, 0.0], [5.0, 5.0]]], np.float32)
  mask = np.array([[1.0, 1.0, 0.0]], np.float32)
  # Position means 1.0 and 2.0; the masked third position is ignored.
  numerics.assert_close(losses.hidden_mse_loss(teacher, student, mask), 1.5, roundings=numerics.FEW)
  numerics.assert_close(losses.hidden_mse_loss(teacher, student), (1.0 + 2.0 + 25.0) / 3, roundings=numerics.FEW)
  with pytest.raises(ValueError, match=r"teacher hidden shape \(1, 3, 2\) != student hidden shape \(1, 2, 2\)"):
    losses.hidden_mse_loss(teacher, student[:, :2])


def test_prompt_distance():
  teacher = np.zeros((2, 2), np.float32)
  student = np.array([[1.0, -1.0], [2.0, 0.0]], np.float32)
  numerics.assert_close(losses.prompt_distance_loss(student, teacher), 1.5, roundings=numerics.FEW)
  g = jax.grad(lambda s: losses.prompt_distance_loss(s, teacher))(jnp.asarray(student))
  numerics.assert_close(g, student / 2.0, roundings=numerics.FEW)


def test_jit_friendly():
  logits, targets, weights = _batch(6)
  f = jax.jit(lambda x, t, w: losses.cross_entropy_with_z_loss(x, t, w, loss_normalizing_factor="average_per_sequence"))
  total, _, per_token = f(logits, targets, weights)
  assert np.isfinite(float(total)) and per_token.shape == targets.shape
