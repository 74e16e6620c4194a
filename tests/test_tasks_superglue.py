"""Tests for tasks/superglue.py: every task builds from TFDS mock data, local files give the published sizes and
T5's exact text, postprocessors feed the metrics, and the rank variants score each label."""
import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from xprompt_jax.evaluation import metrics
from xprompt_jax.tasks import registry_utils as ru
from xprompt_jax.tasks import sources
from xprompt_jax.tasks import superglue
from xprompt_jax.tasks import vocab as vocab_lib

RTE_VAL_0_INPUTS = ("rte hypothesis: Christopher Reeve had an accident. premise: Dana Reeve, the widow of the actor "
                    "Christopher Reeve, has died of lung cancer at age 44, according to the Christopher Reeve "
                    "Foundation.")


@pytest.fixture
def local_mode():
  sources.set_data_source("local")
  yield
  sources.set_data_source(None)


def _first(task_name, split, n=1):
  ds = seqio.get_mixture_or_task(task_name).get_dataset(None, split=split, shuffle=False)
  return list(ds.take(n).as_numpy_iterator())


def _eval_split(task):
  return "validation" if "validation" in task.splits else "test"


# The WSC tasks need real span indices (mock spans point outside the random text); they are tested on local files.
MOCKABLE = [n for n in superglue.TASK_NAMES if "wsc" not in n]


@pytest.mark.parametrize("name", MOCKABLE)
def test_builds_from_tfds_mock_data(name):
  sources.set_data_source("tfds")
  try:
    with tfds.testing.mock_data(num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE):
      task = seqio.get_mixture_or_task(name)
      examples = list(task.get_dataset(None, split=_eval_split(task), shuffle=False).take(2).as_numpy_iterator())
  finally:
    sources.set_data_source(None)
  assert examples
  for ex in examples:
    assert ex["inputs"].dtype == np.int32 and ex["inputs"][-1] == 1 and len(ex["inputs"]) > 2
    assert ex["targets"][-1] == 1


@pytest.mark.parametrize("name", ["super_glue_wsc_v102_simple_train", "super_glue_wsc_v102_simple_eval"])
def test_wsc_builds_from_tfds_with_valid_spans(name):
  """WSC needs span indices that match the text, so the mock TFDS data is given rather than random."""
  row = {"text": "Bob asked Tom if he can go.", "span1_text": "Tom", "span2_text": "he", "span1_index": 2,
         "span2_index": 4, "idx": 0, "label": 1}

  def as_dataset(self, split, **kwargs):
    del self, split, kwargs
    return tf.data.Dataset.from_tensors(dict(row, label=tf.constant(row["label"], tf.int64)))

  sources.set_data_source("tfds")
  try:
    with tfds.testing.mock_data(as_dataset_fn=as_dataset, policy=tfds.testing.MockPolicy.USE_CODE):
      task = seqio.get_mixture_or_task(name)
      ex = _first(name, task.splits[0])[0]
  finally:
    sources.set_data_source(None)
  assert ex["inputs_pretokenized"] == b"wsc: Bob asked Tom if *he* can go." and ex["targets_pretokenized"] == b"Tom"


def test_axb_is_renamed_to_rte_features_before_formatting_as_t5_does():
  """T5 rekeys AX-b's sentence1/sentence2 to premise/hypothesis, then formats it as RTE (sorted keys)."""
  row = {"sentence1": "The cat sat.", "sentence2": "A cat sat.", "idx": 0, "label": 0}

  def as_dataset(self, split, **kwargs):
    del self, split, kwargs
    return tf.data.Dataset.from_tensors(dict(row, label=tf.constant(0, tf.int64), idx=tf.constant(0, tf.int32)))

  sources.set_data_source("tfds")
  try:
    with tfds.testing.mock_data(as_dataset_fn=as_dataset, policy=tfds.testing.MockPolicy.USE_CODE):
      ex = _first("super_glue_axb_v102", "test")[0]
      rank = _first("super_glue_axb_v102_rank", "test")[0]
  finally:
    sources.set_data_source(None)
  assert ex["inputs_pretokenized"] == b"rte hypothesis: A cat sat. premise: The cat sat."
  assert ex["targets_pretokenized"] == b"entailment"
  assert rank["inputs_pretokenized"] == ex["inputs_pretokenized"]


@pytest.mark.parametrize("name,split,count", [
    ("super_glue_rte_v102", "validation", 277),
    ("super_glue_rte_v102", "train", 2490),
    ("super_glue_cb_v102", "validation", 56),
    ("super_glue_copa_v102", "validation", 100),
    ("super_glue_wic_v102", "validation", 638),
    ("super_glue_wsc_v102_simple_eval", "validation", 104),
    ("super_glue_multirc_v102", "validation", 4848),
    ("super_glue_boolq_v102", "validation", 3270),
    ("super_glue_boolq_v102_32shot", "train", 32),
    ("super_glue_boolq_v102_32shot", "dev32", 32),
    ("super_glue_record_v102_32shot", "train", 32),
])
def test_local_split_sizes(shared, local_mode, name, split, count):
  assert seqio.get_mixture_or_task(name).source.num_input_examples(split) == count


def test_rte_first_validation_example_exact_text_with_t5_vocab(shared, local_mode):
  ex = _first("super_glue_rte_v102", "validation")[0]
  assert ex["inputs_pretokenized"].decode() == RTE_VAL_0_INPUTS
  assert ex["targets_pretokenized"] == b"not_entailment"
  assert ex["idx"] == 0
  vocab = vocab_lib.get_default_vocabulary()
  assert vocab.vocab_size == 32100
  assert ex["inputs"][-1] == 1 and ex["targets"][-1] == 1  # EOS appended.
  assert vocab.decode(ex["inputs"][:-1].tolist()) == RTE_VAL_0_INPUTS
  assert vocab.decode(ex["targets"][:-1].tolist()) == "not_entailment"


def test_t5_formats_of_other_tasks(shared, local_mode):
  cb = _first("super_glue_cb_v102", "validation")[0]
  assert cb["inputs_pretokenized"].startswith(b"cb hypothesis: Valence was helping premise: Valence the void-brain")
  assert cb["targets_pretokenized"] == b"contradiction"
  copa = _first("super_glue_copa_v102", "validation")[0]
  assert copa["inputs_pretokenized"] == (b"copa choice1: The toilet filled with water. choice2: Water flowed from the "
                                         b"spout. premise: The man turned on the faucet. question: effect")
  assert copa["targets_pretokenized"] == b"choice2"
  wic = _first("super_glue_wic_v102", "validation")[0]
  assert wic["inputs_pretokenized"].endswith(b"showed real class. word: class")
  assert wic["targets_pretokenized"] == b"False"
  boolq = _first("super_glue_boolq_v102", "validation")[0]
  assert boolq["inputs_pretokenized"].startswith(b"boolq passage: Ethanol fuel -- ")
  assert b" question: does ethanol take more energy make that produces" in boolq["inputs_pretokenized"]
  multirc = _first("super_glue_multirc_v102", "validation")[0]
  assert multirc["inputs_pretokenized"].startswith(b"multirc question: Would the mass of a baseball affect how much "
                                                   b"force you have to use to pick it up? answer: No paragraph: ")
  assert b"<b>" not in multirc["inputs_pretokenized"] and b"<br>" not in multirc["inputs_pretokenized"]
  assert (multirc["idx/paragraph"], multirc["idx/question"], multirc["idx/answer"]) == (0, 0, 0)


def test_wsc_marks_the_pronoun_and_train_keeps_correct_referents(shared, local_mode):
  ex = _first("super_glue_wsc_v102_simple_eval", "validation")[0]
  assert ex["inputs_pretokenized"].startswith(b"wsc: Bernard , who had not told")
  assert ex["inputs_pretokenized"].endswith(b"could take his claim away from *him* .")
  assert ex["targets_pretokenized"] == b"anyone" and ex["label"] == 0
  train = seqio.get_mixture_or_task("super_glue_wsc_v102_simple_train")
  rows = list(train.get_dataset(None, "train", shuffle=False).as_numpy_iterator())
  assert len(rows) == 259 and {int(x["label"]) for x in rows} == {1}
  # T5's special case for the one text with a trailing space (train idx 137): glued '"' split off, no trailing space.
  (boy,) = [x["inputs_pretokenized"] for x in rows if x["idx"] == 137]
  assert boy == (b'wsc: The boy continued to whip the pony , and eventually the pony threw him over. John laughed out '
                 b'quite loud. "Good for *him* ," he said.')
  assert all(not x["inputs_pretokenized"].endswith(b" ") for x in rows)


def test_mark_wsc_pronoun_cases():
  assert superglue.mark_wsc_pronoun("Bob asked Tom if he can go.", "he", 4) == "Bob asked Tom if *he* can go."
  assert superglue.mark_wsc_pronoun('"Good for him," he said.', "him", 2) == '"Good for *him* ," he said.'
  assert superglue.mark_wsc_pronoun("they might want to use it , but", "it", 4) == "they might want to use *it* , but"
  with pytest.raises(ValueError, match="not found near word 1"):
    superglue.mark_wsc_pronoun("a b c d e f", "she", 1)


def test_wsc_postprocessor():
  ex = {"targets_pretokenized": b"The young gentleman", "label": 1}
  assert superglue.wsc_simple_postprocessor("young gentleman", ex) == 1
  assert superglue.wsc_simple_postprocessor("the pony", ex) == 0
  assert superglue.wsc_simple_postprocessor("", ex) == -1
  assert superglue.wsc_simple_postprocessor("x", ex, is_target=True) == 1


def test_record_32shot_format_and_metric_inputs(shared, local_mode):
  ex = _first("super_glue_record_v102_32shot", "train")[0]
  text = ex["inputs_pretokenized"].decode()
  assert text.startswith("record query: Speaking after the game, Mourinho said:")
  assert " entities: Blues, Branislav Ivanovic, Cesc Fabregas," in text and " passage: By Hamish Mackay" in text
  assert "@highlight" not in text
  assert ex["targets_pretokenized"] == b"Olimpija Ljubljana"
  task = seqio.get_mixture_or_task("super_glue_record_v102_32shot")
  target = task.postprocess_fn(b"", example=ex, is_target=True)
  assert target == {"group": (3088, 4756), "value": ["Olimpija Ljubljana"]}
  # One row per answer: the same query twice counts once.
  pred = task.postprocess_fn(b"olimpija ljubljana", example=ex)
  wrong = task.postprocess_fn(b"Chelsea", example=ex)
  [metric] = task.predict_metric_fns
  assert metric([target, target], [pred, wrong])["em"] == 100.0


def test_multirc_postprocessor_groups_by_question():
  task = seqio.get_mixture_or_task("super_glue_multirc_v102")
  ex = {"idx/question": np.int32(7)}
  target = task.postprocess_fn("True", example=ex, is_target=True)
  pred = task.postprocess_fn("False", example=ex, is_target=False)
  assert target == {"value": 1, "group": 7} and pred == {"value": 0, "group": 7}
  assert metrics.multirc_f1_em([target], [pred])["exact_match"] == 0.0


def test_label_postprocessor_maps_words_to_tfds_ids():
  task = seqio.get_mixture_or_task("super_glue_cb_v102")
  assert [task.postprocess_fn(w) for w in ("entailment", "contradiction", "neutral", "maybe")] == [0, 1, 2, -1]


def test_rank_variant_scores_every_label(shared, local_mode):
  task = seqio.get_mixture_or_task("super_glue_cb_v102_rank")
  exs = list(task.get_dataset(None, "validation", shuffle=False).take(6).as_numpy_iterator())
  assert [tuple(e["idx"]) for e in exs] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
  assert [e["targets_pretokenized"] for e in exs[:3]] == [b"entailment", b"contradiction", b"neutral"]
  assert all(e["inputs_pretokenized"] == exs[0]["inputs_pretokenized"] for e in exs[:3])
  assert [bool(e["is_correct"]) for e in exs[:3]] == [False, True, False]  # CB val 0 is "contradiction".
  targets = [task.postprocess_fn(None, example=e, is_target=True) for e in exs]
  assert targets[:3] == [(0, False), (0, True), (0, False)]
  scores = [float(e["is_correct"]) for e in exs]  # A perfect scorer.
  [metric] = task.score_metric_fns
  assert metric(targets, scores)["accuracy"] == 100.0


def test_rank_classification_modes():
  ds = tf.data.Dataset.from_tensor_slices({"inputs": ["a", "b"], "targets": ["yes", "no"]})
  train = list(ru.rank_over_labels(ds, ("no", "yes"), mode="train").as_numpy_iterator())
  assert [(tuple(e["idx"]), e["targets"]) for e in train] == [((0, 1), b"yes"), ((1, 0), b"no")]
  batched = list(ru.rank_over_labels(ds, ("no", "yes"), mode="fewshot_eval").as_numpy_iterator())
  assert batched[0]["targets"].tolist() == [b"no", b"yes"]
  with pytest.raises(ValueError, match="mode must be"):
    ru.rank_over_labels(ds, ("no", "yes"), mode="score")


def test_missing_boolq_train_points_to_fewglue(shared, local_mode):
  source = seqio.get_mixture_or_task("super_glue_boolq_v102").source
  with pytest.raises(sources.SplitUnavailableError) as e:
    source.get_dataset("train", shuffle=False)
  msg = str(e.value)
  assert "'super_glue_boolq_v102'" in msg and "'train'" in msg and "super_glue_boolq_v102_32shot" in msg
  assert str(shared / "data") in msg


def test_unknown_split_in_tfds_mode_is_clear():
  sources.set_data_source("tfds")
  try:
    source = seqio.get_mixture_or_task("super_glue_boolq_v102_32shot").source
    with pytest.raises(sources.SplitUnavailableError, match="'dev32' with data source 'tfds'.*FewGLUE"):
      source.get_dataset("dev32", shuffle=False)
  finally:
    sources.set_data_source(None)


def _evaluator(name):
  return seqio.Evaluator(mixture_or_task_name=name, feature_converter=seqio.EncDecFeatureConverter(pack=False),
                         eval_split="validation", sequence_length=None)


def test_seqio_evaluator_scores_rank_task_end_to_end(shared, local_mode):
  """Through seqio's evaluation caching: a scorer preferring "contradiction" gets CB's share of that label."""
  vocab = vocab_lib.get_default_vocabulary()
  rows = sources.super_glue_rows("cb")(shared / "data/superglue/CB/val.jsonl")
  expected = 100.0 * np.mean([r["label"] == 1 for r in rows])

  def score_fn(ds):
    return [(i, float(vocab.decode(ex["decoder_target_tokens"].tolist()) == "contradiction"))
            for i, ex in ds.as_numpy_iterator()]

  evaluator = _evaluator("super_glue_cb_v102_rank")  # Held here so it is released on this thread.
  results, _ = evaluator.evaluate(compute_metrics=True, predict_fn=lambda ds: [], score_fn=score_fn)
  assert results.result()["super_glue_cb_v102_rank"]["accuracy"] == pytest.approx(expected)


def test_seqio_evaluator_multirc_groups_reach_the_metric(shared, local_mode):
  """Echoing the targets gives F1a = EM = 100: the question ids survive caching into the grouped metric."""

  def predict_fn(ds):
    return [(i, ex["decoder_target_tokens"]) for i, ex in ds.as_numpy_iterator()]

  evaluator = _evaluator("super_glue_multirc_v102")  # Held here so it is released on this thread.
  results, _ = evaluator.evaluate(compute_metrics=True, predict_fn=predict_fn, score_fn=lambda ds: [])
  assert results.result()["super_glue_multirc_v102"] == pytest.approx({"f1": 100.0, "exact_match": 100.0})


@pytest.mark.usefixtures("shared")
@pytest.mark.parametrize("name", [n for n in superglue.TASKLESS_TASK_NAMES if not n.endswith(ru.RANK_SUFFIX)])
def test_taskless_tasks_drop_the_task_name_from_every_local_row(local_mode, name):
  """prompt-tuning's `taskless_*` text (its `remove_first_text_token` regex, here in Python's `re`) for every local
  row of the evaluation split; targets and everything else as the T5-named task."""
  import re
  base = name[len(ru.TASKLESS_PREFIX):]
  task = seqio.get_mixture_or_task(base)
  split = "train" if base.endswith("simple_train") else _eval_split(task)
  try:
    ours = _first(name, split, n=-1)
    reference = _first(base, split, n=-1)
  except sources.SplitUnavailableError:
    pytest.skip(f"{base}[{split}] has no local file in ../shared")
  assert len(ours) == len(reference) > 0
  first_word = reference[0]["inputs_pretokenized"].decode().split(" ")[0]
  for a, b in zip(ours, reference):
    expected = re.sub(r"^[^ ]* ", "", b["inputs_pretokenized"].decode(), count=1)
    assert a["inputs_pretokenized"].decode() == expected
    assert not expected.startswith(first_word + " ")  # T5's task name ("rte", "wsc:", ...) is gone.
    assert a["targets_pretokenized"] == b["targets_pretokenized"]
  assert list(seqio.get_mixture_or_task(name).metric_fns) == list(task.metric_fns)


def test_taskless_wsc_trains_on_simple_train_and_is_evaluated_on_taskless_simple_eval():
  assert ru.evaluation_tasks("taskless_super_glue_wsc_v102_simple_train", "validation") == (
      "taskless_super_glue_wsc_v102_simple_eval",)
  assert ru.evaluation_tasks("taskless_super_glue_rte_v102", "validation") == ("taskless_super_glue_rte_v102",)
  assert ru.class_labels("taskless_super_glue_cb_v102") == ru.class_labels("super_glue_cb_v102")
