"""Extractive QA tasks as text-to-text: SQuAD v1.1 (T5's format and names) and the MRQA 2019 shared-task sets.

* `squad_v010_allanswers`: TFDS `squad/v1.1:3.0.0`, T5's `question: <q> context: <c>` with punctuation padded as
  T5 does; the target is the first answer, the metric (`squad_em_f1`) uses every reference answer.
* `squad_v010`: the same examples scored against the single training target.
* `mrqa_<config>_v100`: TFDS `mrqa/<config>:1.0.0` in the same format (unpadded). The in-domain sets
  (squad, news_qa, trivia_qa, search_qa, hotpot_qa, natural_questions) have `train` and `validation`; the
  out-of-domain sets of Lester et al.'s domain-shift table (textbook_qa, bio_asq, race, relation_extraction, duo_rc,
  drop) only have TFDS's `test`, which holds the shared task's out-of-domain dev sets (its test sets were never
  released): their `validation` split reads it too, so a run evaluated on `validation` (Lester et al.'s transfer
  table, prompt-tuning's `mrqa_*` tasks) covers them. All use every reference answer in `squad_em_f1`.

None of these has a local copy under `<shared>/data`: with `XPROMPT_DATA_SOURCE=local` they raise naming the task.
"""
import tensorflow as tf

from xprompt_jax.evaluation import metrics
from xprompt_jax.tasks import registry_utils as ru
from xprompt_jax.tasks import sources

SQUAD_TFDS = "squad/v1.1:3.0.0"
MRQA_VERSION = "1.0.0"
MRQA_IN_DOMAIN = ("squad", "news_qa", "trivia_qa", "search_qa", "hotpot_qa", "natural_questions")
MRQA_OUT_OF_DOMAIN = ("textbook_qa", "bio_asq", "race", "relation_extraction", "duo_rc", "drop")
_HINT = "QA data is not in the shared folder; it needs TFDS (XPROMPT_DATA_SOURCE=tfds or auto)."


def pad_punctuation(text: tf.Tensor) -> tf.Tensor:
  """T5's SQuAD tokenisation aid: spaces around every character that is not a letter, digit, mark or '_'."""
  text = tf.strings.regex_replace(text, r"([^_\s\p{N}\p{L}\p{M}])", r" \1 ")
  return tf.strings.strip(tf.strings.regex_replace(text, r"\s+", " "))


def qa_text(question: tf.Tensor, context: tf.Tensor, answers: tf.Tensor) -> dict[str, tf.Tensor]:
  """`question: <q> context: <c>` -> the first answer ('' when there is none); all answers kept as `answers`."""
  target = tf.cond(tf.size(answers) > 0, lambda: answers[0], lambda: tf.constant(""))
  return {"inputs": tf.strings.join(["question:", question, "context:", context], separator=" "),
          "targets": target, "answers": answers}


def squad_text(ds: tf.data.Dataset) -> tf.data.Dataset:
  """TFDS SQuAD -> T5's padded `question: ... context: ...` examples (keeps `id` and every answer)."""

  def fn(x):
    ex = qa_text(pad_punctuation(x["question"]), pad_punctuation(x["context"]),
                 pad_punctuation(x["answers"]["text"]))
    ex["id"] = x["id"]
    return ex

  return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def mrqa_text(ds: tf.data.Dataset) -> tf.data.Dataset:
  """TFDS MRQA -> `question: ... context: ...` examples (keeps `qid` and every answer)."""

  def fn(x):
    ex = qa_text(x["question"], x["context"], x["answers"])
    ex["qid"] = x["qid"]
    return ex

  return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def tfds_only_source(name: str, tfds_name: str, splits: dict[str, str]) -> sources.HybridSource:
  """A source with no local files: follows the `XPROMPT_DATA_SOURCE` setting (local mode raises clearly)."""
  return sources.HybridSource(name, signature={}, tfds_name=tfds_name, tfds_splits=splits, hint=_HINT)


def mrqa_task_name(config: str) -> str:
  return f"mrqa_{config}_v100"


def register() -> None:
  """Registers the SQuAD and MRQA tasks."""
  squad_splits = {"train": "train", "validation": "validation"}
  ru.add_text_task("squad_v010_allanswers", tfds_only_source("squad_v010_allanswers", SQUAD_TFDS, squad_splits),
                   squad_text, postprocess_fn=ru.qa_postprocessor, metric_fns=[metrics.squad_em_f1])
  ru.add_text_task("squad_v010", tfds_only_source("squad_v010", SQUAD_TFDS, squad_splits), squad_text,
                   metric_fns=[metrics.squad_em_f1])
  for config in MRQA_IN_DOMAIN + MRQA_OUT_OF_DOMAIN:
    name = mrqa_task_name(config)
    splits = ({"train": "train", "validation": "validation"} if config in MRQA_IN_DOMAIN
              else {"validation": "test", "test": "test"})
    ru.add_text_task(name, tfds_only_source(name, f"mrqa/{config}:{MRQA_VERSION}", splits), mrqa_text,
                     postprocess_fn=ru.qa_postprocessor, metric_fns=[metrics.squad_em_f1])


register()
