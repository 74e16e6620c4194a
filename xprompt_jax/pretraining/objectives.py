"""T5's unsupervised objectives on token ids: span corruption (T5 §3.1.4) and the prefix-LM split (LM adaptation).

seqio 0.0.20 ships no span-corruption preprocessor (it lives in the `t5` package, not installed), so the noise
mask follows the T5 paper's definition directly:

  * `num_noise = round(length * noise_density)` (clamped to [1, length - 1]) tokens are corrupted, in
    `num_spans = max(1, round(num_noise / mean_noise_span_length))` spans;
  * the noise tokens and the kept tokens are each cut into `num_spans` non-empty segments uniformly at random,
    and interleaved kept, noise, kept, noise, ... (the text always starts with a kept segment);
  * inputs: every noise span is replaced by one sentinel; targets: every kept span is replaced by one sentinel,
    so the targets read `<s0> noise span 0 <s1> noise span 1 ...`. Sentinels are the vocabulary's extra ids
    counting down from `first_sentinel` (32099 for the 32,100-token T5 vocabulary: `<extra_id_0>`).

LM adaptation (Lester et al., 2021) continues training a span-corruption checkpoint on T5's prefix-LM objective:
a chunk of natural text is split at a uniformly random point; the prefix is the input and the continuation the
target. Everything here is numpy over 1-D int arrays; `seqio_preprocessors` wraps it for tf.data.
"""
import functools
from typing import Callable

import numpy as np
import seqio
import tensorflow as tf

T5_FIRST_SENTINEL = 32099  # <extra_id_0> of the 32,000-piece T5 vocabulary with 100 extra ids.


def noise_counts(length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
  """(number of noise tokens, number of noise spans) of a `length`-token text, as T5 computes them."""
  if length < 2:
    raise ValueError(f"span corruption needs at least 2 tokens, got a text of length {length}")
  if not 0.0 < noise_density < 1.0:
    raise ValueError(f"noise_density must be in (0, 1), got {noise_density}")
  if not mean_noise_span_length >= 1.0:
    raise ValueError(f"mean_noise_span_length must be >= 1, got {mean_noise_span_length}")
  num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
  num_spans = max(int(round(num_noise / mean_noise_span_length)), 1)
  return num_noise, num_spans


def _random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
  """Lengths of `num_segments` non-empty segments of `num_items` items, uniformly over all such partitions."""
  cuts = rng.choice(num_items - 1, size=num_segments - 1, replace=False) + 1
  bounds = np.concatenate([[0], np.sort(cuts), [num_items]])
  return np.diff(bounds)


def random_spans_noise_mask(length: int, rng: np.random.Generator, noise_density: float = 0.15,
                            mean_noise_span_length: float = 3.0) -> np.ndarray:
  """Boolean [length] mask, True on corrupted tokens; starts with a kept span (T5's `random_spans_noise_mask`)."""
  num_noise, num_spans = noise_counts(length, noise_density, mean_noise_span_length)
  num_kept = length - num_noise
  num_spans = min(num_spans, num_noise, num_kept)
  noise_lengths = _random_segmentation(num_noise, num_spans, rng)
  kept_lengths = _random_segmentation(num_kept, num_spans, rng)
  interleaved = np.stack([kept_lengths, noise_lengths], axis=1).reshape(-1)
  return np.repeat(np.arange(2 * num_spans) % 2 == 1, interleaved)


def replace_spans_with_sentinels(tokens: np.ndarray, mask: np.ndarray, first_sentinel: int) -> np.ndarray:
  """Each maximal run of `mask` becomes one sentinel (first_sentinel, first_sentinel - 1, ...); the rest stays."""
  tokens, mask = np.asarray(tokens), np.asarray(mask, bool)
  if tokens.shape != mask.shape or tokens.ndim != 1:
    raise ValueError(f"tokens {tokens.shape} and mask {mask.shape} must be 1-D of the same length")
  starts = mask & ~np.concatenate([[False], mask[:-1]])
  sentinels = first_sentinel + 1 - np.cumsum(starts)
  out = np.where(starts, sentinels, tokens)
  return out[~mask | starts].astype(tokens.dtype)


def span_corruption(tokens: np.ndarray, rng: np.random.Generator, noise_density: float = 0.15,
                    mean_noise_span_length: float = 3.0,
                    first_sentinel: int = T5_FIRST_SENTINEL) -> tuple[np.ndarray, np.ndarray]:
  """(inputs, targets) of T5 span corruption of `tokens` (no EOS; the feature converter appends it)."""
  tokens = np.asarray(tokens)
  mask = random_spans_noise_mask(len(tokens), rng, noise_density, mean_noise_span_length)
  return (replace_spans_with_sentinels(tokens, mask, first_sentinel),
          replace_spans_with_sentinels(tokens, ~mask, first_sentinel))


def span_corruption_lengths(inputs_length: int, noise_density: float = 0.15,
                            mean_noise_span_length: float = 3.0) -> tuple[int, int]:
  """(raw chunk length, targets length) so a corrupted chunk plus EOS fills `inputs_length` exactly or less.

  The largest raw length whose inputs (kept tokens + one sentinel per span + EOS) fit; the targets (noise tokens
  + one sentinel per span + EOS) then have the returned length (T5's `random_spans_helper`).
  """
  def sizes(length):
    num_noise, num_spans = noise_counts(length, noise_density, mean_noise_span_length)
    return length - num_noise + num_spans + 1, num_noise + num_spans + 1

  if inputs_length < 3:
    raise ValueError(f"inputs_length={inputs_length} is too short for span corruption (>= 3)")
  length = 2
  while sizes(length + 1)[0] <= inputs_length:
    length += 1
  return length, sizes(length)[1]


def prefix_lm_split(tokens: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """(prefix, continuation) of `tokens` split at a uniformly random point; both non-empty."""
  tokens = np.asarray(tokens)
  if len(tokens) < 2:
    raise ValueError(f"the prefix-LM split needs at least 2 tokens, got {len(tokens)}")
  split = int(rng.integers(1, len(tokens)))
  return tokens[:split], tokens[split:]


# ----------------------------------------------------------------------------------------------------------------------
# seqio preprocessors (tf.data).


def concat_and_split(dataset: tf.data.Dataset, length: int, feature: str = "targets") -> tf.data.Dataset:
  """All token ids of `feature` concatenated across examples and cut into `length`-token chunks (T5's
  `reduce_concat_tokens` + `split_tokens`); the last partial chunk is dropped."""
  if length < 2:
    raise ValueError(f"chunk length must be >= 2, got {length}")
  tokens = dataset.map(lambda ex: ex[feature], num_parallel_calls=tf.data.AUTOTUNE).unbatch()
  return tokens.batch(length, drop_remainder=True).map(lambda t: {feature: t})


def _numpy_objective(fn: Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]):
  """A seqio map (one stateless seed per example) running the numpy objective `fn` on `targets`."""

  @seqio.map_over_dataset(num_seeds=1)
  def apply(ex, seed):
    def run(tokens, seed_pair):
      rng = np.random.default_rng([int(s) & 0xFFFFFFFF for s in seed_pair])
      inputs, targets = fn(tokens, rng)
      return inputs.astype(np.int32), targets.astype(np.int32)

    inputs, targets = tf.numpy_function(run, [tf.cast(ex["targets"], tf.int32), seed], [tf.int32, tf.int32],
                                        stateful=False)
    inputs.set_shape([None])
    targets.set_shape([None])
    return {"inputs": inputs, "targets": targets}

  return apply


def span_corruption_preprocessor(dataset: tf.data.Dataset, sequence_length, output_features, *,
                                 noise_density: float = 0.15, mean_noise_span_length: float = 3.0,
                                 first_sentinel: int = T5_FIRST_SENTINEL) -> tf.data.Dataset:
  """Tokenized `targets` text -> chunks sized for `sequence_length["inputs"]` -> span-corrupted examples."""
  del output_features
  raw_length, _ = span_corruption_lengths(sequence_length["inputs"], noise_density, mean_noise_span_length)
  chunks = concat_and_split(dataset, raw_length)
  fn = functools.partial(span_corruption, noise_density=noise_density,
                         mean_noise_span_length=mean_noise_span_length, first_sentinel=first_sentinel)
  return _numpy_objective(fn)(chunks)


def prefix_lm_preprocessor(dataset: tf.data.Dataset, sequence_length, output_features) -> tf.data.Dataset:
  """Tokenized `targets` text -> chunks that fit both features (with EOS) -> (prefix, continuation) examples."""
  del output_features
  length = min(sequence_length["inputs"], sequence_length["targets"]) - 1
  return _numpy_objective(prefix_lm_split)(concat_and_split(dataset, length))
