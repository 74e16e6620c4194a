"""Tests for xprompt_jax.pipelines.mpt_data: task sampling bounds, determinism/resume, routing ids, few-shot pools."""
import numpy as np
import pytest

import numerics
from xprompt_jax.pipelines import mpt_data
from xprompt_jax.tasks import vocab as vocab_lib
from xprompt_jax.training.data import DataConfig

RATES = np.array([0.5, 0.2, 0.2, 0.1])
TASKS = ("super_glue_rte_v102", "super_glue_cb_v102")


def test_draws_k_within_bounds_and_only_mixture_tasks():
  cfg = mpt_data.SamplingConfig(min_tasks=2, max_tasks=3, seed=1)
  ks = set()
  for step in range(300):
    ids = mpt_data.draw_task_ids(RATES, step, 8, cfg)
    assert ids.shape == (8,) and ids.dtype == np.int32
    assert set(ids.tolist()) <= set(range(4))
    k = len(set(ids.tolist()))
    assert 2 <= k <= 3
    ks.add(k)
  assert ks == {2, 3}  # Both ends of [2, 3] are drawn.
  all_k = {len(set(mpt_data.draw_task_ids(RATES, s, 8, mpt_data.SamplingConfig()).tolist())) for s in range(300)}
  assert all_k == {2, 3, 4}  # Default upper bound: every task (the paper's k).


def test_draws_are_deterministic_per_step_and_follow_rates():
  cfg = mpt_data.SamplingConfig(seed=3)
  a = [mpt_data.draw_task_ids(RATES, s, 16, cfg) for s in range(50)]
  b = [mpt_data.draw_task_ids(RATES, s, 16, cfg) for s in range(50)]
  assert all(np.array_equal(x, y) for x, y in zip(a, b))
  assert not all(np.array_equal(x, y) for x, y in zip(a, a[1:]))
  plain = np.concatenate([mpt_data.draw_task_ids(RATES, s, 64, mpt_data.SamplingConfig(stochastic=False))
                          for s in range(200)])
  # Statistical, not rounding: each frequency of n = 12,800 independent draws has binomial standard error
  # sqrt(p (1 - p) / n) <= 0.0044; 5 of them (a 6e-7 chance of a false failure per rate) still fail a wrong rate
  # (uniform mixing is >= 0.05 off, > 11 standard errors).
  se = np.sqrt(RATES * (1 - RATES) / plain.size)
  assert np.all(np.abs(np.bincount(plain, minlength=4) / plain.size - RATES) <= 5 * se), se
  counts = mpt_data.consumed_counts(RATES, 50, 16, cfg)
  np.testing.assert_array_equal(counts, np.bincount(np.concatenate(a), minlength=4))


def test_bad_sampling_settings_raise():
  with pytest.raises(ValueError, match="min_tasks"):
    mpt_data.SamplingConfig(min_tasks=0)
  with pytest.raises(ValueError, match="max_tasks"):
    mpt_data.SamplingConfig(min_tasks=3, max_tasks=2)
  with pytest.raises(ValueError, match="batch holds only 2"):
    mpt_data.draw_task_ids(RATES, 0, 2, mpt_data.SamplingConfig(min_tasks=4))
  with pytest.raises(ValueError, match="positive"):
    mpt_data.draw_task_ids([0.5, 0.0], 0, 4, mpt_data.SamplingConfig())


def _cfg(batch_size=4):
  return DataConfig(mixture_or_task_name=TASKS[0], inputs_length=32, targets_length=4, batch_size=batch_size,
                    shuffle_buffer_size=100)


def test_stream_attaches_task_ids_and_resumes(shared):
  del shared
  rates = mpt_data.examples_proportional_rates(TASKS)
  # Host float64 sizes over their sum.
  numerics.assert_close(rates, np.array([2490, 250]) / 2740, roundings=numerics.FEW, dtype=np.float64)
  fn = mpt_data.make_sampled_batches_fn(TASKS, mpt_data.SamplingConfig(seed=0))
  stream = fn(_cfg(), 0)
  batches = [next(stream) for _ in range(4)]
  for i, b in enumerate(batches):
    np.testing.assert_array_equal(b["task_id"], mpt_data.draw_task_ids(rates, i, 4, mpt_data.SamplingConfig()))
    assert b["encoder_input_tokens"].shape == (4, 32) and b["decoder_target_tokens"].shape == (4, 4)
    assert set(b["task_id"].tolist()) == {0, 1}  # K = 2 of 2 tasks every step.
  vocab = vocab_lib.get_default_vocabulary()
  for b in batches:  # RTE rows route to id 0, CB rows to id 1 (their inputs start with the task prefix).
    for tokens, tid in zip(b["encoder_input_tokens"], b["task_id"]):
      text = vocab.decode(tokens.tolist())
      assert text.startswith(("rte", "cb")) and text.startswith("rte") == (tid == 0), text
  resumed = fn(_cfg(), 2)
  for want in batches[2:]:
    got = next(resumed)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])


def test_few_shot_pool_takes_k_per_class_by_seed(shared):
  del shared
  pool = mpt_data.few_shot_pool("super_glue_cb_v102", _cfg(), shots=4, seed=0)
  classes = {row.tobytes() for row in pool["decoder_target_tokens"]}
  assert len(classes) == 3 and len(pool["decoder_target_tokens"]) == 12
  again = mpt_data.few_shot_pool("super_glue_cb_v102", _cfg(), shots=4, seed=0)
  np.testing.assert_array_equal(pool["encoder_input_tokens"], again["encoder_input_tokens"])
  other = mpt_data.few_shot_pool("super_glue_cb_v102", _cfg(), shots=4, seed=1)
  assert not np.array_equal(pool["encoder_input_tokens"], other["encoder_input_tokens"])
  batches = mpt_data.make_pool_batches_fn(pool, seed=0, task_id=0)(_cfg(batch_size=16), 3)
  b = next(batches)
  assert b["encoder_input_tokens"].shape == (16, 32) and np.all(b["task_id"] == 0)
  pool_rows = {r.tobytes() for r in pool["encoder_input_tokens"]}
  assert {r.tobytes() for r in b["encoder_input_tokens"]} == pool_rows  # 16 >= 12: every pool row appears.
  with pytest.raises(ValueError, match="shots"):
    mpt_data.few_shot_pool("super_glue_cb_v102", _cfg(), shots=0, seed=0)


def test_few_shot_pool_of_k_in_all_draws_uniformly_by_seed(shared):
  """The paper recipe's reading of "k training examples": k rows of the split, whatever their classes."""
  del shared
  rows = {r.tobytes() for r in mpt_data.few_shot_pool("super_glue_cb_v102", _cfg(), shots=1000, seed=0,
                                                       per_class=False)["encoder_input_tokens"]}
  assert len(rows) == 250  # CB's whole train split when k exceeds it.
  draws = [mpt_data.few_shot_pool("super_glue_cb_v102", _cfg(), shots=4, seed=s, per_class=False) for s in range(10)]
  assert all(len(d["encoder_input_tokens"]) == 4 for d in draws)
  assert all({r.tobytes() for r in d["encoder_input_tokens"]} <= rows for d in draws)
  assert len({d["encoder_input_tokens"].tobytes() for d in draws}) == 10  # Ten different draws.
  again = mpt_data.few_shot_pool("super_glue_cb_v102", _cfg(), shots=4, seed=3, per_class=False)
  np.testing.assert_array_equal(again["encoder_input_tokens"], draws[3]["encoder_input_tokens"])


def test_unknown_sizes_and_mixtures_raise(shared):
  del shared
  with pytest.raises(ValueError, match="mixture"):
    next(mpt_data.sampled_batches(["super_glue_v102_proportional"], _cfg(), rates=[1.0]))
  with pytest.raises(ValueError, match="pack"):
    mpt_data.task_dataset(TASKS[0], DataConfig(mixture_or_task_name=TASKS[0], pack=True))
