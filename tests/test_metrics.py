"""Tests for xprompt_jax.evaluation.metrics: hand-computed cases and agreement with sklearn / scipy / sacrebleu."""
import functools
import inspect

import numpy as np
import pytest
import sacrebleu
import scipy.stats
from sklearn import metrics as sk

from xprompt_jax.evaluation import metrics


def _rng_labels(seed, n, k):
  rng = np.random.default_rng(seed)
  return rng.integers(0, k, n).tolist(), rng.integers(0, k, n).tolist()


def test_accuracy_hand_and_sklearn():
  assert metrics.accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == {"accuracy": 50.0}
  assert metrics.accuracy(["a", "b"], ["a", "b"]) == {"accuracy": 100.0}
  for seed in range(5):
    t, p = _rng_labels(seed, 97, 3)
    assert metrics.accuracy(t, p)["accuracy"] == pytest.approx(100 * sk.accuracy_score(t, p))


def test_f1_binary_hand_and_sklearn():
  # tp=2 (idx 0, 2), fp=1 (idx 1), fn=1 (idx 3): P = R = 2/3 -> F1 = 2/3.
  assert metrics.f1_binary([1, 0, 1, 1], [1, 1, 1, 0])["f1"] == pytest.approx(200 / 3)
  for seed in range(5):
    t, p = _rng_labels(seed, 101, 2)
    assert metrics.f1_binary(t, p)["f1"] == pytest.approx(100 * sk.f1_score(t, p))


def test_invalid_predictions_count_as_wrong():
  # -1 (unparsable output) on a positive target becomes a false negative, on a negative one a false positive.
  assert metrics.f1_binary([1, 1], [1, -1])["f1"] == pytest.approx(100 * sk.f1_score([1, 1], [1, 0]))
  # MCC keeps -1 as its own class, as T5 does (Gorodkin's K-class MCC, classes -1, 0, 1): correct c = 3 of s = 4,
  # true counts t = (0, 2, 2), predicted p = (1, 1, 2): (c s - p.t) / sqrt((s^2 - p.p)(s^2 - t.t)) = 6 / sqrt(80).
  assert metrics.matthews_corrcoef([1, 0, 1, 0], [1, -1, 1, 0])["matthews_corrcoef"] == pytest.approx(
      100 * 6 / np.sqrt(80))
  # CB: an invalid prediction is a miss for its true class and a hit for none: F1s 1, 0, 1.
  out = metrics.accuracy_mean_class_f1([0, 1, 2], [0, -1, 2])
  assert out["accuracy"] == pytest.approx(200 / 3) and out["mean_3class_f1"] == pytest.approx(200 / 3)


def test_accuracy_mean_class_f1_hand_and_sklearn():
  # Class F1s: 0 -> 1, 1 -> 2/3 (tp 1, fp 1), 2 -> 2/3 (tp 1, fn 1); macro = 7/9; accuracy = 3/4.
  out = metrics.accuracy_mean_class_f1([0, 1, 2, 2], [0, 1, 1, 2])
  assert out["accuracy"] == pytest.approx(75.0)
  assert out["mean_3class_f1"] == pytest.approx(700 / 9)
  for seed in range(5):
    t, p = _rng_labels(seed, 89, 3)
    out = metrics.accuracy_mean_class_f1(t, p)
    assert out["mean_3class_f1"] == pytest.approx(100 * sk.f1_score(t, p, average="macro"))
    assert out["accuracy"] == pytest.approx(100 * sk.accuracy_score(t, p))


def test_macro_f1_counts_a_class_never_seen_as_zero():
  # Class 2 appears nowhere, but CB's metric is over all 3 classes: (1 + 1 + 0) / 3.
  assert metrics.accuracy_mean_class_f1([0, 1], [0, 1])["mean_3class_f1"] == pytest.approx(200 / 3)


def test_matthews_hand_and_sklearn():
  # tp=1 tn=2 fp=0 fn=1: (1*2 - 0*1) / sqrt(1 * 2 * 3 * 2) = 2 / sqrt(12).
  assert metrics.matthews_corrcoef([1, 0, 1, 0], [1, 0, 0, 0])["matthews_corrcoef"] == pytest.approx(
      100 * 2 / np.sqrt(12))
  for seed in range(5):
    t, p = _rng_labels(seed, 120, 2)
    assert metrics.matthews_corrcoef(t, p)["matthews_corrcoef"] == pytest.approx(100 * sk.matthews_corrcoef(t, p))


def test_pearson_spearman_hand_and_scipy():
  out = metrics.pearson_spearman([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
  assert out == pytest.approx({"pearson_corrcoef": 100.0, "spearman_corrcoef": 100.0})
  out = metrics.pearson_spearman([1.0, 2.0, 3.0], [3.0, 2.0, 1.0])
  assert out == pytest.approx({"pearson_corrcoef": -100.0, "spearman_corrcoef": -100.0})
  rng = np.random.default_rng(0)
  t, p = rng.uniform(0, 5, 64), rng.uniform(0, 5, 64)
  out = metrics.pearson_spearman(t.tolist(), p.tolist())
  assert out["pearson_corrcoef"] == pytest.approx(100 * scipy.stats.pearsonr(t, p)[0])
  assert out["spearman_corrcoef"] == pytest.approx(100 * scipy.stats.spearmanr(t, p)[0])
  with pytest.raises(ValueError, match="NaN"):
    metrics.pearson_spearman([1.0, 2.0], [1.0, float("nan")])


@pytest.mark.parametrize("text,expected", [
    ("The Cat", "cat"),
    ("a  dog,   an apple; the end.", "dog apple end"),
    ("Theory of an atheist", "theory of atheist"),  # only whole-word articles go
    ("  U.S.A!  ", "usa"),
    ("don't\tstop\nnow", "dont stop now"),
])
def test_squad_normalisation(text, expected):
  assert metrics.normalize_squad(text) == expected


def test_squad_em_f1_worked_example():
  targets = [["The Eiffel Tower", "Eiffel Tower in Paris"], ["1889"], ["blue whale"]]
  predictions = ["eiffel tower!", "in 1889", "a red fox"]
  # ex0: EM 1 (normalised equal to the first answer), F1 1.
  # ex1: EM 0; tokens {in, 1889} vs {1889}: P 1/2, R 1 -> F1 2/3.
  # ex2: EM 0; {red, fox} vs {blue, whale}: F1 0.
  out = metrics.squad_em_f1(targets, predictions)
  assert out["em"] == pytest.approx(100 / 3)
  assert out["f1"] == pytest.approx(100 * (1 + 2 / 3 + 0) / 3)


def test_record_takes_max_over_answers():
  # F1 vs "Barack Obama" = 2/3 (P 1, R 1/2), vs "Obama" = 1 -> max 1; EM also matches the second answer.
  out = metrics.record_em_f1([["Barack Obama", "Obama"]], ["Obama"])
  assert out == pytest.approx({"em": 100.0, "f1": 100.0})
  out = metrics.record_em_f1([["Barack Obama", "President Obama"]], ["Obama"])
  assert out == pytest.approx({"em": 0.0, "f1": 100 * 2 / 3})


def test_multirc_worked_example():
  targets = [{"group": 0, "value": 1}, {"group": 0, "value": 0}, {"group": 0, "value": 1},
             {"group": 1, "value": 0}, {"group": 1, "value": 1},
             {"group": 2, "value": 0}]
  predictions = [{"group": 0, "value": 1}, {"group": 0, "value": 0}, {"group": 0, "value": 1},
                 {"group": 1, "value": 1}, {"group": 1, "value": 1},
                 {"group": 2, "value": 0}]
  # Answers: tp 3, fp 1, fn 0 -> F1a = 2*3 / (2*3 + 1) = 6/7. Questions 0 and 2 all right, 1 not -> EM 2/3.
  out = metrics.multirc_f1_em(targets, predictions)
  assert out["f1"] == pytest.approx(600 / 7)
  assert out["exact_match"] == pytest.approx(200 / 3)


def test_multirc_rejects_misaligned_groups():
  with pytest.raises(ValueError, match="group"):
    metrics.multirc_f1_em([{"group": 0, "value": 1}], [{"group": 1, "value": 1}])
  with pytest.raises(ValueError, match=r"targets\[0\]"):
    metrics.multirc_f1_em([1], [{"group": 1, "value": 1}])


def test_bleu_matches_sacrebleu_and_is_100_for_identical_text():
  hyps = ["the cat sat on the mat", "a quick brown fox jumps", "there is a restaurant in the city centre"]
  refs = [["the cat is on the mat", "a cat sat on the mat"], ["the quick brown fox jumps"],
          ["a restaurant is in the centre of the city", "there is a restaurant in the centre"]]
  streams = [[r[0] for r in refs], [r[1] if len(r) > 1 else None for r in refs]]
  direct = sacrebleu.corpus_bleu(hyps, streams, smooth_method="exp", tokenize="intl").score
  assert metrics.bleu(refs, hyps)["bleu"] == pytest.approx(direct)
  assert 0 < direct < 100
  assert metrics.bleu(hyps, hyps)["bleu"] == pytest.approx(100.0)


def test_rouge_best_reference_and_mean():
  out = metrics.rouge([["the cat sat", "completely different words"], "a b c d"], ["the cat sat", "a b x y"])
  # ex0 matches its first reference exactly; ex1: unigram P = R = 1/2, bigram 1/3, LCS 2/4.
  assert out["rouge1"] == pytest.approx(100 * (1 + 0.5) / 2)
  assert out["rouge2"] == pytest.approx(100 * (1 + 1 / 3) / 2)
  assert out["rougeL"] == pytest.approx(100 * (1 + 0.5) / 2)


def test_rank_classification_groups_and_argmax():
  # Example 7: options (wrong, right); scores pick right. Example 3: (right, wrong); scores pick wrong.
  targets = [(7, False), (7, True), (3, True), (3, False, 1.0)]
  scores = [-2.0, -1.0, -5.0, -0.5]
  out = metrics.rank_classification(targets, scores, num_classes=2)
  assert out["accuracy"] == 50.0
  # labels [1, 0], predictions [1, 1]: tp 1, fp 1 -> F1 2/3.
  assert out["f1"] == pytest.approx(200 / 3)
  assert set(metrics.rank_classification(targets, scores)) == {"accuracy"}


def test_rank_classification_multiclass_matches_sklearn():
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 3, 40)
  scores = rng.normal(size=(40, 3))
  targets = [(i, k == labels[i]) for i in range(40) for k in range(3)]
  out = metrics.rank_classification(targets, scores.reshape(-1).tolist(), num_classes=3)
  preds = scores.argmax(-1)
  assert out["accuracy"] == pytest.approx(100 * sk.accuracy_score(labels, preds))
  assert out["mean_3class_f1"] == pytest.approx(100 * sk.f1_score(labels, preds, average="macro"))


def test_rank_classification_bad_input():
  with pytest.raises(ValueError, match="no correct option"):
    metrics.rank_classification([(0, False), (0, False)], [0.0, 1.0])
  with pytest.raises(ValueError, match="expected num_classes=2"):
    metrics.rank_classification([(0, True), (0, False), (0, False)], [0.0, 1.0, 2.0], num_classes=2)


def test_length_and_type_errors():
  with pytest.raises(ValueError, match="1 targets vs 2 predictions"):
    metrics.accuracy([1], [1, 0])
  with pytest.raises(TypeError, match="integer labels"):
    metrics.f1_binary([1, 0], ["yes", "no"])
  with pytest.raises(ValueError, match="binary targets"):
    metrics.f1_binary([2, 0], [1, 0])
  with pytest.raises(ValueError, match="empty"):
    metrics.accuracy([], [])


def test_deduplicate_by_group_counts_each_group_once():
  # ReCoRD-style: query 0 has two rows (one per answer), query 1 one row; each query must count once.
  answers0 = ["Obama", "Barack Obama"]
  targets = [{"group": 0, "value": answers0}, {"group": 0, "value": answers0}, {"group": 1, "value": ["Paris"]}]
  predictions = [{"group": 0, "value": "Obama"}, {"group": 0, "value": "Obama"}, {"group": 1, "value": "Rome"}]
  dedup = metrics.deduplicate_by_group(metrics.record_em_f1)
  assert dedup(targets, predictions) == pytest.approx({"em": 50.0, "f1": 50.0})
  # Without deduplication query 0 would weigh twice: EM 2/3.
  plain = metrics.record_em_f1([t["value"] for t in targets], [p["value"] for p in predictions])
  assert plain["em"] == pytest.approx(200 / 3)
  assert dedup.__name__ == "deduplicated_record_em_f1"
  with pytest.raises(ValueError, match="group"):
    dedup([{"group": 0, "value": ["a"]}], [{"group": 1, "value": "a"}])


# Sample inputs for every metric fn: (fn, targets, predictions or scores).
_SAMPLES = [
    (metrics.accuracy, [1, 0], [1, 1]),
    (metrics.f1_binary, [1, 0], [1, 1]),
    (metrics.accuracy_mean_class_f1, [0, 1, 2], [0, 1, 1]),
    (metrics.matthews_corrcoef, [0, 1, 1], [0, 1, 0]),
    (metrics.pearson_spearman, [0.5, 1.0, 3.0], [0.4, 1.5, 2.0]),
    (metrics.multirc_f1_em, [{"group": 0, "value": 1}, {"group": 0, "value": 0}],
     [{"group": 0, "value": 1}, {"group": 0, "value": 1}]),
    (metrics.squad_em_f1, [["a cat"]], ["the cat"]),
    (metrics.record_em_f1, [["Paris"]], ["Rome"]),
    (metrics.deduplicate_by_group(metrics.record_em_f1), [{"group": 0, "value": ["x"]}], [{"group": 0, "value": "x"}]),
    (metrics.bleu, ["the cat sat"], ["the cat sat"]),
    (metrics.rouge, ["the cat sat"], ["a cat sat"]),
    (functools.partial(metrics.rouge, rouge_types=("rougeLsum",)), ["the cat sat"], ["a cat sat"]),
    (metrics.rank_classification, [(0, True), (0, False), (1, False), (1, True)], [0.5, 0.1, 0.3, 0.2]),
    (functools.partial(metrics.rank_classification, num_classes=2), [(0, True), (0, False)], [0.5, 0.1]),
    (functools.partial(metrics.rank_classification, num_classes=3), [(0, False), (0, True), (0, False)],
     [0.1, 0.5, 0.2]),
    (metrics.deduplicate_by_group(functools.partial(metrics.rouge, rouge_types=("rouge2",))),
     [{"group": 0, "value": "the cat sat"}], [{"group": 0, "value": "a cat sat"}]),
]
_IDS = [getattr(s[0], "__name__", None) or s[0].func.__name__ + "_partial" for s in _SAMPLES]


@pytest.mark.parametrize("fn, targets, values", _SAMPLES, ids=_IDS)
def test_each_metric_declares_the_keys_it_returns(fn, targets, values):
  """The declaration (through partials and deduplicate_by_group) is exactly the result's keys, in order."""
  assert metrics.reported_keys(fn) == tuple(fn(targets, values))


def test_every_public_metric_fn_declares_its_keys():
  declared = {name for name, fn in vars(metrics).items() if callable(fn) and metrics.reported_keys(fn) is not None}
  # Every public function of the module with the metric signature (targets, ...) -> dict: a new one must declare.
  metric_fns = {name for name, fn in vars(metrics).items()
                if inspect.isfunction(fn) and fn.__module__ == metrics.__name__ and not name.startswith("_")
                and list(inspect.signature(fn).parameters)[:1] == ["targets"]}
  assert declared == metric_fns
  assert declared >= {"accuracy", "f1_binary", "accuracy_mean_class_f1", "matthews_corrcoef", "pearson_spearman",
                      "multirc_f1_em", "squad_em_f1", "record_em_f1", "bleu", "rouge", "rank_classification"}
  assert declared <= {i.removesuffix("_partial") for i in _IDS}  # Each one sampled above.
  assert metrics.reported_keys(lambda targets, predictions: {"x": 1.0}) is None  # Undeclared: unknown keys.
  with pytest.raises(TypeError, match="either fixed key names or keys_of"):
    metrics.reports()


def test_old_metric_names_map_to_t5s_with_a_warning(caplog):
  assert metrics.t5_key("super_glue_multirc_v102/f1a", "TrainConfig.best_metric") == "super_glue_multirc_v102/f1"
  assert metrics.t5_key("rank/macro_f1", "XPromptPipelineConfig.select_metric") == "rank/mean_3class_f1"
  assert metrics.t5_key("f1a", "x") == "f1" and "now named as T5 names it, 'f1'" in caplog.text
  assert metrics.t5_key("accuracy", "x") == "accuracy" and metrics.t5_key(None, "x") is None
  assert metrics.former_keys("super_glue_cb_v102/mean_3class_f1") == ["super_glue_cb_v102/macro_f1"]
  assert metrics.former_keys("f1") == ["f1a"] and metrics.former_keys("accuracy") == []
