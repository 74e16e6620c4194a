"""Shared helpers of the task tests: seqio's tiny test vocabulary and registered tasks rebuilt on it."""
import os

import seqio

from xprompt_jax.tasks import vocab

TINY_VOCAB = seqio.SentencePieceVocabulary(
    os.path.join(os.path.dirname(seqio.__file__), "test_data", "sentencepiece", "sentencepiece.model"))


def tiny_copy(name: str) -> seqio.Task:
  """The registered task with seqio's tiny test vocabulary (fast; the real vocab is not the point here)."""
  task = seqio.get_mixture_or_task(name)
  return seqio.Task(name + "_tiny", task.source, output_features=vocab.make_output_features(TINY_VOCAB),
                    preprocessors=task.preprocessors, postprocess_fn=task.postprocessor)

