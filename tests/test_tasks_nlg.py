"""Tests for tasks/nlg.py: the official E2E CSVs (row counts, grouping, first example, no train), E2E-cleaned and
WebNLG from TFDS mock data, reference grouping, and the wiring of references into BLEU / ROUGE."""
import csv

import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from xprompt_jax.evaluation import metrics
from xprompt_jax.tasks import nlg
from xprompt_jax.tasks import sources
from task_helpers import tiny_copy



def examples_of(name: str, split: str) -> list[dict]:
  ds = tiny_copy(name).get_dataset(None, split=split, shuffle=False, try_in_mem_cache=False)
  return list(ds.as_numpy_iterator())


# ----------------------------------------------------------------------------------------------------------------------
# The official E2E files.

FIRST_DEV_MR = "name[Alimentum], area[city centre], familyFriendly[no]"
FIRST_DEV_REF = "There is a place in the city centre, Alimentum, that is not family-friendly."


@pytest.mark.parametrize("relpath,rows", [("e2e_nlg/dev.csv", 4672), ("e2e_nlg/test_w_refs.csv", 4693)])
def test_official_csv_row_counts(shared, relpath, rows):
  parsed = nlg.read_e2e_csv(shared / "data" / relpath)
  assert len(parsed) == rows
  with open(shared / "data" / relpath, encoding="utf-8", newline="") as f:
    assert [(r["mr"], r["ref"]) for r in csv.DictReader(f)] == [(mr, ref) for _, mr, ref in parsed]


def test_e2e_validation_groups_references_by_mr(shared):
  examples = examples_of("e2e_nlg", "validation")
  rows = nlg.read_e2e_csv(shared / "data" / "e2e_nlg" / "dev.csv")
  assert len(examples) == len({mr for _, mr, _ in rows}) == 547
  assert sum(len(ex["references"]) for ex in examples) == 4672
  first = examples[0]
  assert first["inputs_pretokenized"].decode() == FIRST_DEV_MR
  assert first["targets_pretokenized"].decode() == FIRST_DEV_REF
  assert [r.decode() for r in first["references"]] == [ref for _, mr, ref in rows if mr == FIRST_DEV_MR]
  assert first["inputs"].dtype == np.int32 and first["inputs"][-1] == 1 and first["targets"][-1] == 1


def test_e2e_test_split(shared):
  examples = examples_of("e2e_nlg", "test")
  assert len(examples) == 630 and sum(len(ex["references"]) for ex in examples) == 4693
  assert examples[0]["inputs_pretokenized"] == b"name[Blue Spice], eatType[coffee shop], area[city centre]"


@pytest.mark.parametrize("mode", ["local", "auto", "tfds"])
def test_e2e_train_is_a_clear_error(shared, mode):
  sources.set_data_source(mode)
  try:
    with pytest.raises(sources.SplitUnavailableError, match=r"(?s)'e2e_nlg' has no split 'train'.*e2e_cleaned_v010"):
      seqio.get_mixture_or_task("e2e_nlg").get_dataset(None, split="train", shuffle=False)
  finally:
    sources.set_data_source(None)


def test_e2e_references_feed_bleu_and_rouge(shared):
  task = seqio.get_mixture_or_task("e2e_nlg")
  examples = examples_of("e2e_nlg", "validation")[:40]
  targets = [task.postprocess_fn(ex["targets_pretokenized"], example=ex, is_target=True) for ex in examples]
  assert targets[0][0] == FIRST_DEV_REF and len(targets[0]) > 1
  # Predicting one of the references exactly gives the maximum scores.
  predictions = [task.postprocess_fn(ex["targets_pretokenized"], example=ex) for ex in examples]
  assert metrics.bleu(targets, predictions)["bleu"] == pytest.approx(100.0)
  assert metrics.rouge(targets, predictions) == pytest.approx({"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0})
  # A prediction matching only a later reference still counts: references beyond the first are used.
  later = [t[-1] for t in targets]
  assert metrics.bleu(targets, later)["bleu"] == pytest.approx(100.0)
  assert metrics.bleu([t[:1] for t in targets], later)["bleu"] < 60.0


def test_malformed_e2e_csv_names_file_and_line(tmp_path):
  path = tmp_path / "bad.csv"
  path.write_text('mr,ref\n"name[A], food[B]",ok\n"name[A] food",oops\n', encoding="utf-8")
  with pytest.raises(sources.LocalDataError, match=r"bad\.csv:3: malformed E2E row"):
    nlg.read_e2e_csv(path)
  path.write_text("meaning,text\nx,y\n", encoding="utf-8")
  with pytest.raises(sources.LocalDataError, match=r"bad\.csv:1: expected the E2E header"):
    nlg.read_e2e_csv(path)


# ----------------------------------------------------------------------------------------------------------------------
# TFDS tasks (mock data with realistic rows: tfds' random mock draws table columns of unequal lengths).


def _table(cells):
  return {"column_header": [c[0] for c in cells], "row_number": [c[1] for c in cells],
          "content": [c[2] for c in cells]}


E2E_ROWS = [
    {"input_text": {"table": _table([("name", 1, "The Eagle"), ("eatType", 1, "coffee shop")])},
     "target_text": "The Eagle is a coffee shop."},
    {"input_text": {"table": _table([("name", 1, "Aromi"), ("area", 1, "riverside")])},
     "target_text": "Aromi is by the river."},
    {"input_text": {"table": _table([("name", 1, "The Eagle"), ("eatType", 1, "coffee shop")])},
     "target_text": "There is a coffee shop called The Eagle."},
]
WEB_NLG_ROWS = [
    {"input_text": {"context": "Airport", "table": _table([
        ("subject", 0, "Aarhus_Airport"), ("predicate", 0, "cityServed"), ("object", 0, "Aarhus"),
        ("subject", 1, "Aarhus"), ("predicate", 1, "country"), ("object", 1, "Denmark")])},
     "target_text": "Aarhus Airport serves Aarhus, Denmark."},
    {"input_text": {"context": "Airport", "table": _table([
        ("subject", 0, "Aarhus_Airport"), ("predicate", 0, "cityServed"), ("object", 0, "Aarhus"),
        ("subject", 1, "Aarhus"), ("predicate", 1, "country"), ("object", 1, "Denmark")])},
     "target_text": "The airport of Aarhus in Denmark."},
]


def _mock_rows(rows):
  def as_dataset(self, *args, **kwargs):
    del args, kwargs
    return tf.data.Dataset.from_generator(lambda: iter(rows), output_signature=self.info.features.get_tensor_spec())
  return tfds.testing.mock_data(as_dataset_fn=as_dataset)


def test_e2e_cleaned_rows_and_grouped_eval():
  with _mock_rows(E2E_ROWS):
    train = examples_of("e2e_cleaned_v010", "train")
    grouped = examples_of("e2e_cleaned_v010_allrefs", "test")
  assert [ex["inputs_pretokenized"] for ex in train] == [b"name[The Eagle], eatType[coffee shop]",
                                                         b"name[Aromi], area[riverside]",
                                                         b"name[The Eagle], eatType[coffee shop]"]
  by_input = {ex["inputs_pretokenized"]: ex for ex in grouped}
  assert len(grouped) == 2
  eagle = by_input[b"name[The Eagle], eatType[coffee shop]"]
  assert list(eagle["references"]) == [b"The Eagle is a coffee shop.", b"There is a coffee shop called The Eagle."]
  assert eagle["targets_pretokenized"] == b"The Eagle is a coffee shop."
  assert list(by_input[b"name[Aromi], area[riverside]"]["references"]) == [b"Aromi is by the river."]


def test_web_nlg_rows_and_grouped_eval():
  with _mock_rows(WEB_NLG_ROWS):
    train = examples_of("web_nlg_v010", "train")
    grouped = examples_of("web_nlg_v010_allrefs", "test_unseen")
  triples = b"Aarhus_Airport | cityServed | Aarhus && Aarhus | country | Denmark"
  assert [ex["inputs_pretokenized"] for ex in train] == [triples, triples]
  assert train[0]["category"] == b"Airport"
  assert len(grouped) == 1 and grouped[0]["inputs_pretokenized"] == triples
  assert list(grouped[0]["references"]) == [b"Aarhus Airport serves Aarhus, Denmark.",
                                            b"The airport of Aarhus in Denmark."]


def test_registered_splits_and_metrics():
  assert seqio.get_mixture_or_task("e2e_nlg").splits == ("validation", "test")
  assert seqio.get_mixture_or_task("e2e_cleaned_v010_allrefs").splits == ("validation", "test")
  assert seqio.get_mixture_or_task("web_nlg_v010").splits == ("train", "validation", "test_all", "test_unseen")
  for name in ("e2e_nlg", "e2e_cleaned_v010_allrefs", "web_nlg_v010_allrefs"):
    assert [f.__name__ for f in seqio.get_mixture_or_task(name).metric_fns] == ["bleu", "rouge"]


def test_references_postprocessor_needs_references():
  with pytest.raises(ValueError, match="'references' feature"):
    nlg.references_postprocessor(b"x", example={"targets": b"x"}, is_target=True)
  assert nlg.references_postprocessor(b"caf\xc3\xa9") == "café"


def test_seqio_evaluator_end_to_end_on_e2e(shared):
  """The `references` feature survives seqio's evaluation caching: echoing the first reference scores 100."""
  evaluator = seqio.Evaluator(mixture_or_task_name="e2e_nlg",
                              feature_converter=seqio.EncDecFeatureConverter(pack=False),
                              eval_split="validation", sequence_length=None)

  def predict_fn(ds):
    return [(i, ex["decoder_target_tokens"]) for i, ex in ds.as_numpy_iterator()]

  results, _ = evaluator.evaluate(compute_metrics=True, predict_fn=predict_fn, score_fn=lambda ds: [])
  scores = results.result()["e2e_nlg"]
  assert scores == pytest.approx({"bleu": 100.0, "rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0})
