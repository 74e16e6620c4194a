"""Training examples held in memory: the whole split or a fixed-seed k-shot draw, batched at fixed shapes.

XPrompt needs two things the endless training stream (`training.data.batches`) does not give: one exact pass
over the training set (the importance scores are an expectation over it) and the paper's low-resource setting
(32 training examples drawn with a fixed seed per task; k-shot comparisons use the same draw). Both start from
`load_examples`, the task's train split through the same seqio pipeline and T5X feature converter as training,
unshuffled:

    examples = load_examples(data_cfg)                        # {feature: [N, length]} numpy arrays
    shots, indices = draw(data_cfg, 32, seed=0)               # take(examples, draw_shots(N, 32, seed=0))
    for batch, n_valid in epoch_batches(shots, 8): ...        # one pass, last batch padded
    train(..., batches_fn=cycling_batches_fn(shots, seed=0))  # endless, reshuffled per epoch, resumable

Single-process only (every example is read by this process).
"""
import functools
from typing import Callable, Iterator, Optional

import numpy as np
import seqio

from xprompt_jax import jsonl_io
from xprompt_jax.training import data as data_lib

Examples = dict[str, np.ndarray]


def load_examples(data_cfg: data_lib.DataConfig, max_examples: Optional[int] = None) -> Examples:
  """The split `data_cfg.split` of the task as model features (first `max_examples` rows when given)."""
  if data_cfg.pack:
    raise ValueError("load_examples needs DataConfig.pack=False (packed rows mix several examples)")
  task = data_lib.get_task(data_cfg.mixture_or_task_name)
  lengths = data_cfg.task_feature_lengths
  ds = task.get_dataset(lengths, split=data_cfg.split, shuffle=False, num_epochs=1, use_cached=data_cfg.use_cached)
  ds = seqio.EncDecFeatureConverter(pack=False)(ds, lengths)
  if max_examples is not None:
    ds = ds.take(max_examples)
  rows = list(ds.as_numpy_iterator())
  if not rows:
    raise ValueError(f"{data_cfg.mixture_or_task_name}[{data_cfg.split}] yielded no examples")
  return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def count_examples(data_cfg: data_lib.DataConfig) -> int:
  """The number of examples of the split (one pass over the task's preprocessed rows)."""
  task = data_lib.get_task(data_cfg.mixture_or_task_name)
  ds = task.get_dataset(data_cfg.task_feature_lengths, split=data_cfg.split, shuffle=False, num_epochs=1,
                        use_cached=data_cfg.use_cached)
  return int(ds.reduce(0, lambda count, _: count + 1))


def num_rows(examples: Examples) -> int:
  return len(next(iter(examples.values())))


def take(examples: Examples, indices: np.ndarray) -> Examples:
  return {k: v[np.asarray(indices)] for k, v in examples.items()}


def draw_shots(num_examples: int, num_shots: int, seed: int) -> np.ndarray:
  """`num_shots` distinct row indices (sorted) drawn without replacement with `np.random.default_rng(seed)`."""
  if not 0 < num_shots <= num_examples:
    raise ValueError(f"cannot draw {num_shots} shots from a split of {num_examples} examples")
  return np.sort(np.random.default_rng(seed).choice(num_examples, num_shots, replace=False))


def draw(data_cfg: data_lib.DataConfig, num_shots: int, seed: int) -> tuple[Examples, np.ndarray]:
  """The k-shot training set: `num_shots` rows of the split drawn with `seed` (`draw_shots` over the whole
  split, read by `load_examples`), and the drawn row indices."""
  examples = load_examples(data_cfg)
  indices = draw_shots(num_rows(examples), num_shots, seed)
  return take(examples, indices), indices


def save_shots(path: str, data_cfg: data_lib.DataConfig, seed: int, indices: np.ndarray) -> None:
  """Lists a k-shot run's training rows (`draw`'s indices into the unshuffled split) in `path` (shots.json)."""
  jsonl_io.write_json_atomic(path, {"task": data_cfg.mixture_or_task_name, "split": data_cfg.split, "seed": seed,
                                    "indices": np.asarray(indices).tolist()})


def epoch_batches(examples: Examples, batch_size: int) -> Iterator[tuple[Examples, int]]:
  """One pass in row order as `(batch, n_valid)`; the last batch repeats its first row to stay `batch_size` rows
  (one compiled shape) and `n_valid` says how many rows are real."""
  n = num_rows(examples)
  for start in range(0, n, batch_size):
    index = np.arange(start, min(start + batch_size, n))
    valid = index.size
    index = np.concatenate([index, np.full(batch_size - valid, index[0])])
    yield take(examples, index), valid


def cycling_batches_fn(examples: Examples, seed: int) -> Callable[[data_lib.DataConfig, int], Iterator[Examples]]:
  """A `train(batches_fn=...)` cycling over `examples` forever: epoch e visits them in the order
  `np.random.default_rng([seed, e]).permutation(N)` and batch p holds entries p·B .. (p+1)·B - 1 of that endless
  sequence, so the stream is a pure function of `position` (a resumed run continues exactly)."""
  n = num_rows(examples)

  def batches_fn(data_cfg: data_lib.DataConfig, position: int) -> Iterator[Examples]:
    batch_size = data_cfg.batch_size
    cursor = position * batch_size
    while True:
      index = np.empty(batch_size, np.int64)
      for i in range(batch_size):
        epoch, offset = divmod(cursor + i, n)
        index[i] = _epoch_order(seed, epoch, n)[offset]
      cursor += batch_size
      yield take(examples, index)

  return batches_fn


@functools.lru_cache(maxsize=8)
def _epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(n)
