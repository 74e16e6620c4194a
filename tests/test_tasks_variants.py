"""Tests for tasks/variants.py and the taskless GLUE tasks: the sentinel objective's targets are a span-corruption
target's token shape, its postprocessor and rank candidates see through the sentinel, the QQP <-> MRPC transfer
tasks read the source's label words, and taskless GLUE text is prompt-tuning's for every local row."""
import re

import numpy as np
import pytest
import seqio

from xprompt_jax.evaluation import labels
from xprompt_jax.tasks import glue
from xprompt_jax.tasks import registry_utils as ru
from xprompt_jax.tasks import sources
from xprompt_jax.tasks import superglue
from xprompt_jax.tasks import variants
from xprompt_jax.tasks import vocab as vocab_lib

SENTINEL_ID = 32099  # T5's <extra_id_0>: the last id of the 32,100-id vocabulary.


@pytest.fixture
def local_mode():
  sources.set_data_source("local")
  yield
  sources.set_data_source(None)


def _rows(name, split, n=-1):
  ds = seqio.get_mixture_or_task(name).get_dataset({"inputs": 512, "targets": 16}, split=split, shuffle=False)
  return list(ds.take(n).as_numpy_iterator())


@pytest.mark.usefixtures("shared")
@pytest.mark.parametrize("base", ["taskless_super_glue_rte_v102", "taskless_super_glue_cb_v102",
                                  "taskless_super_glue_multirc_v102"])
def test_sentinel_targets_are_the_sentinel_id_then_the_targets_own_ids(local_mode, base):
  ours, reference = _rows(variants.add_sentinel_task(base).name, "validation", 50), _rows(base, "validation", 50)
  assert len(ours) == len(reference) == 50
  for a, b in zip(ours, reference):
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
    np.testing.assert_array_equal(a["targets"], np.concatenate([[SENTINEL_ID], b["targets"]]))  # EOS kept last.


def test_sentinel_postprocessor_strips_the_sentinel_then_runs_the_tasks_own():
  task = seqio.get_mixture_or_task("sentinel_taskless_super_glue_rte_v102")
  assert task.postprocess_fn(b"<extra_id_0> not_entailment", is_target=False) == 1
  assert task.postprocess_fn(b"<extra_id_0>entailment", is_target=False) == 0
  assert task.postprocess_fn(b"entailment", is_target=False) == 0  # No sentinel decoded: read as is.
  assert task.postprocess_fn(b"<extra_id_0> <extra_id_0> entailment", is_target=False) == -1  # Only one stripped.


def test_rank_candidates_of_the_variants():
  assert labels.label_candidates("sentinel_taskless_super_glue_rte_v102") == [
      "<extra_id_0> entailment", "<extra_id_0> not_entailment"]
  assert labels.label_candidates("sentinel_taskless_super_glue_multirc_v102") == ["<extra_id_0> False",
                                                                                 "<extra_id_0> True"]
  assert labels.label_candidates("sentinel_taskless_super_glue_record_v102") is None  # Free text stays free text.
  assert labels.label_candidates("taskless_glue_mrpc_from_qqp_v002") == ["not_duplicate", "duplicate"]
  assert labels.label_candidates("taskless_glue_qqp_from_mrpc_v002") == ["not_equivalent", "equivalent"]
  # The candidate behind the sentinel tokenizes exactly as the sentinel target does.
  vocab = vocab_lib.get_default_vocabulary()
  assert vocab.encode("<extra_id_0> entailment") == [SENTINEL_ID, *vocab.encode("entailment")]


def test_every_taskless_task_keeps_its_label_words_for_rank_classification():
  """A variant registered with the bound `task.postprocess_fn` would lose them (and rank classification)."""
  for name in (*superglue.TASKLESS_TASK_NAMES, *glue.TASKLESS_TASK_NAMES):
    base = name.removeprefix(ru.TASKLESS_PREFIX)
    assert labels.label_candidates(name) == labels.label_candidates(base), name
    assert ru.postprocess_fn_of(seqio.get_mixture_or_task(name)) is ru.postprocess_fn_of(
        seqio.get_mixture_or_task(base))


def test_transfer_tasks_score_the_sources_words_with_the_targets_metrics():
  task = seqio.get_mixture_or_task("taskless_glue_mrpc_from_qqp_v002")
  assert [task.postprocess_fn(w, is_target=False) for w in (b"not_duplicate", b"duplicate", b"equivalent")] == [
      0, 1, 1]
  assert task.postprocess_fn(b"equivalent", is_target=True) == 1  # Targets are MRPC's own words.
  assert list(task.metric_fns) == list(seqio.get_mixture_or_task("glue_mrpc_v002").metric_fns)
  back = seqio.get_mixture_or_task("taskless_glue_qqp_from_mrpc_v002")
  assert back.postprocess_fn(b"not_equivalent", is_target=False) == 0


def test_variant_evaluation_tasks_and_labels():
  assert ru.evaluation_tasks("sentinel_taskless_super_glue_wsc_v102_simple_train", "validation") == (
      "sentinel_taskless_super_glue_wsc_v102_simple_eval",)
  assert ru.evaluation_tasks("taskless_glue_mnli_v002", "validation") == (
      "taskless_glue_mnli_matched_v002", "taskless_glue_mnli_mismatched_v002")
  assert ru.class_labels("sentinel_taskless_super_glue_cb_v102") == ru.class_labels("super_glue_cb_v102")
  assert ru.base_task_name("sentinel_taskless_super_glue_rte_v102") == "super_glue_rte_v102"


@pytest.mark.usefixtures("shared")
@pytest.mark.parametrize("name", [n for n in glue.TASKLESS_TASK_NAMES if not n.endswith(ru.RANK_SUFFIX)])
def test_taskless_glue_drops_the_task_name_from_every_local_row(local_mode, name):
  """prompt-tuning's `remove_first_text_token` (its regex, here in Python's `re`) on every local row."""
  base = name.removeprefix(ru.TASKLESS_PREFIX)
  split = next(s for s in ("validation", "validation_matched", "train") if s in seqio.get_mixture_or_task(base).splits)
  try:
    ours, reference = _rows(name, split), _rows(base, split)
  except sources.SplitUnavailableError:
    pytest.skip(f"{base}[{split}] has no local file in ../shared")
  assert len(ours) == len(reference) > 0
  for a, b in zip(ours, reference):
    expected = re.sub(r"^[^ ]* ", "", b["inputs_pretokenized"].decode(), count=1)
    assert a["inputs_pretokenized"].decode() == expected
    assert a["targets_pretokenized"] == b["targets_pretokenized"]
