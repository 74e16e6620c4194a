"""Tests for tasks/mpt_extra.py: MPT's 6 extra source tasks (and `_rank` variants) from TFDS mock data, their exact
text formats on hand-written TFDS-convention rows, the `mpt_source_12` mixture and the MPT default that uses them."""

import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

import xprompt_jax.tasks  # noqa: F401  (registers every task and mixture)
from xprompt_jax.evaluation import metrics
from xprompt_jax.tasks import mixtures
from xprompt_jax.tasks import mpt_extra
from xprompt_jax.tasks import sources
from task_helpers import tiny_copy

SPECS = {t.name: t for t in mpt_extra.CLASSIFICATION_TASKS + mpt_extra.MULTIPLE_CHOICE_TASKS}
MC_NAMES = [t.name for t in mpt_extra.MULTIPLE_CHOICE_TASKS]


def fake_rows(builder: str, split: str, n: int) -> list[dict]:
  """n rows in each multiple-choice builder's TFDS conventions (random mock data has 30-choice questions)."""
  rows = []
  for i in range(n):
    if builder == "openbookqa":
      rows.append({"question": {"stem": f"q{i}", **{f"choice_{c}": f"{c.lower()}{i}" for c in "ABCD"}},
                   "fact1": "f", "humanScore": 1.0, "clarity": 1.0, "turkIdAnonymized": "t", "answerKey": i % 4})
    elif builder == "ai2_arc":  # 3, 4, 5 choices; answerKey a ClassLabel index of A-E.
      k = 3 + i % 3
      rows.append({"id": str(i), "question": f"q{i}", "answerKey": i % k,
                   "choices": {"text": [f"c{j}" for j in range(k)], "label": list(range(k))}})
    elif builder == "race":  # Two questions per article; TFDS gives `options` as a ragged tensor.
      rows.append({"article": f"article {i}", "questions": [f"q{i}a", f"q{i}b"], "answers": ["ABCD"[i % 4], "C"],
                   "options": tf.ragged.constant([["w", "x", "y", "z"], ["1", "2", "3", "4"]]),
                   "example_id": str(i)})
    elif builder == "hellaswag":  # TFDS test rows are unlabelled (-1).
      rows.append({"context": f"ctx {i}", "endings": ["e0", "e1", "e2", "e3"], "activity_label": "a",
                   "label": -1 if "test" in split else i % 4, "split_type": "indomain", "source_id": "s"})
    else:
      raise AssertionError(f"no fake rows for {builder}")
  return rows


def examples_of(name: str, split: str, n: int = 4) -> list[dict]:
  def as_dataset(builder, split, **kwargs):
    del kwargs
    rows = fake_rows(builder.name, str(split), n)
    return tf.data.Dataset.from_generator(lambda: iter(rows), output_signature=builder.info.features.get_tensor_spec())

  mocked = {} if name.split("_rank")[0] not in MC_NAMES else {"as_dataset_fn": as_dataset}
  with tfds.testing.mock_data(num_examples=n, **mocked):
    ds = tiny_copy(name).get_dataset(None, split=split, shuffle=False, try_in_mem_cache=False)
    return list(ds.as_numpy_iterator())


def preprocess(name: str, row: dict) -> list[dict]:
  pre = seqio.get_mixture_or_task(name).preprocessors[0]
  return list(pre(tf.data.Dataset.from_tensors(row)).as_numpy_iterator())


@pytest.mark.parametrize("name,split", [(n, s) for n in SPECS for s in ("train", "validation", "test")])
def test_every_task_and_split_builds(name, split):
  spec = SPECS[name]
  task = seqio.get_mixture_or_task(name)
  examples = examples_of(name, split)
  assert len(examples) == (8 if name == "race_high_v200" else 4)
  unlabelled = name == "hellaswag_v110" and split == "test"
  for ex in examples:
    assert ex["inputs_pretokenized"].startswith(spec.prefix.encode() + b" ")
    assert ex["targets_pretokenized"].decode() in (("<unk>",) if unlabelled else spec.label_names)
    assert ex["inputs"].dtype == np.int32 and ex["inputs"][-1] == 1 and ex["targets"][-1] == 1
  if not unlabelled:
    targets = [task.postprocess_fn(ex["targets_pretokenized"], example=ex, is_target=True) for ex in examples]
    assert set(targets) <= set(range(len(spec.label_names)))
    assert metrics.accuracy(targets, targets) == {"accuracy": 100.0}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_rank_variant_scores_every_label(name):
  spec = SPECS[name]
  examples = examples_of(name + "_rank", "validation", n=3)
  if name in MC_NAMES:  # One candidate per letter the example has a choice for (ARC: 3, 4, 5 choices).
    per_example = {"ai2_arc_challenge_v100": [3, 4, 5], "race_high_v200": [4] * 6}.get(name, [4, 4, 4])
  else:
    per_example = [len(spec.label_names)] * 3
  assert len(examples) == sum(per_example)
  letters = [ex["targets_pretokenized"].decode() for ex in examples]
  expected = [label for k in per_example for label in spec.label_names[:k]]
  assert letters == expected
  assert [tuple(ex["idx"]) for ex in examples] == [(i, j) for i, k in enumerate(per_example) for j in range(k)]
  task = seqio.get_mixture_or_task(name + "_rank")
  targets = [task.postprocess_fn(ex["targets_pretokenized"], example=ex, is_target=True) for ex in examples]
  assert sum(correct for _, correct in targets) == len(per_example)
  scores = [0.0 if correct else -1.0 for _, correct in targets]
  assert task.metric_fns[0](targets, scores)["accuracy"] == 100.0


def test_classification_formats_follow_tfds_label_order():
  ex, = preprocess("ag_news_subset_v100", {"title": "Mars rover", "description": "It landed.", "label": 3})
  assert ex["inputs"] == b"ag_news title: Mars rover description: It landed." and ex["targets"] == b"Sci/Tech"
  anli = {"uid": "u", "context": "A cat sat.", "hypothesis": "An animal sat.", "label": 1}
  ex, = preprocess("anli_r1_v010", anli)
  assert ex["inputs"] == b"anli context: A cat sat. hypothesis: An animal sat." and ex["targets"] == b"neutral"
  assert preprocess("anli_r1_v010", dict(anli, label=2))[0]["targets"] == b"contradiction"
  assert preprocess("anli_r1_v010", dict(anli, label=-1))[0]["targets"] == b"<unk>"


def test_openbookqa_and_hellaswag_formats():
  question = {"stem": "What melts ice?", "choice_A": "cold", "choice_B": "heat", "choice_C": "dark", "choice_D": "air"}
  row = {"question": question, "fact1": "heat melts ice", "humanScore": 1.0, "clarity": 2.0, "turkIdAnonymized": "t",
         "answerKey": 1}
  ex, = preprocess("openbookqa_v010", row)
  assert ex["inputs"] == b"openbookqa question: What melts ice? A: cold B: heat C: dark D: air"
  assert ex["targets"] == b"B"
  row = {"context": "A man opens a jar.", "endings": ["he sings.", "he eats.", "it flies.", "it melts."],
         "activity_label": "Cooking", "label": np.int32(3), "split_type": "indomain", "source_id": "x"}
  ex, = preprocess("hellaswag_v110", row)
  assert ex["inputs"] == b"hellaswag question: A man opens a jar. A: he sings. B: he eats. C: it flies. D: it melts."
  assert ex["targets"] == b"D"
  assert preprocess("hellaswag_v110", dict(row, label=np.int32(-1)))[0]["targets"] == b"<unk>"


def test_race_flattens_one_example_per_question():
  row = {"article": "Tom has a dog.", "questions": ["Who has a dog?", "What does Tom have?"], "answers": ["A", "D"],
         "options": tf.ragged.constant([["Tom", "Ann", "Bob", "Sue"], ["a cat", "a cow", "a pig", "a dog"]]),
         "example_id": "high1.txt"}
  examples = preprocess("race_high_v200", row)
  assert [ex["inputs"] for ex in examples] == [
      b"race question: Who has a dog? A: Tom B: Ann C: Bob D: Sue article: Tom has a dog.",
      b"race question: What does Tom have? A: a cat B: a cow C: a pig D: a dog article: Tom has a dog."]
  assert [ex["targets"] for ex in examples] == [b"A", b"D"]
  dense = dict(row, options=row["options"].to_tensor())
  assert [(ex["inputs"], ex["targets"]) for ex in preprocess("race_high_v200", dense)] == [
      (ex["inputs"], ex["targets"]) for ex in examples]
  no_answers = dict(row, answers=tf.constant([], tf.string))
  assert [ex["targets"] for ex in preprocess("race_high_v200", no_answers)] == [b"<unk>", b"<unk>"]


def test_arc_answer_keys():
  # TFDS: ClassLabel indices of A-E (its builder maps the original "1".."4" keys to A-D); 3 choices here.
  row = {"id": "x", "question": "Which is a gas?", "answerKey": 2,
         "choices": {"text": ["ice", "water", "steam"], "label": [0, 1, 2]}}
  ex, = preprocess("ai2_arc_challenge_v100", row)
  assert ex["inputs"] == b"arc question: Which is a gas? A: ice B: water C: steam" and ex["targets"] == b"C"
  # The key names a choice by its label, not its position.
  shifted = dict(row, answerKey=3, choices={"text": ["ice", "water", "steam"], "label": [1, 2, 3]})
  assert preprocess("ai2_arc_challenge_v100", shifted)[0]["targets"] == b"C"
  # Raw string keys: digits "1".."4" and letters.
  numeric = dict(row, answerKey="4", choices={"text": ["a", "b", "c", "d"], "label": ["1", "2", "3", "4"]})
  ex, = preprocess("ai2_arc_challenge_v100", numeric)
  assert ex["inputs"] == b"arc question: Which is a gas? A: a B: b C: c D: d" and ex["targets"] == b"D"
  lettered = dict(numeric, answerKey="B", choices={"text": ["a", "b", "c", "d"], "label": ["A", "B", "C", "D"]})
  assert preprocess("ai2_arc_challenge_v100", lettered)[0]["targets"] == b"B"
  five = dict(row, answerKey=4, choices={"text": list("abcde"), "label": [0, 1, 2, 3, 4]})
  assert preprocess("ai2_arc_challenge_v100", five)[0]["targets"] == b"E"
  five_digits = dict(row, answerKey="5", choices={"text": list("abcde"), "label": ["1", "2", "3", "4", "5"]})
  assert preprocess("ai2_arc_challenge_v100", five_digits)[0]["targets"] == b"E"
  keys = mpt_extra.letter_index(tf.constant(["A", "E", "1", "3", "5", " B ", "", "0", "F", "AB"]))
  assert keys.numpy().tolist() == [0, 4, 0, 2, 4, 1, -1, -1, -1, -1]
  assert mpt_extra.letter_index(tf.constant([0, 3], tf.int64)).numpy().tolist() == [0, 3]
  for bad_key in ("", "F", "9"):
    assert preprocess("ai2_arc_challenge_v100", dict(numeric, answerKey=bad_key))[0]["targets"] == b"<unk>"


def test_sources_splits_and_default_tfds_versions():
  for name, spec in SPECS.items():
    task = seqio.get_mixture_or_task(name)
    assert task.source.tfds_name == spec.tfds_name
    assert task.splits == ("train", "validation", "test")
    builder, version = spec.tfds_name.split(":")
    assert str(tfds.builder(builder).version) == version, name
  assert seqio.get_mixture_or_task("ag_news_subset_v100").source.resolve("validation") == ("tfds", "test")
  assert seqio.get_mixture_or_task("race_high_v200").source.resolve("validation") == ("tfds", "dev")


@pytest.mark.parametrize("name", sorted(SPECS))
def test_local_mode_raises_naming_the_task(name):
  sources.set_data_source("local")
  try:
    with pytest.raises(sources.SplitUnavailableError, match=rf"'{name}'.*'train'.*needs TFDS"):
      seqio.get_mixture_or_task(name).get_dataset(None, split="train", shuffle=False)
  finally:
    sources.set_data_source(None)


def test_mpt_source_12_and_the_mpt_default():
  assert set(mixtures.MPT_EXTRA_SOURCE_TASKS) == set(SPECS) and len(mixtures.MPT_EXTRA_SOURCE_TASKS) == 6
  mixture = mixtures.get_task_or_mixture("mpt_source_12")
  assert {t.name for t in mixture.tasks} == set(mixtures.MPT_SOURCE_TASKS) | set(SPECS)
  from xprompt_jax.pipelines import mpt  # pylint: disable=g-import-not-at-top
  cfg = mpt.MPTConfig()
  assert cfg.extended_source_tasks == mixtures.MPT_EXTRA_SOURCE_TASKS
  mpt.check_tasks(cfg, extended=True)
