"""The suite's one tolerance rule (tests/numerics.py): reordered float32 sums pass, real errors fail."""
import jax.numpy as jnp
import numpy as np
import pytest

import numerics


def _sum_two_orders(n, seed=0):
  x = np.random.default_rng(seed).normal(size=(64, n)).astype(np.float32)
  forward = np.zeros(64, np.float32)
  for j in range(n):
    forward += x[:, j]
  backward = np.zeros(64, np.float32)
  for j in reversed(range(n)):
    backward += x[:, j]
  return forward, backward, np.abs(x).sum(1).max()


def test_reordered_sums_are_within_the_sum_budget_at_the_terms_scale():
  forward, backward, terms = _sum_two_orders(512)
  numerics.assert_close(forward, backward, roundings=numerics.sum_of(512), scale=terms)
  # The same pair fails a per-element relative tolerance on its near-cancelling entries: the rule exists for this.
  near_zero = np.abs(backward) < 0.05 * np.abs(backward).max()
  assert near_zero.any()
  with pytest.raises(AssertionError):
    np.testing.assert_allclose(forward, backward, rtol=1e-7, atol=0)


def test_a_real_error_fails_and_the_message_names_the_entry_and_the_budget():
  desired = np.linspace(-1.4, 1.4, 48, dtype=np.float32).reshape(2, 24)
  actual = desired.copy()
  actual[1, 14] += 1e-3  # ~ 1.2e4 roundings of the scale: a defect, not rounding.
  with pytest.raises(AssertionError, match=r"at \[1, 14\] exceeds 4096 roundings"):
    numerics.assert_close(actual, desired)
  actual[1, 14] = desired[1, 14] + 3e-6  # The packing test's difference: 36 roundings of a 1.4 scale.
  numerics.assert_close(actual, desired)


def test_zero_desired_needs_a_scale_and_nonfinite_values_fail():
  with pytest.raises(ValueError, match="pass scale="):
    numerics.assert_close(np.zeros(3), np.zeros(3))
  numerics.assert_close(np.full(3, 1e-8), 0.0, roundings=numerics.FEW, scale=10.0)
  with pytest.raises(AssertionError, match="non-finite"):
    numerics.assert_close(np.array([1.0, np.nan]), np.array([1.0, 1.0]))
  with pytest.raises(AssertionError, match="shapes differ"):
    numerics.assert_close(np.ones((2, 3)), np.ones((3, 2)))


def test_differs_and_trees_and_bfloat16_budgets():
  numerics.assert_differs(np.ones(4) * 1.01, np.ones(4))
  with pytest.raises(AssertionError, match="nothing changed"):
    numerics.assert_differs(np.ones(4) * (1 + 1e-7), np.ones(4))
  with pytest.raises(AssertionError, match="trees differ"):
    numerics.assert_trees_close({"a": np.ones(2), "b": np.ones(2)}, {"a": np.ones(2), "c": np.ones(2)})
  with pytest.raises(AssertionError, match=r"\['b'\]\['c'\]"):
    numerics.assert_trees_close({"a": np.ones(2), "b": {"c": np.ones(2)}},
                                {"a": np.ones(2), "b": {"c": np.full(2, 2.0)}})
  assert numerics.unit_roundoff() == 2.0 ** -24 and numerics.unit_roundoff(jnp.bfloat16) == 2.0 ** -8
  assert numerics.tolerance(np.array([-2.0, 1.0]), roundings=8) == 8 * 2.0 ** -24 * 2.0
