"""Data sources that read a task either from local files under `<shared>/data` or from TFDS.

One registered task name works both ways: `HybridSource` decides per split, when the dataset is built, which source to
use. The choice follows one setting (`get_data_source_mode()`):

* `set_data_source("local" | "tfds" | "auto")` from code, else
* the gin binding `data_source.mode = "..."`, else
* the environment variable `XPROMPT_DATA_SOURCE`, else
* `auto`: the local file when it exists for that task and split, otherwise TFDS.

Local readers turn the official file formats (SuperGLUE jsonl, GLUE tsv, the re-split GLUE json) into examples with the
same features and label conventions as the TFDS builders (`super_glue/*:1.0.2`, `glue/*:2.0.0`), so the task
preprocessors never know where the data came from. Malformed rows raise `LocalDataError` naming the file and line.
"""
import csv
import dataclasses
import functools
import json
import os
import pathlib
from typing import Any, Callable, Mapping, Optional, Sequence

import gin
import seqio
import tensorflow as tf

from xprompt_jax import paths

ENV_VAR = "XPROMPT_DATA_SOURCE"
MODES = ("auto", "local", "tfds")

Example = dict[str, Any]
RowReader = Callable[[pathlib.Path], list[Example]]


class LocalDataError(ValueError):
  """A local data file is malformed (the message names the file and line)."""


class SplitUnavailableError(ValueError):
  """A split is not available from the selected source (the message names task, split and folder)."""


# ----------------------------------------------------------------------------------------------------------------------
# The source setting.

_MODE_OVERRIDE: Optional[str] = None


def _check_mode(mode: str, where: str) -> str:
  if mode not in MODES:
    raise ValueError(f"{where}={mode!r} is not a data source mode; expected one of {MODES}.")
  return mode


def set_data_source(mode: Optional[str]) -> None:
  """Selects the data source for every task from code (`None` clears it: gin, then the env var decide)."""
  global _MODE_OVERRIDE
  _MODE_OVERRIDE = None if mode is None else _check_mode(mode, "set_data_source(mode)")


@gin.configurable("data_source")
def gin_data_source_mode(mode: Optional[str] = None) -> Optional[str]:
  """The gin binding `data_source.mode = 'local' | 'tfds' | 'auto'` (None: not bound)."""
  return None if mode is None else _check_mode(mode, "data_source.mode")


def get_data_source_mode() -> str:
  """The active mode: code override, else gin binding, else `$XPROMPT_DATA_SOURCE`, else `auto`."""
  if _MODE_OVERRIDE is not None:
    return _MODE_OVERRIDE
  from_gin = gin_data_source_mode()
  if from_gin is not None:
    return from_gin
  return _check_mode(os.environ.get(ENV_VAR, "auto") or "auto", f"${ENV_VAR}")


def local_data_dir() -> Optional[pathlib.Path]:
  """`<shared>/data`, or None when the shared folder is absent."""
  shared = paths.shared_dir()
  return None if shared is None else shared / "data"


# ----------------------------------------------------------------------------------------------------------------------
# Generic file readers (each returns raw rows; errors name the file and line).


def read_jsonl(path: pathlib.Path) -> list[tuple[int, dict]]:
  """(line number, object) for each non-empty line of a JSON-lines file."""
  rows = []
  with open(path, "rb") as f:
    for lineno, raw in enumerate(f, start=1):
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        raise LocalDataError(f"{path}:{lineno}: not UTF-8 text (byte {e.start}: {e.reason}); save the file as "
                             "UTF-8.") from e
      if not line.strip():
        continue
      try:
        obj = json.loads(line)
      except json.JSONDecodeError as e:
        raise LocalDataError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno}).") from e
      if not isinstance(obj, dict):
        raise LocalDataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}.")
      rows.append((lineno, obj))
  return rows


def read_tsv(path: pathlib.Path, columns: Optional[Sequence[str]] = None) -> list[tuple[int, dict[str, str]]]:
  """(line number, {column: value}) per data row of a tab-separated file (GLUE style, no quoting).

  With `columns`, the file has no header and rows are named by those columns; otherwise the first row is the header
  (a UTF-8 byte-order mark is dropped). Rows with a different number of fields raise `LocalDataError`.
  """
  rows = []
  with open(path, encoding="utf-8-sig", newline="") as f:
    reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
    header = list(columns) if columns is not None else None
    for lineno, fields in enumerate(reader, start=1):
      if not fields:
        continue
      if header is None:
        header = [h.strip() for h in fields]
        continue
      if len(fields) != len(header):
        raise LocalDataError(f"{path}:{lineno}: expected {len(header)} tab-separated fields {header}, "
                             f"got {len(fields)}.")
      rows.append((lineno, dict(zip(header, fields))))
  return rows


def read_json_records(path: pathlib.Path) -> list[tuple[str, dict]]:
  """(key, record) for a JSON object of records such as `{"0": {"text_a": ..., "label": ...}, ...}`."""
  with open(path, encoding="utf-8") as f:
    try:
      obj = json.load(f)
    except json.JSONDecodeError as e:
      raise LocalDataError(f"{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno}).") from e
  if not isinstance(obj, dict):
    raise LocalDataError(f"{path}:1: expected a JSON object of records, got {type(obj).__name__}.")
  return [(k, v) for k, v in obj.items()]


def _field(row: Mapping[str, Any], key: str, where: str) -> Any:
  if key not in row:
    raise LocalDataError(f"{where}: missing field {key!r} (has {sorted(row)}).")
  return row[key]


def _class_index(label: Any, label_classes: Sequence[str], where: str) -> int:
  """A TFDS ClassLabel index from a string name, a bool (False/True classes) or an int index."""
  if isinstance(label, bool):
    name = "True" if label else "False"
    if name in label_classes:
      return label_classes.index(name)
    return int(label)
  if isinstance(label, str):
    if label in label_classes:
      return label_classes.index(label)
    if label.strip().lstrip("-").isdigit() and 0 <= int(label) < len(label_classes):
      return int(label)
  elif isinstance(label, int) and 0 <= label < len(label_classes):
    return label
  raise LocalDataError(f"{where}: label {label!r} is not one of {list(label_classes)} (or their indices).")


# ----------------------------------------------------------------------------------------------------------------------
# SuperGLUE jsonl -> TFDS `super_glue/<config>:1.0.2` examples.

SUPER_GLUE_LABELS = {
    "boolq": ("False", "True"),
    "cb": ("entailment", "contradiction", "neutral"),
    "copa": ("choice1", "choice2"),
    "multirc": ("False", "True"),
    "rte": ("entailment", "not_entailment"),
    "wic": ("False", "True"),
    "wsc.fixed": ("False", "True"),
    "axb": ("entailment", "not_entailment"),
    "axg": ("entailment", "not_entailment"),
}

SUPER_GLUE_TEXT_FEATURES = {
    "boolq": ("question", "passage"),
    "cb": ("premise", "hypothesis"),
    "copa": ("premise", "choice1", "choice2", "question"),
    "rte": ("premise", "hypothesis"),
    "wic": ("word", "sentence1", "sentence2"),
    "wsc.fixed": ("text", "span1_text", "span2_text"),
    "axb": ("sentence1", "sentence2"),
    "axg": ("premise", "hypothesis"),
}
_SUPER_GLUE_INT_FEATURES = {"wic": ("start1", "start2", "end1", "end2"), "wsc.fixed": ("span1_index", "span2_index")}


def _string_spec():
  return tf.TensorSpec([], tf.string)


def super_glue_signature(config: str) -> dict:
  """The tf.data element spec of TFDS `super_glue/<config>:1.0.2`."""
  if config == "multirc":
    return {"paragraph": _string_spec(), "question": _string_spec(), "answer": _string_spec(),
            "label": tf.TensorSpec([], tf.int64),
            "idx": {k: tf.TensorSpec([], tf.int32) for k in ("paragraph", "question", "answer")}}
  if config == "record":
    return {"passage": _string_spec(), "query": _string_spec(), "entities": tf.TensorSpec([None], tf.string),
            "answers": tf.TensorSpec([None], tf.string),
            "idx": {"passage": tf.TensorSpec([], tf.int32), "query": tf.TensorSpec([], tf.int32)}}
  spec = {k: _string_spec() for k in SUPER_GLUE_TEXT_FEATURES[config]}
  spec.update({k: tf.TensorSpec([], tf.int32) for k in _SUPER_GLUE_INT_FEATURES.get(config, ())})
  spec["idx"] = tf.TensorSpec([], tf.int32)
  spec["label"] = tf.TensorSpec([], tf.int64)
  return spec


def _fix_wsc_spans(ex: Example) -> Example:
  """The `wsc.fixed` corrections: make span texts substrings of the text (case, trailing '.', newlines)."""
  ex = dict(ex)
  for k in ("span1", "span2"):
    text, index = ex[k + "_text"], ex[k + "_index"]
    if text in ex["text"] or text in ("Kamenev and Zinoviev", "Kamenev, Zinoviev, and Stalin"):
      continue
    if "theyscold" in text:
      ex[k + "_index"] = index = 10
    first_word = ex["text"].split()[index]
    text = (text[0].lower() if first_word[0].islower() else text[0].upper()) + text[1:]
    ex[k + "_text"] = text.rstrip(".").replace("\n", " ")
  return ex


def super_glue_rows(config: str) -> RowReader:
  """A reader turning an official SuperGLUE jsonl file into TFDS-convention examples for `config`."""
  labels = SUPER_GLUE_LABELS.get(config)

  def label_of(row, where):
    return -1 if "label" not in row else _class_index(row["label"], labels, where)

  def read(path: pathlib.Path) -> list[Example]:
    out = []
    for lineno, row in read_jsonl(path):
      where = f"{path}:{lineno}"
      try:
        if config == "multirc":
          passage = _field(row, "passage", where)
          for q in _field(passage, "questions", where):
            for a in _field(q, "answers", where):
              out.append({"paragraph": passage["text"], "question": q["question"], "answer": a["text"],
                          "label": label_of(a, where),
                          "idx": {"paragraph": row["idx"], "question": q["idx"], "answer": a["idx"]}})
        elif config == "record":
          passage = _field(row, "passage", where)
          text = _field(passage, "text", where)
          entities = sorted({text[e["start"]:e["end"] + 1] for e in _field(passage, "entities", where)})
          for qa in _field(row, "qas", where):
            out.append({"passage": text, "query": qa["query"], "entities": entities,
                        "answers": sorted({a["text"] for a in qa.get("answers", [])}),
                        "idx": {"passage": row["idx"], "query": qa["idx"]}})
        else:
          flat = dict(row, **row.get("target", {})) if config == "wsc.fixed" else row
          ex = {k: _field(flat, k, where) for k in SUPER_GLUE_TEXT_FEATURES[config]}
          ex.update({k: int(_field(flat, k, where)) for k in _SUPER_GLUE_INT_FEATURES.get(config, ())})
          if config == "wsc.fixed":
            ex = _fix_wsc_spans(ex)
          ex["idx"] = int(_field(row, "idx", where))
          ex["label"] = label_of(row, where)
          out.append(ex)
      except (KeyError, TypeError, IndexError) as e:
        raise LocalDataError(f"{where}: malformed {config} row ({type(e).__name__}: {e}).") from e
    return out

  return read


# ----------------------------------------------------------------------------------------------------------------------
# GLUE tsv / re-split json -> TFDS `glue/<config>:2.0.0` examples.

GLUE_LABELS = {
    "cola": ("unacceptable", "acceptable"),
    "sst2": ("negative", "positive"),
    "mrpc": ("not_equivalent", "equivalent"),
    "qqp": ("not_duplicate", "duplicate"),
    "mnli": ("entailment", "neutral", "contradiction"),
    "qnli": ("entailment", "not_entailment"),
    "rte": ("entailment", "not_entailment"),
    "wnli": ("not_entailment", "entailment"),
    "stsb": None,  # Regression.
}
GLUE_TEXT_FEATURES = {
    "cola": ("sentence",), "sst2": ("sentence",), "mrpc": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"), "stsb": ("sentence1", "sentence2"), "mnli": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2"), "wnli": ("sentence1", "sentence2"),
}
# dev.tsv column holding each TFDS feature (and the label); CoLA has no header.
_GLUE_TSV_COLUMNS = {
    "cola": ({"sentence": "sentence", "label": "label"}, ("source", "label", "original_label", "sentence")),
    "sst2": ({"sentence": "sentence", "label": "label"}, None),
    "mrpc": ({"sentence1": "#1 String", "sentence2": "#2 String", "label": "Quality"}, None),
    "qnli": ({"question": "question", "sentence": "sentence", "label": "label"}, None),
    "rte": ({"sentence1": "sentence1", "sentence2": "sentence2", "label": "label"}, None),
    "stsb": ({"sentence1": "sentence1", "sentence2": "sentence2", "label": "score"}, None),
}


def glue_signature(config: str) -> dict:
  """The tf.data element spec of TFDS `glue/<config>:2.0.0`."""
  spec = {k: _string_spec() for k in GLUE_TEXT_FEATURES[config]}
  spec["label"] = tf.TensorSpec([], tf.float32 if config == "stsb" else tf.int64)
  spec["idx"] = tf.TensorSpec([], tf.int32)
  return spec


def _glue_label(config: str, label: Any, where: str):
  if config == "stsb":
    try:
      return float(label)
    except (TypeError, ValueError) as e:
      raise LocalDataError(f"{where}: STS-B score {label!r} is not a number.") from e
  return _class_index(label, GLUE_LABELS[config], where)


def glue_tsv_rows(config: str) -> RowReader:
  """A reader for the official GLUE `dev.tsv` of `config` (idx = data row number from 0)."""
  columns, header = _GLUE_TSV_COLUMNS[config]

  def read(path: pathlib.Path) -> list[Example]:
    out = []
    for i, (lineno, row) in enumerate(read_tsv(path, header)):
      where = f"{path}:{lineno}"
      ex = {k: _field(row, col, where) for k, col in columns.items() if k != "label"}
      ex["label"] = _glue_label(config, _field(row, columns["label"], where), where)
      ex["idx"] = i
      out.append(ex)
    return out

  return read


def glue_resplit_rows(config: str) -> RowReader:
  """A reader for the re-split GLUE train json (`{"0": {"text_a", "text_b", "label"}}`; idx = the record key)."""
  fields = GLUE_TEXT_FEATURES[config]

  def read(path: pathlib.Path) -> list[Example]:
    out = []
    for key, rec in read_json_records(path):
      where = f"{path}: record {key!r}"
      if not isinstance(rec, dict):
        raise LocalDataError(f"{where}: expected an object with text_a/text_b/label, got {type(rec).__name__}.")
      ex = {fields[0]: _field(rec, "text_a", where)}
      if len(fields) > 1:
        text_b = _field(rec, "text_b", where)
        if text_b is None:
          raise LocalDataError(f"{where}: text_b is null but {config} needs {fields[1]!r}.")
        ex[fields[1]] = text_b
      ex["label"] = _glue_label(config, _field(rec, "label", where), where)
      try:
        ex["idx"] = int(key)
      except ValueError as e:
        raise LocalDataError(f"{where}: record keys must be integers.") from e
      out.append(ex)
    return out

  return read


# ----------------------------------------------------------------------------------------------------------------------
# The hybrid source.


@dataclasses.dataclass(frozen=True)
class LocalSplit:
  """One split of a task as a local file: `relpath` under `<shared>/data`, parsed by `reader`."""
  relpath: str
  reader: RowReader

  def path(self) -> Optional[pathlib.Path]:
    d = local_data_dir()
    return None if d is None else d / self.relpath


@functools.lru_cache(maxsize=64)
def _load_rows(path: str, reader: RowReader) -> tuple:
  return tuple(reader(pathlib.Path(path)))


def _to_dataset(rows: Sequence[Example], signature: Mapping[str, Any]) -> tf.data.Dataset:
  def gen():
    yield from rows
  return tf.data.Dataset.from_generator(gen, output_signature=dict(signature))


class HybridSource(seqio.DataSource):
  """A seqio source reading each split from a local file or from TFDS, chosen at `get_dataset` time."""

  def __init__(self,
               name: str,
               signature: Mapping[str, Any],
               local_splits: Optional[Mapping[str, LocalSplit]] = None,
               tfds_name: Optional[str] = None,
               tfds_splits: Optional[Mapping[str, str]] = None,
               hint: str = ""):
    """Args:
      name: the task name (for messages).
      signature: the tf.data element spec local rows are converted to (the TFDS features).
      local_splits: split -> local file.
      tfds_name: e.g. "super_glue/rte:1.0.2"; None when the task is local-only.
      tfds_splits: split -> TFDS split (or slice) available from `tfds_name`.
      hint: appended to "split unavailable" errors (e.g. which other task has the data).
    """
    self._name = name
    self._signature = dict(signature)
    self._local = dict(local_splits or {})
    self._tfds_splits = dict(tfds_splits or {}) if tfds_name else {}
    self._tfds = seqio.TfdsDataSource(tfds_name, splits=self._tfds_splits) if tfds_name else None
    self._tfds_name = tfds_name
    self._hint = hint
    splits = list(self._tfds_splits) + [s for s in self._local if s not in self._tfds_splits]
    super().__init__(splits=splits)

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return False

  @property
  def tfds_name(self) -> Optional[str]:
    return self._tfds_name

  @property
  def local_splits(self) -> Mapping[str, LocalSplit]:
    return self._local

  def __repr__(self):
    return f"HybridSource({self._name!r}, tfds={self._tfds_name!r}, local={sorted(self._local)})"

  def _local_path(self, split: str) -> Optional[pathlib.Path]:
    spec = self._local.get(split)
    path = None if spec is None else spec.path()
    return path if path is not None and path.is_file() else None

  def _unavailable(self, split: str, mode: str, why: str) -> SplitUnavailableError:
    folder = local_data_dir()
    spec = self._local.get(split)
    where = (f"local file {folder / spec.relpath if folder else '<shared>/data/' + spec.relpath}" if spec
             else f"no local file for this split under {folder or '<shared>/data (shared folder absent)'}")
    msg = (f"Task {self._name!r} has no split {split!r} with data source {mode!r} ({why}; {where}; "
           f"TFDS: {self._tfds_name or 'none'} splits {sorted(self._tfds_splits)}).")
    return SplitUnavailableError(msg + (" " + self._hint if self._hint else ""))

  def resolve(self, split: str) -> tuple[str, Any]:
    """("local", path) or ("tfds", tfds split) for `split` under the active mode; raises when unavailable."""
    mode = get_data_source_mode()
    path = self._local_path(split)
    if mode in ("local", "auto") and path is not None:
      return "local", path
    if mode in ("tfds", "auto") and split in self._tfds_splits:
      return "tfds", self._tfds_splits[split]
    if mode == "local":
      raise self._unavailable(split, mode, "the local file is missing")
    if mode == "tfds":
      raise self._unavailable(split, mode, "TFDS does not provide it for this task")
    raise self._unavailable(split, mode, "neither a local file nor a TFDS split")

  def describe(self, split: str) -> str:
    """One line saying which source and file serve `split`."""
    kind, where = self.resolve(split)
    if kind == "local":
      return f"{self._name}[{split}]: local file {where}"
    return f"{self._name}[{split}]: TFDS {self._tfds_name} split {where!r}"

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed: Optional[int] = None,
                  shard_info: Optional[seqio.ShardInfo] = None, *, sequence_length=None, use_cached=False,
                  num_epochs=1) -> tf.data.Dataset:
    del sequence_length, use_cached, num_epochs
    kind, where = self.resolve(split)
    if kind == "tfds":
      return self._tfds.get_dataset(split, shuffle=shuffle, seed=seed, shard_info=shard_info)
    ds = _to_dataset(_load_rows(str(where), self._local[split].reader), self._signature)
    if shard_info is not None and shard_info.num_shards > 1:
      ds = ds.shard(shard_info.num_shards, shard_info.index)
    if shuffle:
      ds = ds.shuffle(len(_load_rows(str(where), self._local[split].reader)), seed=seed)
    return ds

  def list_shards(self, split: str) -> Sequence[str]:
    return [split]

  def num_input_examples(self, split: str) -> Optional[int]:
    kind, where = self.resolve(split)
    if kind == "local":
      return len(_load_rows(str(where), self._local[split].reader))
    try:
      return self._tfds.num_input_examples(split)
    except KeyError:  # TFDS metadata without split sizes (e.g. `tfds.testing.mock_data`): size unknown.
      return None


def describe_source(task_name: str, split: str) -> str:
  """Which source and file a registered task reads for `split` (under the active data-source mode)."""
  task = seqio.get_mixture_or_task(task_name)
  if isinstance(task, seqio.Mixture):  # Like seqio, skip sub-tasks without the split (a mixture's eval-only tasks).
    return "\n".join(describe_source(t.name, split) for t in task.tasks if split in (t.splits or ()))
  source = task.source
  if isinstance(source, HybridSource):
    return source.describe(split)
  return f"{task_name}[{split}]: {source!r}"
