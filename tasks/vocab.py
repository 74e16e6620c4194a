"""The default T5 SentencePiece vocabulary (`cc_all.32000` + 100 extra ids) and the default output features.

The local copy `<shared>/vocab/t5_spm_32000.model` is used when the shared folder exists, else the public GCS file.
`seqio.SentencePieceVocabulary` loads its model lazily, so importing this module opens no file.
"""
import functools

import seqio

from xprompt_jax import paths

GCS_VOCAB_PATH = "gs://t5-data/vocabs/cc_all.32000/sentencepiece.model"
LOCAL_VOCAB_RELPATH = "vocab/t5_spm_32000.model"
EXTRA_IDS = 100


def default_vocab_path() -> str:
  """The T5 vocab file: the shared local copy when present, else the GCS path."""
  shared = paths.shared_dir()
  if shared is not None and (shared / LOCAL_VOCAB_RELPATH).is_file():
    return str(shared / LOCAL_VOCAB_RELPATH)
  return GCS_VOCAB_PATH


@functools.lru_cache(maxsize=None)
def get_default_vocabulary() -> seqio.SentencePieceVocabulary:
  """The cached T5 vocabulary (32,000 pieces + 100 sentinel ids)."""
  return seqio.SentencePieceVocabulary(default_vocab_path(), extra_ids=EXTRA_IDS)


def make_output_features(vocab: seqio.Vocabulary) -> dict[str, seqio.Feature]:
  """T5-style features: `inputs` (optional, for decoder-only use) and `targets`, both with EOS appended."""
  return {
      "inputs": seqio.Feature(vocabulary=vocab, add_eos=True, required=False),
      "targets": seqio.Feature(vocabulary=vocab, add_eos=True),
  }


DEFAULT_OUTPUT_FEATURES = make_output_features(get_default_vocabulary())
