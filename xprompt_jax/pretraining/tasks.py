"""SeqIO pretraining tasks: `pretrain_span_corruption` and `pretrain_prefix_lm` over the local *training* text, and
`c4_v220_prefix_lm`, T5's prefix-LM objective over C4 (TFDS `c4/en:2.2.0`, as T5's c4_v220 tasks: the corpus Lester
et al. LM-adapt T5 1.1 on; its `validation` split gives the validation loss) for LM adaptation at scale.

The corpus is every string of the training files under `<shared>/data` (SuperGLUE `*/train.jsonl`, FewGLUE
`*/train.jsonl`, the GLUE re-split `*/train.json`); validation and test files are never opened, so the downstream
validation sets stay unseen by the backbone. Labels and ids are not text and are skipped. Each example's strings
form one document; duplicates (e.g. RTE appears in GLUE and SuperGLUE) are kept once. A fixed 2 % of the
documents (by a hash of their text) is held out as the pretraining `validation` split, for the validation loss
and the unigram baseline.
"""
import functools
import hashlib
import json
import pathlib
from typing import Any, Iterable, Optional

import seqio
import tensorflow as tf

from xprompt_jax import paths
from xprompt_jax.pretraining import objectives
from xprompt_jax.tasks import sources
from xprompt_jax.tasks import vocab as vocab_lib

C4_PREFIX_LM_TASK = "c4_v220_prefix_lm"
C4_TFDS = "c4/en:2.2.0"  # T5's c4_v220_* tasks: C4 as TFDS 2.2.0 builds it.
SPAN_CORRUPTION_TASK = "pretrain_span_corruption"
PREFIX_LM_TASK = "pretrain_prefix_lm"
TRAIN_FILE_PATTERNS = ("superglue/*/train.jsonl", "fewglue/*/train.jsonl", "glue_resplit/*/train.json")
NON_TEXT_KEYS = frozenset({"label", "idx", "version", "start1", "end1", "start2", "end2", "span1_index",
                           "span2_index", "entities", "start", "end"})
HOLDOUT_PERCENT = 2
SPLITS = ("train", "validation")


def data_dir() -> pathlib.Path:
  """`<shared>/data`; a clear error when the shared folder is absent (no TFDS corpus is wired for pretraining)."""
  shared = paths.shared_dir()
  if shared is None or not (shared / "data").is_dir():
    raise FileNotFoundError("pretraining reads the training text under <shared>/data (../shared or "
                            "$XPROMPT_SHARED), which is absent")
  return shared / "data"


def training_files(root: pathlib.Path) -> list[pathlib.Path]:
  """The training files under `root`, sorted; only names starting with 'train.' are ever returned."""
  files = sorted({p for pattern in TRAIN_FILE_PATTERNS for p in pathlib.Path(root).glob(pattern)})
  files = [p for p in files if p.name.startswith("train.")]
  if not files:
    raise FileNotFoundError(f"no training files matching {TRAIN_FILE_PATTERNS} under {root}")
  return files


def _read_text(path: pathlib.Path) -> str:
  with open(path, encoding="utf-8") as f:
    return f.read()


def _rows(path: pathlib.Path) -> Iterable[Any]:
  text = _read_text(path)
  if path.suffix == ".jsonl":
    for number, line in enumerate(text.splitlines(), 1):
      if line.strip():
        try:
          yield json.loads(line)
        except json.JSONDecodeError as e:
          raise ValueError(f"{path}:{number}: not valid JSON ({e.msg})") from e
  else:
    try:
      records = json.loads(text)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from e
    yield from (records.values() if isinstance(records, dict) else records)


def strings_of(value: Any, key: Optional[str] = None) -> list[str]:
  """Every non-empty string leaf of a JSON value, depth first, skipping keys in NON_TEXT_KEYS."""
  if key in NON_TEXT_KEYS:
    return []
  if isinstance(value, str):
    return [value.strip()] if value.strip() else []
  if isinstance(value, dict):
    return [s for k, v in value.items() for s in strings_of(v, k)]
  if isinstance(value, list):
    return [s for v in value for s in strings_of(v, key)]
  return []


def is_heldout(document: str) -> bool:
  """Whether a document belongs to the held-out `validation` split (2 % by a stable hash of its text)."""
  return int(hashlib.sha256(document.encode("utf-8")).hexdigest()[:8], 16) % 100 < HOLDOUT_PERCENT


@functools.lru_cache(maxsize=4)
def documents(root: str, split: str) -> tuple[str, ...]:
  """The de-duplicated documents of `split` ('train' | 'validation') from the training files under `root`."""
  if split not in SPLITS:
    raise ValueError(f"pretraining split {split!r} is not one of {SPLITS}")
  seen, out = set(), []
  for path in training_files(pathlib.Path(root)):
    for row in _rows(path):
      doc = " ".join(strings_of(row))
      if doc and doc not in seen:
        seen.add(doc)
        if is_heldout(doc) == (split == "validation"):
          out.append(doc)
  return tuple(out)


def _dataset_fn(split: str, shuffle_files: bool, seed: Optional[int] = None) -> tf.data.Dataset:
  del shuffle_files, seed  # One in-memory "file"; seqio shuffles the examples.
  docs = documents(str(data_dir()), split)
  return tf.data.Dataset.from_tensor_slices({"text": list(docs)})


def _source() -> seqio.FunctionDataSource:
  return seqio.FunctionDataSource(_dataset_fn, splits=SPLITS)


def _register(name: str, objective) -> None:
  if name in seqio.TaskRegistry.names():
    return
  seqio.TaskRegistry.add(
      name, source=_source(),
      preprocessors=[functools.partial(seqio.preprocessors.rekey, key_map={"targets": "text"}),
                     seqio.preprocessors.tokenize, objective, seqio.preprocessors.append_eos_after_trim],
      output_features=vocab_lib.DEFAULT_OUTPUT_FEATURES, metric_fns=[])


def _register_c4() -> None:
  if C4_PREFIX_LM_TASK in seqio.TaskRegistry.names():
    return
  seqio.TaskRegistry.add(
      C4_PREFIX_LM_TASK,
      source=sources.HybridSource(C4_PREFIX_LM_TASK, signature={}, tfds_name=C4_TFDS,
                                  tfds_splits={"train": "train", "validation": "validation"},
                                  hint="C4 has no local copy: LM adaptation reads TFDS (XPROMPT_DATA_SOURCE=tfds)."),
      preprocessors=[functools.partial(seqio.preprocessors.rekey, key_map={"targets": "text"}),
                     seqio.preprocessors.tokenize, objectives.prefix_lm_preprocessor,
                     seqio.preprocessors.append_eos_after_trim],
      output_features=vocab_lib.DEFAULT_OUTPUT_FEATURES, metric_fns=[])


_register(SPAN_CORRUPTION_TASK, objectives.span_corruption_preprocessor)
_register(PREFIX_LM_TASK, objectives.prefix_lm_preprocessor)
_register_c4()
