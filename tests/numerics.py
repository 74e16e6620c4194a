"""How close two floating-point results must be, argued once for the whole suite.

Two float32 computations of one quantity that differ only in the order of their operations (another XLA CPU
thread count or tiling, packed against unpacked rows, a mesh against one device, JAX against a float64 NumPy
reference) differ by rounding alone. Rounding is bounded on the scale of the *terms*, not of each result:

* One operation rounds its exact result by at most u = eps / 2 relative (u = 2^-24 in float32).
* A sum of n terms taken in any order is off by at most (n - 1) u sum|x_i| (Higham, *Accuracy and Stability of
  Numerical Algorithms*, 2nd ed., section 4.2); two orders of it differ by at most twice that.
* So an entry that is a near-cancelling sum (a gradient entry near zero, a loss difference) carries the absolute
  error of its large neighbours, and a per-element relative tolerance (`rtol`) fails on exactly those entries on
  the first machine whose kernels sum in another order. That is how
  `test_packed_batch_gives_unpacked_losses_and_gradients` failed: 3e-6 off on an entry of 0.0045, in a gradient
  whose entries reach 1.4 (36 u of that scale).

Hence one rule, used by every tolerance test:

    max |actual - desired| <= roundings * u(dtype) * scale

`scale` is the expected (`desired`) array's largest magnitude unless the caller knows a better one (the sum of
|terms| of a result that cancels, such as a KL divergence of a distribution with itself); `roundings` counts the
units of roundoff allowed at that scale, taken from the budgets below, which follow from the computations the
tests run:

* `FEW` (16): a handful of elementwise operations on each side (a decayed weight, one optimizer update, a mean
  of a few rows): each rounds once, two sides.
* `sum_of(n)` (2 n): one reduction of n terms in two orders, the bound above.
* `NETWORK` (2^12): a forward or backward pass of the tests' small T5s (at most 8 layers of ~5 contractions, each
  of at most ~512 terms: model width, sequence length, heads x head_dim; as many again backward). The worst case
  (n u per contraction) is far above what happens: the roundings of a sum have random signs, so a contraction is
  typically off by sqrt(n) u (~23 u for 512 terms) of its inputs' scale, and the layer norms rescale between
  layers, so the layers' errors add: 8 x 10 x 23 ~ 1.8e3, and 2^12 is twice that. The suite's NETWORK comparisons
  use at most 1.5e3 on both thread settings. At 2.4e-4 of the scale it is still 40x below what a real defect
  moves (a dropped mask, a missing prompt row, a segment attending to its neighbour: >= 1e-2 of the scale).
* `IMPLEMENTATIONS` (2 NETWORK): the same network in two independent implementations (XLA against the reference
  PyTorch T5, against PEFT): each is up to NETWORK from the exact result on its own, so the difference gets NETWORK
  a side (measured against float64 runs of the golden model: XLA 1.3e3, PyTorch 1.9e3 roundings, its unscaled
  attention logits reaching ~300).
* `VOCAB_SCORES` (4 NETWORK): log-likelihoods through a log-softmax over T5's 32,128-token vocabulary. Each token's
  log p = logit - lse carries the logits' rounding twice, on the logits' scale (which can exceed |log p|, up to
  ~3x on the golden model), plus the random-walk rounding of the sum of V exps inside lse (sqrt(V) u ~ 180 u):
  up to ~6 NETWORK of typical error at the logits' scale in the worst token, far less over a whole score; the
  suite's score comparisons use at most 232 roundings of the score.
* `TRAJECTORY` (2^14): several optimiser steps of such a network, each step's rounding feeding the next (losses
  and parameters after a few steps of two equivalent runs). Adafactor's sign-like first step could turn a
  gradient entry that is zero within rounding into a full +-lr difference; with gradient entries ~1e-2 against
  rounding ~1e-9, that is a ~1e-7 chance per entry, accepted.

A quantity that is zero because two results agree (a KL of a distribution with itself) is compared with
`scale=` the size of the terms that cancel; a squared one (a mean squared error of two hidden states) through its
square root, at the scale of what was squared.

For bfloat16 pass `dtype=jnp.bfloat16` (u = 2^-8) with the number of bfloat16 roundings in the path.

Exact comparisons (`np.testing.assert_array_equal`) stay exact wherever the code promises bit-identity (resume,
rewinding, conversion, serialisation); host-side float64 scalars (metrics against scikit-learn, schedules
evaluated in Python) keep `pytest.approx`, whose relative 1e-6 of the value is ~10^10 float64 ulps.
"""
from typing import Any, Optional

import jax
import numpy as np

FEW = 16
NETWORK = 2 ** 12
IMPLEMENTATIONS = 2 * NETWORK
VOCAB_SCORES = 4 * NETWORK
TRAJECTORY = 2 ** 14


def sum_of(n: int) -> int:
  """Roundings of one n-term reduction computed in two orders: (n - 1) u sum|x| on each side."""
  return 2 * max(int(n), 1)


def unit_roundoff(dtype: Any = np.float32) -> float:
  """u = eps / 2 of `dtype` (2^-24 for float32, 2^-8 for bfloat16)."""
  import jax.numpy as jnp
  return float(jnp.finfo(dtype).eps) / 2


def tolerance(desired, *, roundings: int = NETWORK, scale: Optional[float] = None, dtype: Any = np.float32) -> float:
  """The largest |actual - desired| that rounding can explain: roundings * u(dtype) * scale."""
  if scale is None:
    scale = float(np.max(np.abs(np.asarray(desired, np.float64)))) if np.size(desired) else 0.0
  return roundings * unit_roundoff(dtype) * float(scale)


def _worst(actual, desired):
  a = np.asarray(actual, np.float64)
  d = np.asarray(desired, np.float64)
  if a.shape != d.shape and d.shape != () and d.size != 1:
    raise AssertionError(f"shapes differ: actual {a.shape}, desired {d.shape}")
  if not (np.all(np.isfinite(a)) and np.all(np.isfinite(d))):
    raise AssertionError(f"non-finite values: actual has {np.count_nonzero(~np.isfinite(a))}, "
                         f"desired has {np.count_nonzero(~np.isfinite(d))}")
  diff = np.abs(a - np.broadcast_to(d, a.shape))
  if diff.size == 0:
    return 0.0, ()
  index = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.ndim else ()
  return float(diff[index]), tuple(int(i) for i in index)


def kl_terms(log_p, log_q) -> float:
  """The scale of a KL divergence's terms, which cancel when the two agree: max over rows of
  sum_v p_v (|log p_v| + |log q_v|), from log-probabilities (last axis: the vocabulary)."""
  log_p, log_q = np.asarray(log_p, np.float64), np.asarray(log_q, np.float64)
  return float(np.max(np.sum(np.exp(log_p) * (np.abs(log_p) + np.abs(log_q)), axis=-1)))


def assert_close(actual, desired, *, roundings: int = NETWORK, scale: Optional[float] = None,
                 dtype: Any = np.float32, err_msg: str = "") -> None:
  """Fails unless max |actual - desired| <= roundings * u(dtype) * scale (scale: max |desired| by default)."""
  if scale is None and np.size(desired) and not np.any(np.asarray(desired, np.float64)):
    raise ValueError("desired is all zeros: pass scale= (the magnitude of the terms that cancelled)")
  worst, index = _worst(actual, desired)
  tol = tolerance(desired, roundings=roundings, scale=scale, dtype=dtype)
  if worst > tol:
    used = tol / roundings
    at = f" at {list(index)}" if index else ""
    raise AssertionError(
        f"{err_msg + ': ' if err_msg else ''}max |actual - desired| = {worst:.3e}{at} exceeds {roundings} "
        f"roundings x u x scale = {tol:.3e} ({worst / used if used else float('inf'):.0f} roundings of the scale)")


def assert_differs(actual, desired, *, roundings: int = NETWORK, scale: Optional[float] = None,
                   dtype: Any = np.float32, err_msg: str = "") -> None:
  """Fails unless the two differ by more than rounding can explain (something really changed)."""
  worst, _ = _worst(actual, desired)
  tol = tolerance(desired if scale is not None or np.any(np.asarray(desired, np.float64)) else actual,
                  roundings=roundings, scale=scale, dtype=dtype)
  if worst <= tol:
    raise AssertionError(f"{err_msg + ': ' if err_msg else ''}max |actual - desired| = {worst:.3e} is within "
                         f"rounding ({tol:.3e}): nothing changed")


def assert_trees_close(actual, desired, **kwargs) -> None:
  """assert_close on every leaf of two pytrees of the same structure; a failure names the leaf's path."""
  actual_leaves, actual_def = jax.tree_util.tree_flatten_with_path(actual)
  desired_leaves, desired_def = jax.tree_util.tree_flatten(desired)
  if actual_def != desired_def:
    raise AssertionError(f"trees differ: {actual_def} against {desired_def}")
  prefix = kwargs.pop("err_msg", "")
  for (path, a), d in zip(actual_leaves, desired_leaves):
    assert_close(a, d, err_msg=f"{prefix}{jax.tree_util.keystr(path)}", **kwargs)
