"""Tests for tasks/registry_utils.py: T5's GLUE text format, postprocessors, rank classification, name lookup."""
import pytest
import seqio
import tensorflow as tf

from xprompt_jax.tasks import glue  # noqa: F401  (registers tasks used below)
from xprompt_jax.tasks import registry_utils as ru


def _one(ds):
  return next(iter(ds.as_numpy_iterator()))


def test_glue_text_sorts_keys_and_marks_missing_labels():
  ds = tf.data.Dataset.from_tensors({"premise": "P.", "hypothesis": "H.", "label": tf.constant(-1, tf.int64),
                                     "idx": 4})
  ex = _one(ru.glue_text(ds, "rte", ("entailment", "not_entailment")))
  assert ex == {"idx": 4, "inputs": b"rte hypothesis: H. premise: P.", "targets": b"<unk>"}
  ds = tf.data.Dataset.from_tensors({"word": "w", "sentence1": "a", "sentence2": "b", "start1": 0,
                                     "label": tf.constant(1, tf.int64), "idx": 0})
  ex = _one(ru.glue_text(ds, "wic", ("False", "True"), feature_names=("sentence1", "sentence2", "word")))
  assert ex["inputs"] == b"wic sentence1: a sentence2: b word: w" and ex["targets"] == b"True"


def test_glue_text_multirc_strips_markup_and_keeps_group_ids():
  ds = tf.data.Dataset.from_tensors({
      "question": "Q?", "answer": "A", "paragraph": "<b>Sent 1: </b>X.<br>Y.", "label": tf.constant(0, tf.int64),
      "idx": {"paragraph": 1, "question": 2, "answer": 3}})
  ex = _one(ru.glue_text(ds, "multirc", ("False", "True"), ("question", "answer", "paragraph")))
  assert ex["inputs"] == b"multirc question: Q? answer: A paragraph: Sent 1: X. Y."
  assert (ex["idx/paragraph"], ex["idx/question"], ex["idx/answer"], ex["targets"]) == (1, 2, 3, b"False")


def test_postprocessors():
  assert ru.string_label_to_class_id(b"neutral", label_classes=("entailment", "neutral")) == 1
  assert ru.string_label_to_class_id("", label_classes=("entailment",)) == -1
  assert ru.string_to_float(b"2.4") == pytest.approx(2.4) and ru.string_to_float("x") == -1.0
  assert ru.qa_postprocessor(b"Paris", {"answers": [b"Paris", b"paris"]}, is_target=True) == ["Paris", "paris"]
  assert ru.qa_postprocessor(b"Paris", {"answers": [b"Paris"]}) == "Paris"
  assert ru.rank_classification_postprocessor(-1.5) == -1.5
  assert ru.rank_classification_postprocessor(None, {"idx": [3, 1], "is_correct": True}, is_target=True) == (3, True)


def test_rank_classification_size_mismatch_is_reported():
  ds = tf.data.Dataset.from_tensors({"inputs": "x"})
  with pytest.raises(tf.errors.InvalidArgumentError, match="inputs_fn and targets_fn sizes differ"):
    # Static shapes fail while the map is traced; dynamic ones when iterated.
    _one(ru.rank_classification(ds, inputs_fn=lambda ex: tf.fill([2], ex["inputs"]),
                                targets_fn=lambda ex: tf.constant(["a", "b", "c"]),
                                is_correct_fn=lambda ex: tf.constant([True, False, False])))


def test_get_task_or_mixture():
  assert ru.get_task_or_mixture("glue_rte_v002").name == "glue_rte_v002"
  with pytest.raises(ru.UnknownTaskError, match="'glue_rte_v002'"):
    ru.get_task_or_mixture("glue_rte_v02")
  err = ru.unknown_name_error("zzzzzzzzzzzzzzzzzz")
  assert "names are registered" in str(err)
  assert isinstance(ru.get_task_or_mixture("glue_rte_v002_rank"), seqio.Task)
