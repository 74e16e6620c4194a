"""Tests for xprompt_jax.evaluation.aggregates: SuperGLUE / GLUE scores on worked examples."""
import pytest

from xprompt_jax.evaluation import aggregates

SUPERGLUE_RESULTS = {
    "super_glue_boolq_v102": {"accuracy": 80.0},
    "super_glue_cb_v102": {"accuracy": 90.0, "mean_3class_f1": 70.0},
    "super_glue_copa_v102_rank": {"accuracy": 60.0},
    "super_glue_multirc_v102": {"f1": 75.0, "exact_match": 35.0},
    "super_glue_record_v102": {"f1": 85.0, "em": 83.0},
    "super_glue_rte_v102": {"accuracy": 70.0},
    "super_glue_wic_v102": {"accuracy": 65.0},
    "super_glue_wsc_v102_simple_eval": {"accuracy": 50.0},
}
GLUE_RESULTS = {
    "glue_cola_v002": {"matthews_corrcoef": 50.0},
    "glue_sst2_v002": {"accuracy": 94.0},
    "glue_mrpc_v002": {"f1": 90.0, "accuracy": 86.0},
    "glue_stsb_v002": {"pearson_corrcoef": 88.0, "spearman_corrcoef": 86.0},
    "glue_qqp_v002": {"f1": 70.0, "accuracy": 88.0},
    "glue_mnli_matched_v002": {"accuracy": 84.0},
    "glue_mnli_mismatched_v002": {"accuracy": 83.0},
    "glue_qnli_v002": {"accuracy": 91.0},
    "glue_rte_v002": {"accuracy": 72.0},
    "glue_wnli_v002": {"accuracy": 10.0},  # left out of the GLUE score, as T5 does
}


def test_superglue_worked_example():
  out = aggregates.superglue_score(SUPERGLUE_RESULTS)
  # Task scores: BoolQ 80, CB (90+70)/2=80, COPA 60, MultiRC (75+35)/2=55, ReCoRD (85+83)/2=84, RTE 70, WiC 65,
  # WSC 50 -> (80+80+60+55+84+70+65+50)/8 = 544/8 = 68.
  assert out["CB"] == 80.0 and out["MultiRC"] == 55.0 and out["ReCoRD"] == 84.0
  assert out["superglue"] == pytest.approx(68.0)
  assert out["num_tasks"] == 8


def test_glue_worked_example():
  out = aggregates.glue_score(GLUE_RESULTS)
  # CoLA 50, SST-2 94, MRPC 88, STS-B 87, QQP 79, MNLI 83.5, QNLI 91, RTE 72 -> 644.5 / 8.
  assert out["MNLI"] == 83.5 and out["STS-B"] == 87.0
  assert out["glue"] == pytest.approx(644.5 / 8)


def test_missing_tasks_are_listed_or_allowed():
  partial = {k: v for k, v in SUPERGLUE_RESULTS.items() if "boolq" not in k and "record" not in k}
  with pytest.raises(ValueError, match=r"(?s)BoolQ: task super_glue_boolq_v102.*ReCoRD: task super_glue_record"):
    aggregates.superglue_score(partial)
  out = aggregates.superglue_score(partial, allow_partial=True)
  assert out["num_tasks"] == 6
  assert out["superglue"] == pytest.approx((80 + 60 + 55 + 70 + 65 + 50) / 6)


def test_missing_metric_and_ambiguous_names():
  bad = dict(GLUE_RESULTS, glue_mrpc_v002={"accuracy": 86.0})
  with pytest.raises(ValueError, match="metric 'f1' of glue_mrpc_v002"):
    aggregates.glue_score(bad)
  twice = dict(SUPERGLUE_RESULTS, super_glue_copa_v102_gen={"accuracy": 1.0})
  with pytest.raises(ValueError, match="several results match task 'super_glue_copa_v102'"):
    aggregates.superglue_score(twice)
  with pytest.raises(ValueError, match="none of"):
    aggregates.glue_score({}, allow_partial=True)


def test_registered_tasks_report_the_metric_keys_the_scores_need():
  """Each benchmark entry names a registered task whose metric functions produce the key the score averages."""
  import functools

  import seqio

  import xprompt_jax.tasks  # noqa: F401  (registers the tasks)
  from xprompt_jax.evaluation import metrics

  samples = {
      metrics.accuracy: ([0, 1], [0, 1]),
      metrics.f1_binary: ([0, 1], [0, 1]),
      metrics.matthews_corrcoef: ([0, 1], [0, 1]),
      metrics.accuracy_mean_class_f1: ([0, 1, 2], [0, 1, 2]),
      metrics.pearson_spearman: ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]),
      metrics.multirc_f1_em: ([{"group": 0, "value": 1}], [{"group": 0, "value": 1}]),
      metrics.record_em_f1: ([["a"]], ["a"]),
      metrics.squad_em_f1: ([["a"]], ["a"]),
  }
  names = seqio.TaskRegistry.names()
  for bench in aggregates.SUPERGLUE_TASKS + aggregates.GLUE_TASKS:
    for prefix, key in bench.metrics:
      matches = sorted(n for n in names if n == prefix or (n.startswith(prefix + "_") and "_rank" not in n
                                                           and "_train" not in n and "32shot" not in n))
      assert matches, f"{bench.name}: no registered task named {prefix}"
      keys = set()
      for fn in seqio.get_mixture_or_task(matches[0]).metric_fns:
        base = fn.func if isinstance(fn, functools.partial) else fn
        if base.__name__ == "deduplicated_record_em_f1":  # one {"group", "value"} row per answer
          keys |= set(fn([{"group": 0, "value": ["a"]}], [{"group": 0, "value": "a"}]))
        else:
          keys |= set(fn(*samples[base]))
      assert key in keys, f"{bench.name}: {matches[0]} reports {sorted(keys)}, not {key!r}"


@pytest.mark.parametrize("mixture,score_fn,benchmark", [
    ("super_glue_v102_proportional", aggregates.superglue_score, "superglue"),
    ("glue_v002_proportional", aggregates.glue_score, "glue"),
])
def test_a_mixture_evaluation_covers_every_benchmark_task(mixture, score_fn, benchmark):
  """What the mixture evaluator reports (each sub-task with a validation split) gives every benchmark task: WSC
  through `simple_eval`, MNLI through its matched and mismatched sets (rate-0 tasks of the mixtures)."""
  import seqio

  import xprompt_jax.tasks  # noqa: F401  (registers the tasks and mixtures)

  keys = {key for bench in aggregates.SUPERGLUE_TASKS + aggregates.GLUE_TASKS for _, key in bench.metrics}
  evaluated = [t.name for t in seqio.get_mixture_or_task(mixture).tasks if "validation" in t.splits]
  out = score_fn({name: dict.fromkeys(keys, 50.0) for name in evaluated})
  assert out["num_tasks"] == 8 and out[benchmark] == 50.0  # All 8 tasks, no partial score.


def test_wsc_is_scored_on_simple_eval_even_beside_simple_train():
  results = dict(SUPERGLUE_RESULTS, super_glue_wsc_v102_simple_train={"accuracy": 99.0})
  out = aggregates.superglue_score(results)
  assert out["WSC"] == 50.0 and out["superglue"] == pytest.approx(68.0)
  without = {k: v for k, v in SUPERGLUE_RESULTS.items() if "wsc" not in k}
  with pytest.raises(ValueError, match="WSC: task super_glue_wsc_v102_simple_eval"):
    aggregates.superglue_score(dict(without, super_glue_wsc_v102_simple_train={"accuracy": 99.0}))
