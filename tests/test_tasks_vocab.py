"""Tests for tasks/vocab.py: the T5 vocabulary (shared copy or GCS path), its caching and the output features."""
from xprompt_jax import paths
from xprompt_jax.tasks import vocab as vocab_lib


def test_real_t5_vocab_encodes_the_published_ids(shared):
  vocab = vocab_lib.get_default_vocabulary()
  assert vocab_lib.default_vocab_path() == str(shared / "vocab" / "t5_spm_32000.model")
  assert vocab.encode("The quick brown fox jumps over the lazy dog.") == [
      37, 1704, 4216, 3, 20400, 4418, 7, 147, 8, 19743, 1782, 5]
  assert vocab.vocab_size == 32100 and vocab.eos_id == 1 and vocab.pad_id == 0
  assert vocab.decode([37, 1704, 4216]) == "The quick brown"


def test_vocabulary_is_cached():
  assert vocab_lib.get_default_vocabulary() is vocab_lib.get_default_vocabulary()


def test_falls_back_to_gcs_without_shared_folder(monkeypatch):
  monkeypatch.setattr(paths, "shared_dir", lambda: None)
  assert vocab_lib.default_vocab_path() == "gs://t5-data/vocabs/cc_all.32000/sentencepiece.model"


def test_output_features_follow_t5():
  features = vocab_lib.DEFAULT_OUTPUT_FEATURES
  assert set(features) == {"inputs", "targets"}
  assert features["inputs"].add_eos and not features["inputs"].required
  assert features["targets"].add_eos and features["targets"].required
  assert features["inputs"].vocabulary is vocab_lib.get_default_vocabulary()
