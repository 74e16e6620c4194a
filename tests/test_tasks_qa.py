"""Tests for tasks/qa.py: SQuAD and MRQA tasks build from TFDS mock data, format as T5 does, and wire to the metric."""

import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from xprompt_jax.evaluation import metrics
from xprompt_jax.tasks import qa
from xprompt_jax.tasks import sources
from task_helpers import tiny_copy



def first_examples(name: str, split: str, n: int = 2) -> list[dict]:
  with tfds.testing.mock_data(num_examples=n):
    ds = tiny_copy(name).get_dataset(None, split=split, shuffle=False, try_in_mem_cache=False)
    return list(ds.as_numpy_iterator())


QA_TASKS = ([("squad_v010_allanswers", "validation"), ("squad_v010", "train")]
            + [(qa.mrqa_task_name(c), "train") for c in qa.MRQA_IN_DOMAIN]
            + [(qa.mrqa_task_name(c), "validation") for c in qa.MRQA_IN_DOMAIN[:1]]
            + [(qa.mrqa_task_name(c), "test") for c in qa.MRQA_OUT_OF_DOMAIN])


@pytest.mark.parametrize("name,split", QA_TASKS)
def test_task_builds_from_mock_data(name, split):
  examples = first_examples(name, split)
  assert len(examples) == 2
  for ex in examples:
    assert ex["inputs_pretokenized"].startswith(b"question: ") and b" context: " in ex["inputs_pretokenized"]
    assert ex["inputs"].dtype == np.int32 and ex["inputs"][-1] == 1  # EOS appended
    assert ex["targets"].size >= 1 and ex["targets"][-1] == 1
    assert len(ex["answers"]) >= 1


def test_registered_names_and_splits():
  assert seqio.get_mixture_or_task("mrqa_natural_questions_v100").splits == ("train", "validation")
  # The out-of-domain sets: TFDS's `test` is the shared task's dev set, read as `validation` too.
  ood = seqio.get_mixture_or_task("mrqa_textbook_qa_v100")
  assert ood.splits == ("validation", "test") and ood.source._tfds_splits == {"validation": "test", "test": "test"}
  assert seqio.get_mixture_or_task("squad_v010_allanswers").source.tfds_name == "squad/v1.1:3.0.0"
  assert seqio.get_mixture_or_task("mrqa_bio_asq_v100").source.tfds_name == "mrqa/bio_asq:1.0.0"


def test_pad_punctuation_like_t5():
  out = qa.pad_punctuation(tf.constant("Who's (Dr.) Smith?  It's 1,000!")).numpy().decode()
  assert out == "Who ' s ( Dr . ) Smith ? It ' s 1 , 000 !"


def _squad_row(question, context, answers):
  return {"id": "x1", "title": "T", "question": question, "context": context,
          "answers": {"text": answers, "answer_start": [0] * len(answers)}}


def test_squad_format_keeps_all_answers_and_scores_100_on_its_own_answers():
  row = _squad_row("Where is the Eiffel Tower?", "The Eiffel Tower is in Paris.", ["Paris", "in Paris."])
  ds = qa.squad_text(tf.data.Dataset.from_tensors(row))
  ex = next(ds.as_numpy_iterator())
  assert ex["inputs"] == b"question: Where is the Eiffel Tower ? context: The Eiffel Tower is in Paris ."
  assert ex["targets"] == b"Paris"
  assert list(ex["answers"]) == [b"Paris", b"in Paris ."]
  task = seqio.get_mixture_or_task("squad_v010_allanswers")
  target = task.postprocess_fn(ex["targets"], example=ex, is_target=True)
  assert target == ["Paris", "in Paris ."]
  assert metrics.squad_em_f1([target], [task.postprocess_fn(b"in Paris", example=ex)]) == {"em": 100.0, "f1": 100.0}


def test_mrqa_format():
  row = {"qid": "q7", "question": "who wrote it", "context": "[PAR] [TLE] Book [SEP] Written by Ann.",
         "answers": ["Ann", "Ann ."], "subset": "SQuAD"}
  ex = next(qa.mrqa_text(tf.data.Dataset.from_tensors(row)).as_numpy_iterator())
  assert ex["inputs"] == b"question: who wrote it context: [PAR] [TLE] Book [SEP] Written by Ann."
  assert ex["targets"] == b"Ann" and ex["qid"] == b"q7" and list(ex["answers"]) == [b"Ann", b"Ann ."]


def test_local_mode_raises_naming_the_task():
  sources.set_data_source("local")
  try:
    with pytest.raises(sources.SplitUnavailableError, match=r"mrqa_drop_v100.*'test'"):
      seqio.get_mixture_or_task("mrqa_drop_v100").get_dataset(None, split="test", shuffle=False)
  finally:
    sources.set_data_source(None)
