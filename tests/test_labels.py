"""Tests for label candidates: read from each registered task's postprocessor and consistent with it."""

import numpy as np
import pytest
import seqio

from xprompt_jax import tasks  # noqa: F401  (registers the tasks)
from xprompt_jax.evaluation import labels
from xprompt_jax.tasks import registry_utils as ru
from task_helpers import TINY_VOCAB



@pytest.mark.parametrize("name,expected", [
    ("super_glue_rte_v102", ["entailment", "not_entailment"]),
    ("super_glue_cb_v102", ["entailment", "contradiction", "neutral"]),
    ("super_glue_copa_v102", ["choice1", "choice2"]),
    ("super_glue_multirc_v102", ["False", "True"]),
    ("glue_sst2_v002", ["negative", "positive"]),
    ("glue_mnli_v002", ["entailment", "neutral", "contradiction"]),
    ("super_glue_record_v102", None),
    ("glue_stsb_v002", None),
    ("super_glue_wsc_v102_simple_eval", None),
    ("super_glue_rte_v102_rank", None),
])
def test_label_candidates_of_known_tasks(name, expected):
  assert labels.label_candidates(name) == expected
  assert labels.label_candidates(ru.get_task_or_mixture(name)) == expected


def test_every_candidate_postprocesses_to_its_class_id():
  checked = 0
  for name in seqio.TaskRegistry.names():
    task = seqio.get_mixture_or_task(name)
    words = labels.label_candidates(task)
    if words is None:
      continue
    for i, word in enumerate(words):
      out = task.postprocess_fn(word, example=None, is_target=False)
      value = out["value"] if isinstance(out, dict) else out
      assert value == i, (name, word, out)
    checked += 1
  assert checked >= 15  # SuperGLUE and GLUE classification tasks.


def test_bad_names():
  with pytest.raises(ru.UnknownTaskError, match="super_glue_cb_v102"):
    labels.label_candidates("super_glue_cb_v12")
  with pytest.raises(TypeError, match="mixture"):
    labels.label_candidates("glue_v002_proportional")


def test_tokenize_candidates_pads_and_appends_eos():
  rows = labels.tokenize_candidates(["a", "abc def"], TINY_VOCAB)
  first, second = list(TINY_VOCAB.encode("a")), list(TINY_VOCAB.encode("abc def"))
  assert rows.dtype == np.int32 and rows.shape == (2, max(len(first), len(second)) + 1)
  np.testing.assert_array_equal(rows[0, :len(first) + 1], first + [1])
  assert not rows[0, len(first) + 1:].any()
  np.testing.assert_array_equal(rows[1, :len(second) + 1], second + [1])
  with pytest.raises(ValueError, match="no label words"):
    labels.tokenize_candidates([], TINY_VOCAB)
  with pytest.raises(ValueError, match="''"):
    labels.tokenize_candidates([""], TINY_VOCAB)


def test_candidate_rows_equal_the_task_targets(shared):
  del shared
  task = seqio.get_mixture_or_task("super_glue_rte_v102")
  vocab = task.output_features["targets"].vocabulary
  rows = labels.tokenize_candidates(labels.label_candidates(task), vocab)
  np.testing.assert_array_equal(rows[0, :5], [3, 35, 5756, 297, 1])  # "entailment" as the task tokenises it.
  ex = next(task.get_dataset({"inputs": 32, "targets": 8}, split="validation", shuffle=False).as_numpy_iterator())
  k = labels.label_candidates(task).index(ex["targets_pretokenized"].decode())
  np.testing.assert_array_equal(rows[k, :len(ex["targets"])], ex["targets"])
