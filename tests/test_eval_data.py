"""Tests for the in-memory evaluation split: padding, fixed-size batches with their padding rows, loading a task."""

import numpy as np
import pytest
import seqio
import tensorflow as tf

from xprompt_jax.evaluation import eval_data
from xprompt_jax.tasks import registry_utils as ru
from task_helpers import TINY_VOCAB

FEATURES = {"inputs": seqio.Feature(TINY_VOCAB, add_eos=True), "targets": seqio.Feature(TINY_VOCAB, add_eos=True)}
TEXTS = [("this is a test sentence number %d which is long" % i, "yes" if i % 2 else "no") for i in range(7)]


def _dataset(split, shuffle_files=False, seed=None):
  del split, shuffle_files, seed
  return tf.data.Dataset.from_tensor_slices({"inputs": [t[0] for t in TEXTS], "targets": [t[1] for t in TEXTS]})


@pytest.fixture(scope="module")
def task():
  name = "eval_data_test_task"
  seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(
      name, source=seqio.FunctionDataSource(_dataset, splits=["validation"]),
      preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
      output_features=FEATURES)


@pytest.fixture(scope="module")
def rank_task():
  name = "eval_data_test_task_rank"
  seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(
      name, source=seqio.FunctionDataSource(_dataset, splits=["validation"]),
      preprocessors=[lambda ds: ru.rank_over_labels(ds, ("no", "yes")), seqio.preprocessors.tokenize,
                     seqio.preprocessors.append_eos_after_trim],
      output_features=FEATURES)


def split_of(n=5, in_len=4, tgt_len=3):
  inputs = np.arange(1, n * in_len + 1, dtype=np.int32).reshape(n, in_len)
  targets = np.arange(1, n * tgt_len + 1, dtype=np.int32).reshape(n, tgt_len)
  return eval_data.EvalSplit("t", "validation", [{"i": i} for i in range(n)], inputs, targets)


def test_pad_rows():
  out = eval_data.pad_rows([[5, 1], [7, 8, 1]], 4, "x")
  np.testing.assert_array_equal(out, [[5, 1, 0, 0], [7, 8, 1, 0]])
  assert out.dtype == np.int32
  with pytest.raises(ValueError, match="x row 1 has 3 tokens, more than the feature length 2"):
    eval_data.pad_rows([[1], [1, 2, 3]], 2, "x")


def test_model_batch_features():
  targets = np.array([[4, 5, 1, 0]], np.int32)
  batch = eval_data.model_batch(np.array([[9, 1]], np.int32), targets, task_id=3)
  np.testing.assert_array_equal(batch["decoder_input_tokens"], [[0, 4, 5, 1]])
  np.testing.assert_array_equal(batch["decoder_loss_weights"], [[1, 1, 1, 0]])
  np.testing.assert_array_equal(batch["task_id"], [3])
  assert "task_id" not in eval_data.model_batch(np.array([[9, 1]]), targets)


def test_fixed_batches_pad_the_last_batch_with_real_rows():
  data = split_of(5)
  out = list(eval_data.fixed_batches(data, 2))
  assert [n for _, n in out] == [2, 2, 1]
  assert all(b["encoder_input_tokens"].shape == (2, 4) for b, _ in out)
  last = out[-1][0]["encoder_input_tokens"]
  np.testing.assert_array_equal(last[0], data.inputs[4])
  np.testing.assert_array_equal(last[1], data.inputs[4])  # Padding row: a copy of the batch's first row.
  rows = np.concatenate([b["encoder_input_tokens"][:n] for b, n in out])
  np.testing.assert_array_equal(rows, data.inputs)
  with pytest.raises(ValueError, match="batch_size"):
    list(eval_data.fixed_batches(data, 0))


def test_load_split_reads_trims_and_pads(task):
  data = eval_data.load_split(task, "validation", {"inputs": 6, "targets": 4}, max_examples=5)
  assert len(data) == 5 and data.inputs.shape == (5, 6) and data.targets.shape == (5, 4)
  for i, ex in enumerate(data.examples):
    assert ex["inputs_pretokenized"].decode() == TEXTS[i][0]
    assert ex["inputs"][-1] == 1 and len(ex["inputs"]) == 6  # Trimmed, EOS kept.
    np.testing.assert_array_equal(data.inputs[i], ex["inputs"])
    np.testing.assert_array_equal(data.targets[i, :len(ex["targets"])], ex["targets"])
  assert len(eval_data.load_split(task, "validation", {"inputs": 6, "targets": 4})) == len(TEXTS)


def test_load_split_errors(task):
  with pytest.raises(ValueError, match=r"no split 'test'; its splits are \['validation'\]"):
    eval_data.load_split(task, "test", {"inputs": 6, "targets": 4})
  with pytest.raises(ValueError, match=r"lacks \['targets'\]"):
    eval_data.load_split(task, "validation", {"inputs": 6})


def test_max_examples_keeps_whole_rank_groups(rank_task):
  data = eval_data.load_split(rank_task, "validation", {"inputs": 6, "targets": 4}, max_examples=3)
  assert [tuple(ex["idx"]) for ex in data.examples] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
  assert sum(bool(ex["is_correct"]) for ex in data.examples) == 3
