"""Tests for tasks/others.py: WinoGrande, Yelp-2, SciTail, PAWS-Wiki (and `_rank` variants) from TFDS mock data."""

import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from xprompt_jax.evaluation import metrics
from xprompt_jax.tasks import others
from xprompt_jax.tasks import sources
from task_helpers import tiny_copy

BY_NAME = {t.name: t for t in others.TASKS}


def examples_of(name: str, split: str, n: int = 4) -> list[dict]:
  with tfds.testing.mock_data(num_examples=n):
    ds = tiny_copy(name).get_dataset(None, split=split, shuffle=False, try_in_mem_cache=False)
    return list(ds.as_numpy_iterator())


CASES = [("winogrande_v120", "train"), ("winogrande_v120", "train_xs"), ("winogrande_v120", "validation"),
         ("yelp_polarity_v020", "test"), ("scitail_v100", "validation"), ("paws_wiki_v110", "test")]


@pytest.mark.parametrize("name,split", CASES)
def test_task_builds_and_scores_100_on_its_targets(name, split):
  spec = BY_NAME[name]
  task = seqio.get_mixture_or_task(name)
  examples = examples_of(name, split)
  assert len(examples) == 4
  for ex in examples:
    assert ex["inputs_pretokenized"].startswith(spec.prefix.encode() + b" " + spec.feature_names[0].encode() + b": ")
    assert ex["targets_pretokenized"].decode() in spec.label_names
    assert ex["inputs"].dtype == np.int32 and ex["inputs"][-1] == 1 and ex["targets"][-1] == 1
  targets = [task.postprocess_fn(ex["targets_pretokenized"], example=ex, is_target=True) for ex in examples]
  assert set(targets) <= {0, 1}
  assert metrics.accuracy(targets, targets) == {"accuracy": 100.0}


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_rank_variant_scores_every_label(name):
  spec = BY_NAME[name]
  split = "test" if name == "yelp_polarity_v020" else "validation"
  examples = examples_of(name + "_rank", split, n=3)
  assert len(examples) == 3 * len(spec.label_names)
  assert [ex["targets_pretokenized"].decode() for ex in examples[:2]] == list(spec.label_names)
  task = seqio.get_mixture_or_task(name + "_rank")
  targets = [task.postprocess_fn(ex["targets_pretokenized"], example=ex, is_target=True) for ex in examples]
  scores = [0.0 if correct else -1.0 for _, correct in targets]
  assert metrics.rank_classification(targets, scores, num_classes=2)["accuracy"] == 100.0


def test_label_words_follow_tfds_label_order():
  # Rows in TFDS conventions: WinoGrande label 0 means option1 ('1'), SciTail 0 'entails', PAWS 1 'paraphrase'.
  wino = {"sentence": "The trophy did not fit in the _.", "option1": "suitcase", "option2": "trophy", "label": 0}
  pre = seqio.get_mixture_or_task("winogrande_v120").preprocessors[0]
  ex = next(pre(tf.data.Dataset.from_tensors(wino)).as_numpy_iterator())
  assert ex["inputs"] == b"winogrande sentence: The trophy did not fit in the _. option1: suitcase option2: trophy"
  assert ex["targets"] == b"option1"
  paws = {"sentence1": "a b", "sentence2": "b a", "label": 1}
  pre = seqio.get_mixture_or_task("paws_wiki_v110").preprocessors[0]
  ex = next(pre(tf.data.Dataset.from_tensors(paws)).as_numpy_iterator())
  assert ex["inputs"] == b"paws sentence1: a b sentence2: b a" and ex["targets"] == b"paraphrase"
  unlabelled = dict(wino, label=-1)
  pre = seqio.get_mixture_or_task("winogrande_v120").preprocessors[0]
  assert next(pre(tf.data.Dataset.from_tensors(unlabelled)).as_numpy_iterator())["targets"] == b"<unk>"


def test_sources_and_splits():
  wino = seqio.get_mixture_or_task("winogrande_v120")
  assert wino.source.tfds_name == "winogrande:1.2.0"
  assert set(wino.splits) == {"train", "validation", "test", "train_xs", "train_s", "train_m", "train_l", "train_xl"}
  assert seqio.get_mixture_or_task("scitail_v100").source.tfds_name == "sci_tail:1.0.0"
  assert seqio.get_mixture_or_task("paws_wiki_v110").source.tfds_name == "paws_wiki/labeled_final_raw:1.1.0"
  assert seqio.get_mixture_or_task("yelp_polarity_v020").splits == ("train", "test")


def test_local_mode_raises_naming_the_task():
  sources.set_data_source("local")
  try:
    with pytest.raises(sources.SplitUnavailableError, match=r"scitail_v100.*'validation'"):
      seqio.get_mixture_or_task("scitail_v100").get_dataset(None, split="validation", shuffle=False)
  finally:
    sources.set_data_source(None)
