"""Tests for tasks/mixtures.py: rates are honoured when sampling, examples-proportional caps, the default mixtures,
and unknown names suggesting the closest registered ones."""
import gin
import pytest
import seqio

import xprompt_jax.tasks  # noqa: F401  (registers every task and mixture)
from xprompt_jax.tasks import mixtures
from xprompt_jax.tasks import registry_utils as ru
from xprompt_jax.tasks import sources
from xprompt_jax.tasks import vocab as vocab_lib


@pytest.fixture
def local_mode():
  sources.set_data_source("local")
  yield
  sources.set_data_source(None)
  gin.clear_config()


MNLI_SETS = {"glue_mnli_matched_v002", "glue_mnli_mismatched_v002"}
WSC_EVAL = "super_glue_wsc_v102_simple_eval"


def test_default_mixtures_are_registered_with_their_eval_only_tasks_at_rate_0():
  """As T5's weight mappings: WSC `simple_eval` and MNLI matched/mismatched at 0, so evaluating the mixture covers
  WSC and MNLI (whose training tasks have no validation split)."""
  expected = {
      "super_glue_v102_proportional": (set(mixtures.SUPER_GLUE_TRAIN_TASKS), {WSC_EVAL}),
      "glue_v002_proportional": (set(mixtures.GLUE_TRAIN_TASKS), MNLI_SETS),
      "mpt_source_6": ({"glue_mnli_v002", "glue_qnli_v002", "glue_qqp_v002", "glue_sst2_v002",
                        "squad_v010_allanswers", "super_glue_record_v102"}, set()),  # MPT evaluates per task.
  }
  for name, (train_tasks, eval_only) in expected.items():
    mixture = mixtures.get_task_or_mixture(name)
    assert isinstance(mixture, seqio.Mixture)
    assert {t.name for t in mixture.tasks} == train_tasks | eval_only
    assert {t for t, rate in mixture.rate_per_task_name.items() if rate == 0} == eval_only, name
    assert all(callable(mixture.rate_per_task_name[t]) for t in train_tasks)  # Examples-proportional.
    # Never trained on: seqio's mixture skips a task without the training split (and draws nothing at rate 0).
    assert all("train" not in seqio.get_mixture_or_task(t).splits for t in eval_only)
    evaluated = {t.name for t in mixture.tasks if "validation" in t.splits}  # What MixtureEvaluator evaluates.
    assert eval_only <= evaluated and not evaluated & {"glue_mnli_v002", "super_glue_wsc_v102_simple_train"}


def _rate_0_mixture() -> str:
  """RTE and WSC `simple_train` at rate 1; CB (which has a train split) and WSC `simple_eval` (which has none) at 0."""
  return mixtures.make_mixture("test_rte_with_rate_0", ["super_glue_rte_v102", "super_glue_wsc_v102_simple_train"],
                               rates=[1.0, 1.0], eval_only=["super_glue_cb_v102", WSC_EVAL])


def _first_words(examples) -> set[str]:
  vocab = vocab_lib.get_default_vocabulary()
  return {vocab.decode(ex["inputs"][:6].tolist()).split(" ")[0] for ex in examples}


def test_training_examples_never_come_from_a_rate_0_task(shared, local_mode):
  """seqio's mixture dataset (the training input of a mixture) draws no example of a rate-0 task, even one with a
  train split, and skips the eval-only tasks, which have none."""
  mixture = seqio.get_mixture_or_task(_rate_0_mixture())
  assert mixture.get_rate(seqio.get_mixture_or_task("super_glue_cb_v102")) == 0
  ds = mixture.get_dataset({"inputs": 32, "targets": 8}, split="train", shuffle=True, seed=0, num_epochs=None)
  assert _first_words(ds.take(400).as_numpy_iterator()) == {"rte", "wsc:"}


def test_the_training_loop_input_of_a_mixture_holds_no_rate_0_task(shared, local_mode):
  from xprompt_jax.training import data as data_lib
  cfg = data_lib.DataConfig(_rate_0_mixture(), inputs_length=32, targets_length=8, batch_size=40)
  rows = [{"inputs": r} for batch, _ in zip(data_lib.batches(cfg), range(10)) for r in batch["encoder_input_tokens"]]
  # training.data once passed shuffle_buffer_size to seqio's Mixture.get_dataset, which does not take it.
  assert _first_words(rows) == {"rte", "wsc:"}


def test_the_data_log_of_a_mixture_with_eval_only_tasks(shared, local_mode):
  from xprompt_jax.training import data as data_lib
  described = data_lib.describe(data_lib.DataConfig(_rate_0_mixture()))
  assert "super_glue_rte_v102[train]" in described and WSC_EVAL not in described


def test_eval_only_tasks_of_a_task_list():
  assert ru.eval_only_tasks(mixtures.GLUE_TRAIN_TASKS) == tuple(sorted(MNLI_SETS))
  assert ru.eval_only_tasks(["super_glue_wsc_v102_simple_train", WSC_EVAL, "super_glue_rte_v102"]) == ()
  with pytest.raises(ru.UnknownTaskError, match="super_glue_wsc_v102_simple_eval"):
    mixtures.make_mixture("test_bad_eval_only", ["super_glue_rte_v102"], eval_only=["super_glue_wsc_v102_simple_evl"])


def test_mixture_of_two_local_tasks_samples_at_the_given_rates(shared, local_mode):
  name = mixtures.make_mixture("test_rte_cb_3_to_1", ["super_glue_rte_v102", "super_glue_cb_v102"], rates=[3, 1])
  ds = seqio.get_mixture_or_task(name).get_dataset(
      {"inputs": 64, "targets": 8}, split="train", shuffle=True, seed=0, num_epochs=None)
  vocab = vocab_lib.get_default_vocabulary()
  counts = {"rte": 0, "cb": 0}
  for ex in ds.take(1000).as_numpy_iterator():
    counts[vocab.decode(ex["inputs"][:6].tolist()).split(" ")[0]] += 1
  assert abs(counts["rte"] - 750) < 60 and abs(counts["cb"] - 250) < 60, counts
  # CB train has 250 rows: 250 draws at rate 1/4 of 1000 means CB examples repeat (epochs), as mixing expects.


def test_examples_proportional_rate_caps(shared, local_mode):
  rte = seqio.get_mixture_or_task("super_glue_rte_v102")
  assert mixtures.ExamplesProportionalRate(cap=100)(rte) == 100
  assert mixtures.ExamplesProportionalRate()(rte) == 2490
  gin.parse_config("mixture_cap.cap = 300")
  assert mixtures.ExamplesProportionalRate()(rte) == 300
  name = mixtures.make_mixture("test_rte_cb_proportional", ["super_glue_rte_v102", "super_glue_cb_v102"])
  mixture = seqio.get_mixture_or_task(name)
  assert {t.name: mixture.get_rate(t) for t in mixture.tasks} == {"super_glue_rte_v102": 300,
                                                                  "super_glue_cb_v102": 250}


def test_make_mixture_from_gin(local_mode):
  gin.parse_config("""
      make_mixture.name = "test_gin_mix"
      make_mixture.tasks = ["glue_sst2_v002", "glue_qnli_v002"]
      make_mixture.rates = [1.0, 2.0]
  """)
  assert mixtures.make_mixture() == "test_gin_mix"
  mixture = seqio.get_mixture_or_task("test_gin_mix")
  assert {t.name: mixture.get_rate(t) for t in mixture.tasks} == {"glue_sst2_v002": 1.0, "glue_qnli_v002": 2.0}


def test_unknown_task_lists_closest_names():
  with pytest.raises(ru.UnknownTaskError, match=r"'super_glue_rte_v10'.*'super_glue_rte_v102'"):
    mixtures.make_mixture("test_bad", ["super_glue_rte_v10", "glue_cola_v002"])
  with pytest.raises(ru.UnknownTaskError, match=r"closest registered names: \[.*'glue_sst2_v002'"):
    mixtures.get_task_or_mixture("glue_sst_v002")
  assert "test_bad" not in seqio.MixtureRegistry.names()


def test_bad_rates_are_rejected():
  with pytest.raises(ValueError, match="2 rates for 1 tasks"):
    mixtures.make_mixture("test_bad_rates", ["glue_cola_v002"], rates=[1.0, 2.0])
  with pytest.raises(ValueError, match="rates must be >= 0"):
    mixtures.make_mixture("test_bad_rates", ["glue_cola_v002", "glue_rte_v002"], rates=[1.0, -1.0])
  with pytest.raises(ValueError, match="mixture_cap.cap must be positive"):
    mixtures.mixture_cap(0)
