"""Tests for tasks/glue.py: every task builds from TFDS mock data, the local dev/train files give the published
sizes and T5's text, STS-B rounds to 0.2 and parses back, and MNLI's matched/mismatched splits are separate tasks."""
import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from xprompt_jax.tasks import glue
from xprompt_jax.tasks import sources


@pytest.fixture
def local_mode():
  sources.set_data_source("local")
  yield
  sources.set_data_source(None)


def _first(task_name, split, n=1):
  ds = seqio.get_mixture_or_task(task_name).get_dataset(None, split=split, shuffle=False)
  return list(ds.take(n).as_numpy_iterator())


def _eval_split(task):
  return next(s for s in ("validation", "validation_matched") if s in task.splits)


@pytest.mark.parametrize("name", glue.TASK_NAMES)
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


@pytest.mark.parametrize("name,split,count", [
    ("glue_cola_v002", "validation", 1043),
    ("glue_mrpc_v002", "validation", 408),
    ("glue_qnli_v002", "validation", 5463),
    ("glue_rte_v002", "validation", 277),
    ("glue_sst2_v002", "validation", 872),
    ("glue_stsb_v002", "validation", 1500),
    ("glue_mnli_v002", "train", 8999),
    ("glue_qqp_v002", "train", 8999),
    ("glue_rte_v002", "train", 2240),
    ("glue_rte_v002", glue.RESPLIT_DEV, 249),
    ("glue_mnli_v002", glue.RESPLIT_DEV, 1000),
])
def test_local_split_sizes(shared, local_mode, name, split, count):
  assert seqio.get_mixture_or_task(name).source.num_input_examples(split) == count


def test_t5_formats_from_local_files(shared, local_mode):
  rte = _first("glue_rte_v002", "validation")[0]
  assert rte["inputs_pretokenized"] == (
      b"rte sentence1: Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age 44, "
      b"according to the Christopher Reeve Foundation. sentence2: Christopher Reeve had an accident.")
  assert rte["targets_pretokenized"] == b"not_entailment"
  cola = _first("glue_cola_v002", "validation")[0]
  assert cola["inputs_pretokenized"] == b"cola sentence: The sailors rode the breeze clear of the rocks."
  assert cola["targets_pretokenized"] == b"acceptable"
  mrpc = _first("glue_mrpc_v002", "validation")[0]
  assert mrpc["inputs_pretokenized"].startswith(b"mrpc sentence1: He said the foodservice pie business")
  assert mrpc["targets_pretokenized"] == b"equivalent"
  qnli = _first("glue_qnli_v002", "validation")[0]
  assert qnli["inputs_pretokenized"].startswith(b"qnli question: What came into force after the new constitution")
  mnli = _first("glue_mnli_v002", "train")[0]
  assert mnli["inputs_pretokenized"].startswith(b"mnli hypothesis: ") and b" premise: " in mnli["inputs_pretokenized"]
  assert mnli["targets_pretokenized"] in (b"entailment", b"neutral", b"contradiction")


def test_stsb_rounds_to_point_two_and_parses_back(shared, local_mode):
  ex = _first("glue_stsb_v002", "validation")[0]
  assert ex["inputs_pretokenized"] == (b"stsb sentence1: A man with a hard hat is dancing. "
                                       b"sentence2: A man wearing a hard hat is dancing.")
  assert ex["targets_pretokenized"] == b"5.0"
  ds = tf.data.Dataset.from_tensor_slices({"sentence1": ["a"] * 3, "sentence2": ["b"] * 3,
                                           "label": [3.75, 0.118, 2.5], "idx": [0, 1, 2]})
  # tf.round (as in T5) rounds halves to even: 2.5 * 5 = 12.5 -> 12 -> "2.4".
  assert [e["targets"] for e in glue.stsb_text(ds).as_numpy_iterator()] == [b"3.8", b"0.2", b"2.4"]
  task = seqio.get_mixture_or_task("glue_stsb_v002")
  assert task.postprocess_fn(b"3.8") == pytest.approx(3.8) and task.postprocess_fn("n/a") == -1.0


def test_mnli_matched_and_mismatched_are_eval_tasks():
  matched = seqio.get_mixture_or_task("glue_mnli_matched_v002").source
  mismatched = seqio.get_mixture_or_task("glue_mnli_mismatched_v002").source
  sources.set_data_source("tfds")
  try:
    assert matched.resolve("validation") == ("tfds", "validation_matched")
    assert mismatched.resolve("validation") == ("tfds", "validation_mismatched")
    assert "train" not in matched.splits
  finally:
    sources.set_data_source(None)


def test_mnli_is_evaluated_on_both_sets():
  """A run trained on MNLI is evaluated on matched and mismatched (T5 reports both); asked for a split MNLI itself
  has (the local re-split dev), on MNLI."""
  from xprompt_jax.tasks import registry_utils as ru
  both = ("glue_mnli_matched_v002", "glue_mnli_mismatched_v002")
  assert ru.evaluation_tasks("glue_mnli_v002") == ru.evaluation_tasks("glue_mnli_v002", "validation") == both
  assert ru.evaluation_tasks("glue_mnli_v002_rank", "validation") == tuple(f"{t}_rank" for t in both)
  assert ru.evaluation_tasks("glue_mnli_v002", glue.RESPLIT_DEV) == ("glue_mnli_v002",)
  assert all("validation" in seqio.get_mixture_or_task(t).splits for t in both)
  assert "validation" not in seqio.get_mixture_or_task("glue_mnli_v002").splits


def test_mnli_dev_is_not_local(shared, local_mode):
  source = seqio.get_mixture_or_task("glue_mnli_matched_v002").source
  with pytest.raises(sources.SplitUnavailableError, match="'glue_mnli_matched_v002'.*'validation'.*tfds"):
    source.get_dataset("validation", shuffle=False)


def test_rank_variant_and_label_postprocessor(shared, local_mode):
  task = seqio.get_mixture_or_task("glue_sst2_v002_rank")
  exs = _first("glue_sst2_v002_rank", "validation", n=2)
  assert [e["targets_pretokenized"] for e in exs] == [b"negative", b"positive"]
  assert [task.postprocess_fn(0.0, example=e, is_target=True) for e in exs] == [(0, True), (0, False)]
  plain = seqio.get_mixture_or_task("glue_qqp_v002")
  assert [plain.postprocess_fn(w) for w in (b"duplicate", "not_duplicate", "?")] == [1, 0, -1]
  assert [f.__name__ for f in plain.predict_metric_fns] == ["f1_binary", "accuracy"]


def test_resplit_dev_is_local_only():
  source = seqio.get_mixture_or_task("glue_qqp_v002").source
  assert glue.RESPLIT_DEV in source.splits
  sources.set_data_source("tfds")
  try:
    with pytest.raises(sources.SplitUnavailableError, match="'resplit_dev' with data source 'tfds'"):
      source.get_dataset(glue.RESPLIT_DEV, shuffle=False)
  finally:
    sources.set_data_source(None)
