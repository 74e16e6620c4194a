"""Span corruption (statistics, sentinel layout, lengths), the prefix-LM split and their seqio preprocessors."""
import numpy as np
import pytest
import seqio
import tensorflow as tf

from xprompt_jax.pretraining import objectives as obj


def _reconstruct(inputs, targets, first_sentinel=obj.T5_FIRST_SENTINEL):
  """The original tokens from (inputs, targets): each input sentinel is replaced by the target span it heads."""
  spans, current = {}, None
  for t in targets:
    if t > first_sentinel - 100:
      current = int(t)
      spans[current] = []
    else:
      spans[current].append(int(t))
  out = []
  for t in inputs:
    out.extend(spans[int(t)] if t > first_sentinel - 100 else [int(t)])
  return out


def test_noise_mask_statistics_follow_t5():
  rng = np.random.default_rng(0)
  length = 512
  num_noise, num_spans = obj.noise_counts(length, 0.15, 3.0)
  assert (num_noise, num_spans) == (77, 26)
  span_lengths = []
  for _ in range(200):
    mask = obj.random_spans_noise_mask(length, rng)
    assert mask.shape == (length,) and mask.sum() == num_noise
    assert not mask[0]  # Always starts with a kept span.
    starts = np.flatnonzero(mask & ~np.concatenate([[False], mask[:-1]]))
    ends = np.flatnonzero(mask & ~np.concatenate([mask[1:], [False]]))
    assert len(starts) == num_spans
    span_lengths.extend(ends - starts + 1)
  assert np.mean(span_lengths) == pytest.approx(num_noise / num_spans)
  assert min(span_lengths) >= 1 and max(span_lengths) > 3  # Random lengths, not fixed ones.
  # Each noise token is equally likely to be corrupted away from the first position.
  freq = np.mean([obj.random_spans_noise_mask(64, rng) for _ in range(3000)], axis=0)
  assert freq[0] == 0 and np.all(np.abs(freq[8:-8] - freq[8:-8].mean()) < 0.06)


def test_sentinel_layout_and_reconstruction():
  rng = np.random.default_rng(1)
  tokens = rng.integers(3, 30000, size=200)
  inputs, targets = obj.span_corruption(tokens, rng)
  in_sentinels = inputs[inputs >= 32000]
  tgt_sentinels = targets[targets >= 32000]
  n = len(in_sentinels)
  np.testing.assert_array_equal(in_sentinels, 32099 - np.arange(n))
  np.testing.assert_array_equal(tgt_sentinels, 32099 - np.arange(n))
  assert targets[0] == 32099 and inputs[0] != 32099  # Targets open with <extra_id_0>; inputs start with text.
  assert _reconstruct(inputs, targets) == tokens.tolist()
  assert len(targets) - n == 30  # round(200 * 0.15) noise tokens.


def test_replace_spans_with_sentinels_and_errors():
  out = obj.replace_spans_with_sentinels(np.array([5, 6, 7, 8, 9]), np.array([0, 1, 1, 0, 1], bool), 99)
  np.testing.assert_array_equal(out, [5, 99, 8, 98])
  with pytest.raises(ValueError, match="same length"):
    obj.replace_spans_with_sentinels(np.array([1, 2]), np.array([True]), 99)
  with pytest.raises(ValueError, match="noise_density"):
    obj.noise_counts(10, 1.5, 3.0)
  with pytest.raises(ValueError, match="at least 2 tokens"):
    obj.span_corruption(np.array([4]), np.random.default_rng(0))


@pytest.mark.parametrize("inputs_length", [64, 128, 512])
def test_span_corruption_lengths_fill_inputs(inputs_length):
  raw, targets_length = obj.span_corruption_lengths(inputs_length)
  rng = np.random.default_rng(2)
  inputs, targets = obj.span_corruption(rng.integers(3, 30000, size=raw), rng)
  assert len(inputs) + 1 <= inputs_length and len(targets) + 1 == targets_length
  bigger, _ = obj.span_corruption_lengths(inputs_length + 5)
  assert bigger > raw
  if inputs_length == 512:
    assert (raw, targets_length) == (568, 114)  # T5's published numbers for 512-token inputs.


def test_prefix_lm_split_is_uniform_and_lossless():
  rng = np.random.default_rng(3)
  tokens = np.arange(10, 20)
  seen = set()
  for _ in range(300):
    prefix, rest = obj.prefix_lm_split(tokens, rng)
    assert len(prefix) >= 1 and len(rest) >= 1
    np.testing.assert_array_equal(np.concatenate([prefix, rest]), tokens)
    seen.add(len(prefix))
  assert seen == set(range(1, 10))


def _token_dataset(rows):
  return tf.data.Dataset.from_generator(lambda: ({"targets": np.array(r, np.int32)} for r in rows),
                                        output_signature={"targets": tf.TensorSpec([None], tf.int32)})


def test_concat_and_split_chunks_the_stream():
  chunks = list(obj.concat_and_split(_token_dataset([[1, 2, 3], [4, 5], [6, 7, 8, 9]]), 4).as_numpy_iterator())
  assert [c["targets"].tolist() for c in chunks] == [[1, 2, 3, 4], [5, 6, 7, 8]]


def test_seqio_preprocessors_are_seeded_and_sized():
  rows = [list(range(100 + 40 * i, 140 + 40 * i)) for i in range(20)]

  def run(pre, seed, lengths):
    with seqio.utils.map_seed_manager(seed):
      return list(pre(_token_dataset(rows), lengths, None).as_numpy_iterator())

  lengths = {"inputs": 64, "targets": 16}
  a, b, c = (run(obj.span_corruption_preprocessor, s, lengths) for s in (7, 7, 8))
  raw, targets_length = obj.span_corruption_lengths(64)
  assert len(a) == 800 // raw
  for ex in a:
    assert len(ex["inputs"]) + 1 <= 64 and len(ex["targets"]) + 1 == targets_length
  assert all(np.array_equal(x["targets"], y["targets"]) for x, y in zip(a, b))
  assert not all(np.array_equal(x["targets"], y["targets"]) for x, y in zip(a, c))
  flat = sum(rows, [])
  assert _reconstruct(a[1]["inputs"], a[1]["targets"]) == flat[raw:2 * raw]
  lm = run(obj.prefix_lm_preprocessor, 7, {"inputs": 32, "targets": 24})
  assert len(lm) == 800 // 23
  assert np.concatenate([lm[0]["inputs"], lm[0]["targets"]]).tolist() == flat[:23]
