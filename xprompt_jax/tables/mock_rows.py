"""TFDS mock rows with the real structure where random ones cannot be read: the multiple-choice builders.

`tfds.testing.mock_data` fills every feature at random, variable-length sequences included. For most builders that
is a valid row; for the multiple-choice ones it is not (ARC with 30 choices whose labels repeat, HellaSwag with 40
endings, RACE with different numbers of questions, options and answers), and no real row looks like that. Here those
builders' rows keep the random text and get the structure of the real data: ARC 4 choices labelled A-D, HellaSwag 4
endings, RACE one answer letter and 4 options per question, each answer a valid choice.
"""
import contextlib
from unittest import mock

import numpy as np

NUM_CHOICES = 4


def _arc(row: dict, rng: np.random.Generator) -> dict:
  choices = {"text": row["choices"]["text"][:NUM_CHOICES], "label": np.arange(NUM_CHOICES, dtype=np.int64)}
  return {**row, "choices": choices, "answerKey": np.int64(rng.integers(NUM_CHOICES))}


def _hellaswag(row: dict, rng: np.random.Generator) -> dict:
  return {**row, "endings": row["endings"][:NUM_CHOICES], "label": np.int32(rng.integers(NUM_CHOICES))}


def _race(row: dict, rng: np.random.Generator) -> dict:
  n = min(len(row["questions"]), 3)
  options = np.asarray([[f"option {q}{c}" for c in range(NUM_CHOICES)] for q in range(n)], dtype=object)
  answers = np.asarray([("A", "B", "C", "D")[rng.integers(NUM_CHOICES)] for _ in range(n)], dtype=object)
  return {**row, "questions": row["questions"][:n], "options": options, "answers": answers}


STRUCTURE = {"ai2_arc": _arc, "hellaswag": _hellaswag, "race": _race}  # TFDS builder name -> row fix.


def _structured_dataset(builder, num_examples: int):
  import tensorflow as tf
  from tensorflow_datasets.testing import mocking
  features = builder.info.features
  specs = features.get_tensor_info()
  fix = STRUCTURE[builder.name]

  def rows():
    rng = np.random.default_rng(0)
    for row in mocking.RandomFakeGenerator(features, num_examples):
      yield fix(row, rng)

  ds = tf.data.Dataset.from_generator(rows, output_types=tf.nest.map_structure(lambda t: t.dtype, specs),
                                      output_shapes=tf.nest.map_structure(lambda t: t.shape, specs))
  return ds.apply(tf.data.experimental.assert_cardinality(num_examples))


@contextlib.contextmanager
def structured(num_examples: int):
  """Inside `tfds.testing.mock_data(num_examples=...)`: the STRUCTURE builders' mock rows made valid."""
  from tensorflow_datasets.core import dataset_builder
  default = dataset_builder.FileReaderBuilder._as_dataset  # pylint: disable=protected-access  (mock_data's)

  def as_dataset(self, *args, **kwargs):
    if self.name in STRUCTURE:
      return _structured_dataset(self, num_examples)
    return default(self, *args, **kwargs)

  with mock.patch.object(dataset_builder.FileReaderBuilder, "_as_dataset", as_dataset):
    yield
