"""Data-to-text generation tasks (E2E NLG, WebNLG), scored with BLEU and ROUGE against every reference.

Inputs are the linearised structured data, targets one reference text:

* E2E: the meaning representation as in the official files, `name[Alimentum], area[city centre], ...`.
* WebNLG: the triples `subject | predicate | object`, joined by ` && `.

Each data row carries one reference, so a training task has one example per reference while an evaluation task has
one example per input with all of its references (feature `references`, used as the metric target):

* `e2e_nlg`: the original E2E NLG challenge `validation` (dev) and `test` sets, read from the official CSVs
  `<shared>/data/e2e_nlg/{dev.csv,test_w_refs.csv}` (columns `mr,ref`; rows grouped by MR in file order). The
  original train set is not in the shared folder and not in TFDS, so `train` raises; train on `e2e_cleaned_v010`.
* `e2e_cleaned_v010`: TFDS `e2e_cleaned:0.1.0` (the cleaned re-annotation of E2E), one example per reference (train).
* `e2e_cleaned_v010_allrefs`: its `validation` / `test` grouped by MR (evaluation).
* `web_nlg_v010`: TFDS `web_nlg:0.1.0` (WebNLG challenge 2017), one example per reference (train).
* `web_nlg_v010_allrefs`: its `validation`, `test_all` and `test_unseen` grouped by triple set (evaluation).

The TFDS-backed tasks follow `XPROMPT_DATA_SOURCE` through `sources.HybridSource` (local mode raises naming them).
METEOR is not reported: see `xprompt_jax.evaluation.metrics`.
"""
import csv
import pathlib
import re
from typing import Any, Mapping, Optional

import tensorflow as tf

from xprompt_jax.evaluation import metrics
from xprompt_jax.tasks import registry_utils as ru
from xprompt_jax.tasks import sources

E2E_LOCAL_SPLITS = {"validation": "e2e_nlg/dev.csv", "test": "e2e_nlg/test_w_refs.csv"}
E2E_CLEANED_TFDS = "e2e_cleaned:0.1.0"
WEB_NLG_TFDS = "web_nlg:0.1.0"
NLG_METRICS = (metrics.bleu, metrics.rouge)
_MR_PATTERN = re.compile(r"^[A-Za-z][A-Za-z ]*\[[^\[\]]*\](, [A-Za-z][A-Za-z ]*\[[^\[\]]*\])*$")
_HASH_BUCKETS = 2**62
_E2E_HINT = ("The original E2E train set is not available offline (the shared folder has only dev.csv and "
             "test_w_refs.csv, and TFDS only has the cleaned version): train on `e2e_cleaned_v010` (TFDS).")
_TFDS_HINT = "This task has no local copy under <shared>/data; it needs TFDS (XPROMPT_DATA_SOURCE=tfds or auto)."


# ----------------------------------------------------------------------------------------------------------------------
# The official E2E CSVs.


def read_e2e_csv(path: pathlib.Path) -> list[tuple[int, str, str]]:
  """(line number, MR, reference) for every data row of an official E2E CSV (header `mr,ref`).

  Raises `sources.LocalDataError` naming the file and line for a missing column or a malformed MR.
  """
  rows = []
  with open(path, encoding="utf-8", newline="") as f:
    reader = csv.DictReader(f)
    if reader.fieldnames is None or not {"mr", "ref"} <= set(reader.fieldnames):
      raise sources.LocalDataError(f"{path}:1: expected the E2E header 'mr,ref', got {reader.fieldnames}.")
    start = reader.line_num + 1
    for row in reader:
      mr, ref = row["mr"], row["ref"]
      if mr is None or ref is None or not _MR_PATTERN.match(mr):
        raise sources.LocalDataError(f"{path}:{start}: malformed E2E row (mr={mr!r}, ref={ref!r}); expected "
                                     "'slot[value], slot[value], ...' and a reference text.")
      rows.append((start, mr, ref))
      start = reader.line_num + 1
  return rows


def e2e_grouped_rows(path: pathlib.Path) -> list[dict[str, Any]]:
  """One example per MR (in order of first appearance) with every reference of that MR."""
  refs: dict[str, list[str]] = {}
  for _, mr, ref in read_e2e_csv(path):
    refs.setdefault(mr, []).append(ref)
  return [{"meaning_representation": mr, "target_text": r[0], "references": r} for mr, r in refs.items()]


E2E_LOCAL_SIGNATURE = {"meaning_representation": tf.TensorSpec([], tf.string),
                       "target_text": tf.TensorSpec([], tf.string),
                       "references": tf.TensorSpec([None], tf.string)}


# ----------------------------------------------------------------------------------------------------------------------
# Text formats.


def e2e_local_text(ds: tf.data.Dataset) -> tf.data.Dataset:
  """Grouped local E2E rows -> `{"inputs": MR, "targets": first reference, "references": all}`."""
  return ds.map(lambda x: {"inputs": x["meaning_representation"], "targets": x["target_text"],
                           "references": x["references"]}, num_parallel_calls=tf.data.AUTOTUNE)


def e2e_table_text(ds: tf.data.Dataset) -> tf.data.Dataset:
  """TFDS `e2e_cleaned` rows -> `{"inputs": "slot[value], ...", "targets": reference}`."""

  def fn(x):
    table = x["input_text"]["table"]
    slots = tf.strings.join([table["column_header"], "[", table["content"], "]"])
    return {"inputs": tf.strings.reduce_join(slots, separator=", "), "targets": x["target_text"]}

  return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def web_nlg_text(ds: tf.data.Dataset) -> tf.data.Dataset:
  """TFDS `web_nlg` rows -> `{"inputs": "s | p | o && s | p | o", "targets": reference, "category": ...}`.

  The table holds one cell per (triple, role); cells of one triple share `row_number`.
  """

  def fn(x):
    table = x["input_text"]["table"]
    _, triple_ids = tf.unique(table["row_number"])
    cells = tf.RaggedTensor.from_value_rowids(table["content"], tf.cast(triple_ids, tf.int64))
    triples = tf.strings.reduce_join(cells, axis=1, separator=" | ")
    return {"inputs": tf.strings.reduce_join(triples, separator=" && "), "targets": x["target_text"],
            "category": x["input_text"]["context"]}

  return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def group_references(ds: tf.data.Dataset) -> tf.data.Dataset:
  """Merges examples with the same `inputs`: `targets` = the first one, `references` = all of them.

  Needs the whole split (rows of one input need not be adjacent, as in TFDS); the output order follows the grouping,
  not the input. Other features are dropped.
  """

  def key(ex):
    return tf.strings.to_hash_bucket_fast(ex["inputs"], _HASH_BUCKETS)

  def init(_):
    return {"inputs": tf.constant(""), "targets": tf.constant(""), "references": tf.zeros([0], tf.string)}

  def reduce(state, ex):
    first = tf.equal(tf.size(state["references"]), 0)
    return {"inputs": ex["inputs"], "targets": tf.where(first, ex["targets"], state["targets"]),
            "references": tf.concat([state["references"], [ex["targets"]]], axis=0)}

  return ds.apply(tf.data.experimental.group_by_reducer(key, tf.data.experimental.Reducer(init, reduce, lambda s: s)))


def references_postprocessor(output: Any, example: Optional[Mapping[str, Any]] = None,
                             is_target: bool = False):
  """Targets: every reference of the example (list of str); predictions: the decoded text."""
  if is_target:
    if example is None or "references" not in example:
      raise ValueError("references_postprocessor needs the example's 'references' feature for targets "
                       f"(got example keys {sorted(example) if example is not None else None})")
    return [r.decode("utf-8") if isinstance(r, bytes) else str(r) for r in example["references"]]
  return output.decode("utf-8") if isinstance(output, bytes) else str(output)


# ----------------------------------------------------------------------------------------------------------------------
# Registration.


def e2e_local_source() -> sources.HybridSource:
  """The original E2E dev/test from the shared CSVs (no TFDS counterpart; no train split)."""
  local = {split: sources.LocalSplit(relpath, e2e_grouped_rows) for split, relpath in E2E_LOCAL_SPLITS.items()}
  return sources.HybridSource("e2e_nlg", E2E_LOCAL_SIGNATURE, local_splits=local, hint=_E2E_HINT)


def tfds_source(name: str, tfds_name: str, splits: Mapping[str, str]) -> sources.HybridSource:
  return sources.HybridSource(name, signature={}, tfds_name=tfds_name, tfds_splits=dict(splits), hint=_TFDS_HINT)


def register() -> None:
  """Registers the E2E and WebNLG tasks."""
  ru.add_text_task("e2e_nlg", e2e_local_source(), e2e_local_text, postprocess_fn=references_postprocessor,
                   metric_fns=NLG_METRICS)
  datasets = (("e2e_cleaned_v010", E2E_CLEANED_TFDS, e2e_table_text, ("train", "validation", "test")),
              ("web_nlg_v010", WEB_NLG_TFDS, web_nlg_text, ("train", "validation", "test_all", "test_unseen")))
  for name, tfds_name, text_fn, splits in datasets:
    ru.add_text_task(name, tfds_source(name, tfds_name, {s: s for s in splits}), text_fn)
    eval_name = name + "_allrefs"
    ru.add_text_task(eval_name, tfds_source(eval_name, tfds_name, {s: s for s in splits if s != "train"}),
                     _compose(text_fn, group_references), postprocess_fn=references_postprocessor,
                     metric_fns=NLG_METRICS)


def _compose(*fns):
  """One dataset preprocessor applying `fns` in order (`add_text_task` takes a single text preprocessor)."""

  def composed(ds: tf.data.Dataset) -> tf.data.Dataset:
    for fn in fns:
      ds = fn(ds)
    return ds

  composed.__name__ = "_then_".join(fn.__name__ for fn in fns)
  return composed


register()
