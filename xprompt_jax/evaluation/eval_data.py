"""An evaluation split in memory: seqio examples (for postprocessing) plus fixed-shape token arrays to batch.

`load_split` runs the task's pipeline once (`get_dataset(..., shuffle=False)`, inputs/targets trimmed to the
feature lengths with EOS kept by `append_eos_after_trim`) and pads every sequence to the fixed feature length, so
the jitted evaluation functions see a single input shape. `fixed_batches` yields `batch_size` rows at a time; the
last batch is filled with copies of its first row (real inputs, so method code that validates the batch is
happy) and reports how many rows are real, so the padding is dropped from the results.
"""
import dataclasses
from typing import Any, Iterator, Mapping, Optional

import numpy as np
import seqio


@dataclasses.dataclass(frozen=True)
class EvalSplit:
  """A task split held in memory: `examples[i]` is seqio's numpy example of row i of `inputs`/`targets`."""
  task_name: str
  split: str
  examples: list[dict[str, Any]]
  inputs: np.ndarray  # [N, inputs_length] int32, zero-padded.
  targets: np.ndarray  # [N, targets_length] int32, zero-padded.

  def __len__(self) -> int:
    return len(self.examples)


def pad_rows(rows, length: int, what: str) -> np.ndarray:
  """`[N, length]` int32 from variable-length rows; a row longer than `length` is an error naming it."""
  out = np.zeros((len(rows), length), np.int32)
  for i, r in enumerate(rows):
    r = np.asarray(r).reshape(-1)
    if r.size > length:
      raise ValueError(f"{what} row {i} has {r.size} tokens, more than the feature length {length}")
    out[i, :r.size] = r
  return out


def check_split(task: seqio.Task, split: str) -> None:
  splits = list(getattr(task, "splits", ()) or ())
  if splits and split not in splits:
    raise ValueError(f"task {task.name!r} has no split {split!r}; its splits are {splits}")


def is_rank_rows(element_spec: Mapping[str, Any]) -> bool:
  """Whether a dataset holds rank-classification rows (`idx` = [example_idx, option_idx], `is_correct`)."""
  idx = element_spec.get("idx")
  return "is_correct" in element_spec and idx is not None and idx.shape.as_list() == [2]


def load_split(task: seqio.Task, split: str, feature_lengths: Mapping[str, int],
               max_examples: Optional[int] = None) -> EvalSplit:
  """Reads, tokenises and pads `split` of `task` (the first `max_examples` rows when given).

  For rank-classification tasks (one row per candidate, `idx` = [example_idx, option_idx]) `max_examples` counts
  source examples, so every kept example keeps all of its candidate rows.
  """
  check_split(task, split)
  missing = [k for k in ("inputs", "targets") if k not in feature_lengths]
  if missing:
    raise ValueError(f"feature_lengths {dict(feature_lengths)} lacks {missing}")
  ds = task.get_dataset(dict(feature_lengths), split=split, shuffle=False, use_cached=False, num_epochs=1)
  if max_examples is not None:
    if is_rank_rows(ds.element_spec):  # Keep whole groups: the first `max_examples` source examples.
      ds = ds.take_while(lambda ex: ex["idx"][0] < max_examples)
    else:
      ds = ds.take(max_examples)
  examples = list(ds.as_numpy_iterator())
  if not examples:
    raise ValueError(f"task {task.name!r} split {split!r} yielded no examples")
  for k in ("inputs", "targets"):
    if k not in examples[0]:
      raise ValueError(f"task {task.name!r} examples lack the {k!r} feature (they have {sorted(examples[0])}); "
                       "the evaluator needs an encoder-decoder text-to-text task")
  return EvalSplit(task.name, split, examples,
                   pad_rows([e["inputs"] for e in examples], int(feature_lengths["inputs"]), f"{task.name} inputs"),
                   pad_rows([e["targets"] for e in examples], int(feature_lengths["targets"]),
                            f"{task.name} targets"))


def shift_right(targets: np.ndarray) -> np.ndarray:
  """Teacher-forcing decoder inputs: start token 0, then the targets without their last position."""
  return np.pad(targets, [(0, 0), (1, 0)])[:, :-1]


def model_batch(inputs: np.ndarray, targets: np.ndarray, task_id: Optional[int] = None) -> dict[str, np.ndarray]:
  """The T5X encoder-decoder features of one batch (what a method's `inject` receives)."""
  batch = {
      "encoder_input_tokens": inputs,
      "decoder_target_tokens": targets,
      "decoder_input_tokens": shift_right(targets),
      "decoder_loss_weights": (targets > 0).astype(np.float32),
  }
  if task_id is not None:
    batch["task_id"] = np.full((inputs.shape[0],), task_id, np.int32)
  return batch


def fixed_batches(data: EvalSplit, batch_size: int,
                  task_id: Optional[int] = None) -> Iterator[tuple[dict[str, np.ndarray], int]]:
  """`(batch, n_real)` pairs covering `data` in order; every batch has exactly `batch_size` rows."""
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  n = len(data)
  for start in range(0, n, batch_size):
    idx = np.arange(start, min(start + batch_size, n))
    n_real = idx.size
    idx = np.concatenate([idx, np.full(batch_size - n_real, idx[0])])
    yield model_batch(data.inputs[idx], data.targets[idx], task_id), n_real
