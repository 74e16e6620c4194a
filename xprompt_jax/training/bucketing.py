"""Length bucketing: batches padded to the smallest of a few fixed encoder lengths instead of the maximum.

Padding every batch to `inputs_length` (512 in the Lester setting) spends most of the encoder on pad tokens when
inputs are short (RTE's median is ~60 tokens). Bucketing groups examples by length and pads each batch to the
smallest boundary that holds its longest example, so the step compiles once per boundary — a bounded set of
shapes, unlike padding to the longest example of each batch, which would recompile for almost every batch.

    examples = tokenized_examples("super_glue_rte_v102", "train", inputs_length=512, targets_length=8)
    for batch in bucketed_batches(examples, boundaries=(64, 128, 256, 512), batch_size=8, targets_length=8): ...

Batches carry T5X's unpacked encoder-decoder features (`encoder_input_tokens`, `decoder_input_tokens`,
`decoder_target_tokens`, `decoder_loss_weights`); the prompt is still prepended by the model.
"""
import bisect
from typing import Iterable, Iterator, Mapping, Optional, Sequence

import numpy as np

Example = Mapping[str, np.ndarray]


def tokenized_examples(task_name: str, split: str, inputs_length: int, targets_length: int, *,
                       shuffle: bool = False, seed: Optional[int] = 0, num_epochs: int = 1,
                       use_cached: bool = False) -> Iterator[dict[str, np.ndarray]]:
  """The task's preprocessed, tokenised and trimmed examples (`inputs`, `targets` ending in EOS), unpadded."""
  from xprompt_jax.training.data import get_task  # Local: keeps this module light for pure-numpy users.
  task = get_task(task_name)
  ds = task.get_dataset({"inputs": inputs_length, "targets": targets_length}, split=split, shuffle=shuffle,
                        seed=seed, num_epochs=num_epochs, use_cached=use_cached)
  for ex in ds.as_numpy_iterator():
    yield {"inputs": np.asarray(ex["inputs"], np.int32), "targets": np.asarray(ex["targets"], np.int32)}


def check_boundaries(boundaries: Sequence[int]) -> tuple[int, ...]:
  b = tuple(boundaries)
  if not b or any(not isinstance(x, (int, np.integer)) or x <= 0 for x in b) or list(b) != sorted(set(b)):
    raise ValueError(f"bucket boundaries must be strictly increasing positive ints, got {boundaries!r}")
  return b


def bucket_length(length: int, boundaries: Sequence[int]) -> int:
  """The smallest boundary >= length; ValueError naming both when the example is longer than every bucket."""
  i = bisect.bisect_left(boundaries, length)
  if i == len(boundaries):
    raise ValueError(f"an example of {length} input tokens is longer than the largest bucket {boundaries[-1]} "
                     f"(boundaries {tuple(boundaries)}); trim inputs to the largest boundary")
  return boundaries[i]


def pad_batch(examples: Sequence[Example], batch_size: int, inputs_length: int,
              targets_length: int) -> dict[str, np.ndarray]:
  """T5X unpacked features for up to `batch_size` examples padded to the given lengths (missing rows empty)."""
  enc = np.zeros((batch_size, inputs_length), np.int32)
  tgt = np.zeros((batch_size, targets_length), np.int32)
  for i, ex in enumerate(examples):
    inputs, targets = np.asarray(ex["inputs"]), np.asarray(ex["targets"])
    if inputs.shape[0] > inputs_length or targets.shape[0] > targets_length:
      raise ValueError(f"example {i} of the batch has {inputs.shape[0]} inputs / {targets.shape[0]} targets; the "
                       f"batch holds {inputs_length} / {targets_length}")
    enc[i, :inputs.shape[0]] = inputs
    tgt[i, :targets.shape[0]] = targets
  dec_in = np.zeros_like(tgt)
  dec_in[:, 1:] = tgt[:, :-1]
  return {"encoder_input_tokens": enc, "decoder_input_tokens": dec_in, "decoder_target_tokens": tgt,
          "decoder_loss_weights": (tgt > 0).astype(np.int32)}


def bucketed_batches(examples: Iterable[Example], boundaries: Sequence[int], batch_size: int,
                     targets_length: int) -> Iterator[dict[str, np.ndarray]]:
  """Batches of `batch_size` examples of one bucket each, emitted as soon as a bucket fills (stream order).

  At the end of the stream, each partly filled bucket is emitted once, completed with empty rows (no loss
  weight), so no example is dropped and every batch has one of `len(boundaries)` encoder shapes.
  """
  boundaries = check_boundaries(boundaries)
  pending: dict[int, list] = {b: [] for b in boundaries}
  for ex in examples:
    bucket = bucket_length(np.asarray(ex["inputs"]).shape[0], boundaries)
    pending[bucket].append(ex)
    if len(pending[bucket]) == batch_size:
      yield pad_batch(pending[bucket], batch_size, bucket, targets_length)
      pending[bucket] = []
  for bucket in boundaries:
    if pending[bucket]:
      yield pad_batch(pending[bucket], batch_size, bucket, targets_length)


def num_examples(batch: Mapping[str, np.ndarray]) -> int:
  """Real (non-empty) rows of a batch."""
  return int(np.sum(np.any(np.asarray(batch["decoder_loss_weights"]) > 0, axis=-1)))
