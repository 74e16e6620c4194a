"""Linear probes of a frozen backbone: padding-free pooled features, and a probe that reads a lexical label."""
import functools

import jax
import numpy as np
import pytest
import seqio
import tensorflow as tf

from task_helpers import TINY_VOCAB
from xprompt_jax.evaluation import probe
from xprompt_jax.models.config import PRESETS
from xprompt_jax.models.t5 import T5, init_params
from xprompt_jax.tasks import vocab

CONFIG = PRESETS["t5_1_1_tiny"].replace(vocab_size=TINY_VOCAB.vocab_size)


@functools.lru_cache(maxsize=None)
def _model():
  return T5(CONFIG), init_params(CONFIG, jax.random.PRNGKey(0))


def _sentiment_task() -> seqio.Task:
  """Label "positive" iff the sentence says "good" (the other words are the same, shuffled): readable from the bag
  of words alone."""
  rng = np.random.default_rng(0)
  fillers = ["the", "movie", "was", "very", "really"]

  def rows(split, shuffle_files=False, seed=None):
    del shuffle_files, seed
    n = 300 if split == "train" else 100
    out = {"inputs": [], "targets": []}
    for i in range(n):
      positive = bool(rng.integers(2)) if split == "train" else i % 2 == 0
      words = fillers + ["good" if positive else "bad"]
      rng.shuffle(words)
      out["inputs"].append(" ".join(words))
      out["targets"].append("positive" if positive else "negative")
    return tf.data.Dataset.from_tensor_slices(out)

  return seqio.Task("probe_test_sentiment", seqio.FunctionDataSource(rows, splits=("train", "validation")),
                    output_features=vocab.make_output_features(TINY_VOCAB),
                    preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim])


def test_pooled_features_ignore_padding():
  model, params = _model()
  row = np.array([[5, 9, 12, 1] + [0] * 12], np.int32)
  longer = np.array([[5, 9, 12, 1] + [0] * 28], np.int32)
  a, b = probe.pooled_features(model, params, row, 4), probe.pooled_features(model, params, longer, 4)
  for name in ("encoder", "embeddings"):
    assert a[name].shape == (1, CONFIG.emb_dim)
    np.testing.assert_allclose(a[name], b[name], rtol=2e-5, atol=2e-6)
  np.testing.assert_allclose(a["embeddings"][0], np.asarray(params["token_embedder"]["embedding"])[[5, 9, 12, 1]]
                             .mean(0), rtol=1e-5)


def test_probe_reads_a_lexical_label_above_the_majority_class():
  model, params = _model()
  out = probe.probe_task(model, params, _sentiment_task(), {"inputs": 48, "targets": 8}, train_examples=300)
  assert out["train_rows"] == 300 and out["val_rows"] == 100 and out["majority"] == pytest.approx(50.0)
  assert out["embeddings"] >= 95.0  # "good" vs "bad" is one embedding apart.
  assert out["encoder"] > 75.0


def test_probe_needs_two_labels():
  with pytest.raises(ValueError, match="at least two labels"):
    probe.probe_accuracy(np.zeros((4, 2)), ["a"] * 4, np.zeros((2, 2)), ["a", "b"])
