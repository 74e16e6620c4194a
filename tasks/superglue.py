"""SuperGLUE tasks (TFDS `super_glue/*:1.0.2` or the official jsonl under `<shared>/data`), in T5's text format.

Registered names follow T5: `super_glue_{boolq,cb,copa,multirc,record,rte,wic}_v102`, `super_glue_wsc_v102_simple_train`
/ `_simple_eval`, the diagnostics `super_glue_axb_v102` (cast as RTE) and `super_glue_axg_v102`, rank-classification
variants `<name>_rank` of the label-word tasks, and the FewGLUE 32-shot tasks `super_glue_{boolq,record}_v102_32shot`.
"""
import functools

import tensorflow as tf

from xprompt_jax.evaluation import metrics
from xprompt_jax.tasks import registry_utils as ru
from xprompt_jax.tasks import sources

VERSION = "1.0.2"
_DEFAULT_SPLITS = {"train": "train", "validation": "validation", "test": "test"}
# Local folder under <shared>/data/superglue for each TFDS config (absent: TFDS only).
_LOCAL_FOLDERS = {"boolq": "BoolQ", "cb": "CB", "copa": "COPA", "multirc": "MultiRC", "rte": "RTE", "wic": "WiC",
                  "wsc.fixed": "WSC"}
_FILE_OF_SPLIT = {"train": "train.jsonl", "validation": "val.jsonl", "test": "test.jsonl"}
_HINTS = {
    "boolq": "BoolQ train is not in the shared data: use super_glue_boolq_v102_32shot (FewGLUE) or "
             "XPROMPT_DATA_SOURCE=tfds.",
    "record": "ReCoRD is only local as FewGLUE: use super_glue_record_v102_32shot or XPROMPT_DATA_SOURCE=tfds.",
}


def super_glue_source(config: str, name: str, splits=None) -> sources.HybridSource:
  """The hybrid source of `super_glue/<config>:1.0.2` (local official jsonl where the shared data has it)."""
  tfds_splits = dict(splits or ({"test": "test"} if config in ("axb", "axg") else _DEFAULT_SPLITS))
  folder = _LOCAL_FOLDERS.get(config)
  local = {} if folder is None else {
      split: sources.LocalSplit(f"superglue/{folder}/{_FILE_OF_SPLIT[split]}", sources.super_glue_rows(config))
      for split in tfds_splits if split in _FILE_OF_SPLIT}
  return sources.HybridSource(name, sources.super_glue_signature(config), local_splits=local,
                              tfds_name=f"super_glue/{config}:{VERSION}", tfds_splits=tfds_splits,
                              hint=_HINTS.get(config, ""))


def fewglue_source(config: str, folder: str, name: str, validation_relpath: str | None) -> sources.HybridSource:
  """FewGLUE 32-shot train (+ `dev32`), with the official validation set (local when present, else TFDS)."""
  reader = sources.super_glue_rows(config)
  local = {"train": sources.LocalSplit(f"fewglue/{folder}/train.jsonl", reader),
           "dev32": sources.LocalSplit(f"fewglue/{folder}/dev32.jsonl", reader)}
  if validation_relpath:
    local["validation"] = sources.LocalSplit(validation_relpath, reader)
  return sources.HybridSource(
      name, sources.super_glue_signature(config), local_splits=local, tfds_name=f"super_glue/{config}:{VERSION}",
      tfds_splits={"validation": "validation"},
      hint="The 32-shot train/dev32 splits exist only as local FewGLUE files (<shared>/data/fewglue).")


# ----------------------------------------------------------------------------------------------------------------------
# Text formats beyond the GLUE-style one.


def record_text(ds: tf.data.Dataset) -> tf.data.Dataset:
  """T5's ReCoRD format: one example per answer (or `<unk>`), keeping all `answers` and `idx/{passage,query}`.

  Inputs read `record query: <query> entities: <e1>, <e2> passage: <passage>` with `@highlight` lines joined.
  """

  def per_answer(x):
    n = tf.maximum(tf.size(x["answers"]), 1)
    targets = tf.cond(tf.size(x["answers"]) > 0, lambda: x["answers"], lambda: tf.constant(["<unk>"]))
    passage = tf.strings.regex_replace(x["passage"], r"(\.|\?|\!|\"|\')\n@highlight\n", r"\1 ")
    passage = tf.strings.regex_replace(passage, r"\n@highlight\n", ". ")
    inputs = tf.strings.join(["record query:", x["query"], "entities:",
                              tf.strings.reduce_join(x["entities"], separator=", "), "passage:", passage],
                             separator=" ")

    def tile(t):
      return tf.fill([n], t)

    return {"inputs": tile(inputs), "targets": targets,
            "answers": tf.tile(tf.expand_dims(x["answers"], 0), [n, 1]),
            "idx/passage": tile(x["idx"]["passage"]), "idx/query": tile(x["idx"]["query"])}

  return ds.map(per_answer, num_parallel_calls=tf.data.AUTOTUNE).unbatch()


def mark_wsc_pronoun(text: str, pronoun: str, index: int) -> str:
  """`text` with the word at `index` (the pronoun) wrapped in `*...*`, as T5's `wsc_simple`.

  Two WSC rows have a wrong index or punctuation glued to the pronoun; like T5 the pronoun is then searched for
  near the index, and glued punctuation is split off. The one WSC text with a trailing space ('... "Good for him,"
  he said. ', three train rows) loses it, as in T5's special case for it. Raises ValueError when the pronoun is
  nowhere near.
  """
  words = text.rstrip(" ").split(" ")
  if not 0 <= index < len(words):
    raise ValueError(f"WSC span2_index {index} is outside the {len(words)} words of {text!r}")
  candidates = sorted(range(len(words)), key=lambda i: abs(i - index))
  for i in candidates[:3]:
    word = words[i]
    if word == pronoun:
      return " ".join(words[:i] + [f"*{pronoun}*"] + words[i + 1:])
    if word.startswith(pronoun) and not word[len(pronoun):].isalnum():
      return " ".join(words[:i] + [f"*{pronoun}*", word[len(pronoun):]] + words[i + 1:])
  raise ValueError(f"WSC pronoun {pronoun!r} not found near word {index} of {text!r}")


def wsc_simple(ds: tf.data.Dataset, correct_referent_only: bool = False) -> tf.data.Dataset:
  """T5's `wsc_simple`: `wsc: <text with *pronoun*>` -> the candidate referent (`span1_text`); keeps label/idx."""
  if correct_referent_only:
    ds = ds.filter(lambda x: tf.equal(x["label"], 1))

  def mark(text, pronoun, index):
    return mark_wsc_pronoun(text.numpy().decode("utf-8"), pronoun.numpy().decode("utf-8"), int(index.numpy()))

  def fn(x):
    marked = tf.py_function(mark, [x["text"], x["span2_text"], x["span2_index"]], Tout=tf.string)
    return {"inputs": tf.strings.join(["wsc:", tf.reshape(marked, [])], separator=" "),
            "targets": tf.reshape(x["span1_text"], []), "label": x["label"], "idx": x["idx"]}

  return ds.map(fn)


def record_postprocessor(answer, example=None, is_target: bool = False) -> dict:
  """`{"group": (passage idx, query idx), "value": ...}`: all reference answers for targets, the decoded answer for
  predictions; `metrics.deduplicate_by_group` then counts each query once despite its one-row-per-answer expansion."""
  value = ru.qa_postprocessor(answer, example, is_target)
  if example is None:
    return {"value": value}
  return {"group": (int(example["idx/passage"]), int(example["idx/query"])), "value": value}


_DETERMINERS = frozenset({"a", "an", "few", "her", "his", "each", "every", "many", "much", "my", "our", "some", "that",
                          "the", "their", "these", "this", "those", "which", "whose", "your"})


def _clean_referent(s: str) -> str:
  return " ".join(w for w in s.strip().lower().split(" ") if w not in _DETERMINERS)


def wsc_simple_postprocessor(prediction, example=None, is_target: bool = False) -> int:
  """1 when the predicted referent matches the candidate (ignoring case and determiners), else 0; targets: label."""
  if is_target:
    return int(example["label"])
  pred = _clean_referent(ru.as_text(prediction))
  if not pred:
    return -1
  referent = _clean_referent(ru.as_text(example["targets_pretokenized"]))
  if ("'" in pred) != ("'" in referent):
    return 0
  pred_words, ref_words = set(pred.split(" ")), set(referent.split(" "))
  return int(pred_words.issubset(ref_words) or ref_words.issubset(pred_words))


# ----------------------------------------------------------------------------------------------------------------------
# Registration.

_CLASSIFICATION = {
    # config: (benchmark name in the inputs, feature order (None: sorted), metrics)
    "boolq": ("boolq", None, [metrics.accuracy]),
    "cb": ("cb", None, [metrics.accuracy_mean_class_f1]),
    "copa": ("copa", None, [metrics.accuracy]),
    "rte": ("rte", None, [metrics.accuracy]),
    "wic": ("wic", ("sentence1", "sentence2", "word"), [metrics.accuracy]),
    "axb": ("rte", None, [metrics.matthews_corrcoef]),
    "axg": ("rte", None, [metrics.accuracy]),
}
# T5 renames AX-b's features to RTE's before formatting it as RTE: `rte hypothesis: <sentence2> premise: <sentence1>`.
_REKEY = {"axb": {"premise": "sentence1", "hypothesis": "sentence2"}}


def task_name(config: str) -> str:
  return f"super_glue_{config}_v102"


def _register_classification(config: str) -> None:
  benchmark, feature_names, metric_fns = _CLASSIFICATION[config]
  labels = sources.SUPER_GLUE_LABELS[config]
  name = task_name(config)
  source = super_glue_source(config, name)
  preprocessor = ru.glue_preprocessor(benchmark, labels, feature_names, rekey=_REKEY.get(config))
  ru.add_text_task(name, source, preprocessor, postprocess_fn=ru.label_postprocessor(labels), metric_fns=metric_fns)
  ru.add_rank_task(name, source, preprocessor, labels,
                   score_metric_fns=[functools.partial(metrics.rank_classification, num_classes=len(labels))])


def register() -> None:
  """Registers every SuperGLUE task (idempotent)."""
  for config in _CLASSIFICATION:
    _register_classification(config)

  name = task_name("multirc")
  ru.add_text_task(name, super_glue_source("multirc", name),
                   ru.glue_preprocessor("multirc", sources.SUPER_GLUE_LABELS["multirc"],
                                        ("question", "answer", "paragraph")),
                   postprocess_fn=ru.multirc_postprocessor, metric_fns=[metrics.multirc_f1_em])

  name = task_name("record")
  ru.add_text_task(name, super_glue_source("record", name), record_text, postprocess_fn=record_postprocessor,
                   metric_fns=[metrics.deduplicate_by_group(metrics.record_em_f1)])

  name = "super_glue_wsc_v102_simple_train"
  ru.add_text_task(name, super_glue_source("wsc.fixed", name, splits={"train": "train"}),
                   functools.partial(wsc_simple, correct_referent_only=True))
  name = "super_glue_wsc_v102_simple_eval"
  ru.add_text_task(name, super_glue_source("wsc.fixed", name, splits={"validation": "validation", "test": "test"}),
                   functools.partial(wsc_simple, correct_referent_only=False),
                   postprocess_fn=wsc_simple_postprocessor, metric_fns=[metrics.accuracy])

  name = task_name("boolq") + "_32shot"
  boolq_labels = sources.SUPER_GLUE_LABELS["boolq"]
  boolq_pre = ru.glue_preprocessor("boolq", boolq_labels)
  boolq_source = fewglue_source("boolq", "BoolQ", name, "superglue/BoolQ/val.jsonl")
  ru.add_text_task(name, boolq_source, boolq_pre, postprocess_fn=ru.label_postprocessor(boolq_labels),
                   metric_fns=[metrics.accuracy])
  ru.add_rank_task(name, boolq_source, boolq_pre, boolq_labels,
                   score_metric_fns=[functools.partial(metrics.rank_classification, num_classes=2)])

  name = task_name("record") + "_32shot"
  ru.add_text_task(name, fewglue_source("record", "ReCoRD", name, None), record_text,
                   postprocess_fn=record_postprocessor, metric_fns=[metrics.deduplicate_by_group(metrics.record_em_f1)])


def register_taskless() -> None:
  """`taskless_<name>` for every SuperGLUE task of Lester et al.'s table (and their `_rank` variants)."""
  for config in _CLASSIFICATION:
    for name in (task_name(config), task_name(config) + ru.RANK_SUFFIX):
      ru.add_taskless_task(name)
  for name in (task_name("multirc"), task_name("record"), "super_glue_wsc_v102_simple_train",
               "super_glue_wsc_v102_simple_eval"):
    ru.add_taskless_task(name)


register()
register_taskless()

TASK_NAMES = tuple(
    [task_name(c) for c in _CLASSIFICATION] + [task_name(c) + ru.RANK_SUFFIX for c in _CLASSIFICATION]
    + [task_name("multirc"), task_name("record"), "super_glue_wsc_v102_simple_train",
       "super_glue_wsc_v102_simple_eval", "super_glue_boolq_v102_32shot", "super_glue_boolq_v102_32shot_rank",
       "super_glue_record_v102_32shot"])
TASKLESS_TASK_NAMES = tuple(ru.TASKLESS_PREFIX + n for n in TASK_NAMES if "32shot" not in n)
