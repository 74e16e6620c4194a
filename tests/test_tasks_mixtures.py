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


def test_default_mixtures_are_registered():
  expected = {
      "super_glue_v102_proportional": set(mixtures.SUPER_GLUE_TRAIN_TASKS),
      "glue_v002_proportional": set(mixtures.GLUE_TRAIN_TASKS),
      "mpt_source_6": {"glue_mnli_v002", "glue_qnli_v002", "glue_qqp_v002", "glue_sst2_v002",
                       "squad_v010_allanswers", "super_glue_record_v102"},
  }
  for name, tasks in expected.items():
    mixture = mixtures.get_task_or_mixture(name)
    assert isinstance(mixture, seqio.Mixture)
    assert {t.name for t in mixture.tasks} == tasks


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
