"""GLUE tasks (TFDS `glue/*:2.0.0`, or locally the official dev tsv and the re-split train json), in T5's format.

Names follow T5: `glue_{cola,sst2,mrpc,qqp,stsb,mnli,qnli,rte,wnli}_v002`, plus `glue_mnli_matched_v002` and
`glue_mnli_mismatched_v002` whose `validation`/`test` are MNLI's matched / mismatched sets, and `<name>_rank`
rank-classification variants of the label-word tasks. STS-B targets are the score rounded to the nearest 0.2 as a
string (`"3.8"`), postprocessed back to a float.

Local files: `validation` is the official dev set (`<shared>/data/glue/<T>/dev.tsv`) and `train` the re-split real
GLUE train text (`<shared>/data/glue_resplit/<T>/train.json`). The local-only split `resplit_dev` (its held-out
`dev.json`) gives MNLI/QQP an offline validation set; never report it as the official dev.
"""
import functools

import tensorflow as tf

from xprompt_jax.evaluation import metrics
from xprompt_jax.tasks import registry_utils as ru
from xprompt_jax.tasks import sources

VERSION = "2.0.0"
RESPLIT_DEV = "resplit_dev"  # Local-only split: the held-out 10% of the re-split GLUE train (not the official dev).
_TSV_FOLDERS = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "qnli": "QNLI", "rte": "RTE", "stsb": "STS-B"}
_RESPLIT_FOLDERS = dict(_TSV_FOLDERS, mnli="MNLI", qqp="QQP")
_METRICS = {
    "cola": [metrics.matthews_corrcoef],
    "sst2": [metrics.accuracy],
    "mrpc": [metrics.f1_binary, metrics.accuracy],
    "qqp": [metrics.f1_binary, metrics.accuracy],
    "stsb": [metrics.pearson_spearman],
    "mnli": [metrics.accuracy],
    "qnli": [metrics.accuracy],
    "rte": [metrics.accuracy],
    "wnli": [metrics.accuracy],
}
_HINT = ("Offline, GLUE train comes from <shared>/data/glue_resplit and validation from <shared>/data/glue/<T>/dev.tsv "
         "(MNLI and QQP have no official dev there: use XPROMPT_DATA_SOURCE=tfds).")


def task_name(config: str) -> str:
  return f"glue_{config}_v002"


def glue_source(config: str, name: str, tfds_splits) -> sources.HybridSource:
  """The hybrid source of `glue/<config>:2.0.0` for the given split map."""
  local = {}
  if "train" in tfds_splits and config in _RESPLIT_FOLDERS:
    for split, file in (("train", "train.json"), (RESPLIT_DEV, "dev.json")):
      local[split] = sources.LocalSplit(f"glue_resplit/{_RESPLIT_FOLDERS[config]}/{file}",
                                        sources.glue_resplit_rows(config))
  if tfds_splits.get("validation") == "validation" and config in _TSV_FOLDERS:
    local["validation"] = sources.LocalSplit(f"glue/{_TSV_FOLDERS[config]}/dev.tsv", sources.glue_tsv_rows(config))
  return sources.HybridSource(name, sources.glue_signature(config), local_splits=local,
                              tfds_name=f"glue/{config}:{VERSION}", tfds_splits=tfds_splits, hint=_HINT)


def stsb_text(ds: tf.data.Dataset) -> tf.data.Dataset:
  """T5's STS-B format: `stsb sentence1: ... sentence2: ...` -> the score rounded to 0.2, e.g. "3.8"."""

  def fn(x):
    inputs = tf.strings.join(["stsb sentence1:", x["sentence1"], "sentence2:", x["sentence2"]], separator=" ")
    rounded = tf.round(tf.cast(x["label"], tf.float32) * 5.0) / 5.0
    return {"inputs": inputs, "targets": tf.strings.as_string(rounded, precision=1), "idx": x["idx"]}

  return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def _register_classification(config: str, name: str, tfds_splits) -> None:
  labels = sources.GLUE_LABELS[config]
  source = glue_source(config, name, tfds_splits)
  preprocessor = ru.glue_preprocessor(config, labels)
  ru.add_text_task(name, source, preprocessor, postprocess_fn=ru.label_postprocessor(labels),
                   metric_fns=_METRICS[config])
  ru.add_rank_task(name, source, preprocessor, labels,
                   score_metric_fns=[functools.partial(metrics.rank_classification, num_classes=len(labels))])


def register() -> None:
  """Registers every GLUE task (idempotent)."""
  default_splits = {"train": "train", "validation": "validation", "test": "test"}
  for config in ("cola", "sst2", "mrpc", "qqp", "qnli", "rte", "wnli"):
    _register_classification(config, task_name(config), default_splits)
  _register_classification("mnli", task_name("mnli"),
                           {"train": "train", "validation_matched": "validation_matched",
                            "validation_mismatched": "validation_mismatched", "test_matched": "test_matched",
                            "test_mismatched": "test_mismatched"})
  for which in ("matched", "mismatched"):
    _register_classification("mnli", f"glue_mnli_{which}_v002",
                             {"validation": f"validation_{which}", "test": f"test_{which}"})

  name = task_name("stsb")
  ru.add_text_task(name, glue_source("stsb", name, default_splits), stsb_text, postprocess_fn=ru.string_to_float,
                   metric_fns=_METRICS["stsb"])


def register_taskless() -> None:
  """`taskless_<name>` for every GLUE task (google-research/prompt-tuning's `taskless_glue_*`)."""
  for name in TASK_NAMES:
    ru.add_taskless_task(name)


register()

CLASSIFICATION_CONFIGS = ("cola", "sst2", "mrpc", "qqp", "mnli", "qnli", "rte", "wnli")
TASK_NAMES = tuple(
    [task_name(c) for c in CLASSIFICATION_CONFIGS + ("stsb",)] + ["glue_mnli_matched_v002", "glue_mnli_mismatched_v002"]
    + [task_name(c) + ru.RANK_SUFFIX for c in CLASSIFICATION_CONFIGS]
    + ["glue_mnli_matched_v002_rank", "glue_mnli_mismatched_v002_rank"])
TASKLESS_TASK_NAMES = tuple(ru.TASKLESS_PREFIX + n for n in TASK_NAMES)
register_taskless()
