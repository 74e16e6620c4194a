"""The 6 extra source tasks of MPT's 12-source-task variant (Wang et al. 2023, Table 7), all from TFDS.

Classification, in T5's `<task> <key>: <value> ...` -> label-word format (`others.ClassificationTask`):

* `ag_news_subset_v100` (TFDS `ag_news_subset:1.0.0`, topic classification): `ag_news title: .. description: ..`
  -> World / Sports / Business / Sci/Tech. TFDS has only train and test: `validation` reads TFDS `test` too.
* `anli_r1_v010` (`anli/r1:0.1.0`, adversarial NLI): `anli context: .. hypothesis: ..` -> entailment / neutral /
  contradiction (TFDS's label order `e`, `n`, `c`).

Multiple choice, as `<prefix> question: <q> A: <choice> B: <choice> ... [article: <article>]` -> the answer letter:

* `openbookqa_v010` (`openbookqa:0.1.0`): `openbookqa question: <stem> A: .. D: ..` (`fact1` is not shown) -> A-D;
  `answerKey` is a ClassLabel index of A-D.
* `ai2_arc_challenge_v100` (`ai2_arc/ARC-Challenge:1.0.0`): `arc question: .. A: .. (3 to 5 choices)` -> A-E. TFDS
  stores `answerKey` and each choice's `label` as ClassLabel indices of A-E (its builder maps the original keys
  "1".."5" to letters); the target is the letter of the choice position whose label is `answerKey`. String keys
  (letters or digits "1".."5", as in the raw jsonl) are read too.
* `race_high_v200` (`race/high:2.0.0`, multi-choice reading comprehension): one TFDS row holds an article and
  several questions; it is flattened to one example per question, `race question: .. A: .. D: .. article: ..`
  -> A-D (`answers` are letters). `validation` reads TFDS `dev`.
* `hellaswag_v110` (`hellaswag:1.1.0`, commonsense reasoning): `hellaswag question: <context> A: <ending> .. D: ..`
  -> A-D (`label` is the ending's index).

Splits: train, validation, test. Metric: accuracy. Each has a `<name>_rank` variant (`metrics.rank_classification`)
scoring every label word, or for the multiple-choice tasks every letter the example has a choice for. Unlabelled
rows (label -1, an empty or unknown answer key) get the target `<unk>`. None has a local copy: with
`XPROMPT_DATA_SOURCE=local` they raise naming the task.
"""
import dataclasses
import functools
from typing import Callable, Optional

import seqio
import tensorflow as tf

from xprompt_jax.evaluation import metrics
from xprompt_jax.tasks import others
from xprompt_jax.tasks import registry_utils as ru
from xprompt_jax.tasks import sources
from xprompt_jax.tasks import vocab as vocab_lib

LETTERS = ("A", "B", "C", "D", "E")
_DIGITS = ("1", "2", "3", "4", "5")
_SPLITS = (("train", "train"), ("validation", "validation"), ("test", "test"))
_HINT = "This task has no local copy under <shared>/data; it needs TFDS (XPROMPT_DATA_SOURCE=tfds or auto)."

CLASSIFICATION_TASKS = (
    others.ClassificationTask("ag_news_subset_v100", "ag_news_subset:1.0.0", "ag_news", ("title", "description"),
                              ("World", "Sports", "Business", "Sci/Tech"),
                              splits=(("train", "train"), ("validation", "test"), ("test", "test"))),
    others.ClassificationTask("anli_r1_v010", "anli/r1:0.1.0", "anli", ("context", "hypothesis"),
                              ("entailment", "neutral", "contradiction")),
)


# ----------------------------------------------------------------------------------------------------------------------
# Multiple choice.


def letter_index(key: tf.Tensor) -> tf.Tensor:
  """Elementwise answer key -> 0-4: an int (a ClassLabel index of A-E) as is, "A".."E" or "1".."5"; else -1."""
  if key.dtype != tf.string:
    return tf.cast(key, tf.int32)
  names = tf.constant([LETTERS, _DIGITS])
  hit = tf.reduce_any(tf.equal(tf.strings.strip(key)[..., None, None], names), axis=-2)
  first = tf.argmax(tf.cast(hit, tf.int32), axis=-1, output_type=tf.int32)
  return tf.where(tf.reduce_any(hit, axis=-1), first, -1)


def multiple_choice_example(prefix: str, question: tf.Tensor, choices: tf.Tensor, answer: tf.Tensor,
                            article: Optional[tf.Tensor] = None) -> dict:
  """`{"inputs", "targets", "num_choices"}`: the letter of choice `answer`, `<unk>` when it is not a choice index."""
  n = tf.size(choices)
  with tf.control_dependencies([tf.debugging.assert_less_equal(n, len(LETTERS), f"{prefix}: more than 5 choices")]):
    letters = tf.constant(LETTERS)[:n]
  options = tf.strings.reduce_join(tf.strings.join([letters, choices], separator=": "), separator=" ")
  parts = [f"{prefix} question:", question, options] + ([] if article is None else ["article:", article])
  answer = tf.cast(answer, tf.int32)
  target = tf.cond((answer >= 0) & (answer < n), lambda: tf.gather(letters, tf.maximum(answer, 0)),
                   lambda: tf.constant("<unk>"))
  return {"inputs": tf.strings.join(parts, separator=" "), "targets": target, "num_choices": n}


def openbookqa_fields(x):
  q = x["question"]
  return q["stem"], tf.stack([q[f"choice_{c}"] for c in "ABCD"]), letter_index(x["answerKey"]), None


def arc_fields(x):
  key = letter_index(x["answerKey"])
  positions = tf.where(tf.equal(letter_index(x["choices"]["label"]), key))[:, 0]
  answer = tf.cond(tf.size(positions) > 0, lambda: tf.cast(positions[0], tf.int32), lambda: tf.constant(-1))
  return x["question"], x["choices"]["text"], answer, None


def race_questions(ds: tf.data.Dataset) -> tf.data.Dataset:
  """One row per question: `{"article", "question", "options", "answer"}` (a missing answer is "")."""

  def explode(x):
    n = tf.size(x["questions"])
    answers = tf.concat([x["answers"], tf.fill([tf.maximum(n - tf.size(x["answers"]), 0)], "")], axis=0)[:n]
    return tf.data.Dataset.from_tensor_slices({"article": tf.fill([n], x["article"]), "question": x["questions"],
                                               "options": x["options"][:n], "answer": answers})

  return ds.flat_map(explode)


def race_fields(x):
  return x["question"], x["options"], letter_index(x["answer"]), x["article"]


def hellaswag_fields(x):
  return x["context"], x["endings"], x["label"], None


@dataclasses.dataclass(frozen=True)
class MultipleChoiceTask:
  """One TFDS multiple-choice dataset: `fields(row) -> (question, choices, answer index, article or None)`."""
  name: str
  tfds_name: str
  prefix: str
  fields: Callable
  max_choices: int = 4
  splits: tuple[tuple[str, str], ...] = _SPLITS
  explode: Optional[Callable[[tf.data.Dataset], tf.data.Dataset]] = None  # Raw rows -> one row per question.

  @property
  def label_names(self) -> tuple[str, ...]:
    return LETTERS[:self.max_choices]


MULTIPLE_CHOICE_TASKS = (
    MultipleChoiceTask("openbookqa_v010", "openbookqa:0.1.0", "openbookqa", openbookqa_fields),
    MultipleChoiceTask("ai2_arc_challenge_v100", "ai2_arc/ARC-Challenge:1.0.0", "arc", arc_fields, max_choices=5),
    MultipleChoiceTask("race_high_v200", "race/high:2.0.0", "race", race_fields,
                       splits=(("train", "train"), ("validation", "dev"), ("test", "test")), explode=race_questions),
    MultipleChoiceTask("hellaswag_v110", "hellaswag:1.1.0", "hellaswag", hellaswag_fields),
)
TASK_NAMES = tuple(t.name for t in CLASSIFICATION_TASKS + MULTIPLE_CHOICE_TASKS)


def multiple_choice_text(ds: tf.data.Dataset, task: MultipleChoiceTask) -> tf.data.Dataset:
  """Raw TFDS rows of `task` -> `{"inputs", "targets", "num_choices"}` in the lettered format."""
  if task.explode is not None:
    ds = task.explode(ds)
  return ds.map(lambda x: multiple_choice_example(task.prefix, *task.fields(x)), num_parallel_calls=tf.data.AUTOTUNE)


def rank_over_choices(ds: tf.data.Dataset, mode: str = "eval") -> tf.data.Dataset:
  """Rank classification over the letters of each example's own choices (ARC has 3 to 5)."""
  letters = tf.constant(LETTERS)
  return ru.rank_classification(
      ds,
      inputs_fn=lambda ex: tf.fill([ex["num_choices"]], ex["inputs"]),
      targets_fn=lambda ex: letters[:ex["num_choices"]],
      is_correct_fn=lambda ex: tf.equal(letters[:ex["num_choices"]], ex["targets"]),
      mode=mode)


def register_multiple_choice(task: MultipleChoiceTask) -> None:
  """Registers `task.name` (generation + accuracy) and `task.name + '_rank'` (rank classification)."""
  source = sources.HybridSource(task.name, signature={}, tfds_name=task.tfds_name, tfds_splits=dict(task.splits),
                                hint=_HINT)
  preprocessor = functools.partial(multiple_choice_text, task=task)
  ru.add_text_task(task.name, source, preprocessor, postprocess_fn=ru.label_postprocessor(task.label_names),
                   metric_fns=[metrics.accuracy])
  rank_name = task.name + ru.RANK_SUFFIX
  seqio.TaskRegistry.remove(rank_name)
  seqio.TaskRegistry.add(rank_name, source=source, preprocessors=[preprocessor, rank_over_choices,
                                                                  *ru.text_preprocessors()],
                         output_features=vocab_lib.DEFAULT_OUTPUT_FEATURES,
                         postprocess_fn=ru.rank_classification_postprocessor, metric_fns=[metrics.rank_classification])


for _task in CLASSIFICATION_TASKS:
  others.register_task(_task)
for _task in MULTIPLE_CHOICE_TASKS:
  register_multiple_choice(_task)
