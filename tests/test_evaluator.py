"""Tests for the task evaluator: rank classification against slow per-label forward passes, hand-computed metrics of
a model that always picks the first label, decoding, injections, compile-once behaviour, mixtures and bad input."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numerics
from xprompt_jax import tasks  # noqa: F401  (registers the tasks)
from xprompt_jax.evaluation import evaluator as ev_lib
from xprompt_jax.models import t5
from xprompt_jax.models.config import T5Config
from xprompt_jax.models.injection import Injection
from xprompt_jax.tasks import mixtures
from xprompt_jax.tasks import registry_utils as ru

CFG = T5Config(vocab_size=32128, emb_dim=16, num_heads=2, head_dim=4, mlp_dim=32, num_encoder_layers=2,
               num_decoder_layers=2)
N = 40
LENGTHS = {"inputs": 64, "targets": 8}


@pytest.fixture(scope="module")
def params():
  return t5.init_params(CFG, jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def model():
  return t5.T5(CFG)


def eval_config(**kw):
  kw.setdefault("mode", "rank")
  kw.setdefault("batch_size", 16)
  kw.setdefault("max_examples", N)
  kw.setdefault("feature_lengths", LENGTHS)
  return ev_lib.EvalConfig(**kw)


def prompt_inject(trainable, batch):
  del batch
  return Injection(prompt=trainable["prompt"])


def random_prompt(seed, length=3):
  return {"prompt": jax.random.normal(jax.random.PRNGKey(seed), (length, CFG.emb_dim))}


def val_labels(shared, folder):
  with open(shared / "data" / "superglue" / folder / "val.jsonl", encoding="utf-8") as f:
    return [json.loads(line)["label"] for line in f][:N]


# ----------------------------------------------------------------------------------------------------------------------
# Config.


def test_eval_config_validates_and_overrides_lengths():
  cfg = ev_lib.EvalConfig(feature_lengths={"inputs": 128, "targets": 4}, targets_length=6)
  assert cfg.lengths() == {"inputs": 128, "targets": 6}
  assert cfg.decode_length() == 6
  assert ev_lib.EvalConfig(max_decode_length=3).decode_length() == 3
  with pytest.raises(ValueError, match="mode"):
    ev_lib.EvalConfig(mode="greedy")
  assert ev_lib.EvalConfig(mode="auto").mode == "auto"
  with pytest.raises(ValueError, match="batch_size"):
    ev_lib.EvalConfig(batch_size=0)
  with pytest.raises(ValueError, match="'targets'"):
    ev_lib.EvalConfig(feature_lengths={"inputs": 8, "targets": -1})
  with pytest.raises(ValueError, match="lacks"):
    ev_lib.EvalConfig(feature_lengths={"inputs": 8})


def test_eval_config_binds_with_gin():
  import gin
  with gin.unlock_config():
    gin.parse_config(["EvalConfig.mode = 'both'", "EvalConfig.beam_size = 4",
                      "EvalConfig.feature_lengths = {'inputs': 256, 'targets': 8}"])
  try:
    cfg = ev_lib.EvalConfig()
    assert (cfg.mode, cfg.beam_size, cfg.lengths()) == ("both", 4, {"inputs": 256, "targets": 8})
  finally:
    gin.clear_config()


def test_average_metrics():
  per_task = {"a": {"accuracy": 50.0, "f1": 70.0}, "b": {"accuracy": 80.0}}
  out = ev_lib.average_metrics(per_task)
  assert out == {"average/score": pytest.approx((60.0 + 80.0) / 2), "average/accuracy": pytest.approx(65.0)}
  assert ev_lib.average_metrics({}) == {}


# ----------------------------------------------------------------------------------------------------------------------
# Rank mode on real data.


@pytest.mark.parametrize("name,keys", [
    ("super_glue_rte_v102", {"accuracy"}),
    ("super_glue_cb_v102", {"accuracy", "mean_3class_f1"}),
])
def test_rank_mode_returns_the_task_metrics(shared, model, params, name, keys):
  del shared
  ev = ev_lib.TaskEvaluator(name, model, CFG, eval_config())
  assert len(ev.data) == N
  out = ev.evaluate(params)
  assert set(out) == keys
  assert all(0.0 <= v <= 100.0 for v in out.values())


def slow_rank(forward, ev, i, prompt):
  """Independent: one full teacher-forced forward pass per (example, label word), log-softmax in numpy."""
  raw = np.asarray(ev.data.examples[i]["inputs"])
  inputs = np.pad(raw, (0, LENGTHS["inputs"] - raw.size))[None]  # One shape for every example: a single compile.
  scores = []
  for word in ev.candidates:
    target = np.asarray(list(ev.vocabulary.encode(word)) + [1])[None]
    dec_in = np.concatenate([[[0]], target[:, :-1]], axis=1)
    logits = np.asarray(forward(jnp.asarray(inputs), jnp.asarray(dec_in), prompt), np.float64)[0]
    top = logits.max(-1, keepdims=True)
    logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    scores.append(sum(logp[t, tok] for t, tok in enumerate(target[0])))
  return np.array(scores)


@pytest.mark.parametrize("name", ["super_glue_rte_v102", "super_glue_cb_v102"])
def test_rank_predictions_equal_slow_per_label_forward_passes(shared, model, params, name):
  del shared
  ev = ev_lib.TaskEvaluator(name, model, CFG, eval_config(max_examples=5, batch_size=4))
  trainable = random_prompt(1)
  records = ev.predict(params, trainable, prompt_inject)
  assert len(records) == 5  # The padded half of the second batch is dropped.
  forward = jax.jit(lambda enc, dec, prompt: model.apply({"params": params}, enc, dec, Injection(prompt=prompt)))
  for i in range(5):
    slow = slow_rank(forward, ev, i, trainable["prompt"])
    fast = np.array([records[i]["rank_scores"][w] for w in ev.candidates])
    # float32 log-softmax (fast) against float64 (slow).
    numerics.assert_close(fast, slow, roundings=numerics.VOCAB_SCORES, err_msg=f"example {i}")
    assert records[i]["rank_prediction"] == ev.candidates[int(np.argmax(slow))]


def first_label_scores(model, params, encoder_input_tokens, label_targets, *, injection=None):
  """A fake scorer: label 0 always wins."""
  del model, params, injection
  b = encoder_input_tokens.shape[0]
  k = label_targets.shape[-2]
  return jnp.broadcast_to(-jnp.arange(k, dtype=jnp.float32), (b, k))


def test_first_label_model_gives_the_first_class_share_on_rte(shared, model, params, monkeypatch):
  monkeypatch.setattr(ev_lib.scoring, "rank_classification_scores", first_label_scores)
  ev = ev_lib.TaskEvaluator("super_glue_rte_v102", model, CFG, eval_config())
  labels = val_labels(shared, "RTE")
  expected = 100.0 * sum(label == "entailment" for label in labels) / len(labels)
  assert 0 < expected < 100
  assert ev.evaluate(params) == {"accuracy": pytest.approx(expected)}
  assert {r["rank_prediction"] for r in ev.predict(params)} == {"entailment"}


def test_first_label_model_gives_hand_computed_cb_scores(shared, model, params, monkeypatch):
  monkeypatch.setattr(ev_lib.scoring, "rank_classification_scores", first_label_scores)
  ev = ev_lib.TaskEvaluator("super_glue_cb_v102", model, CFG, eval_config())
  labels = val_labels(shared, "CB")
  p = sum(label == "entailment" for label in labels) / len(labels)  # Precision of "entailment"; its recall is 1.
  acc = 100.0 * p
  macro_f1 = 100.0 * (2 * p / (1 + p)) / 3  # The other two classes are never predicted: F1 0.
  out = ev.evaluate(params)
  assert out == {"accuracy": pytest.approx(acc), "mean_3class_f1": pytest.approx(macro_f1)}


def test_rank_variant_task_uses_score_metrics(shared, model, params):
  del shared
  ev = ev_lib.TaskEvaluator("super_glue_rte_v102_rank", model, CFG, eval_config(max_examples=11, mode="both"))
  assert ev.modes == ("rank",)  # Nothing to decode against: only score metrics.
  records = ev.predict(params)
  assert len(records) == 22  # max_examples counts source examples: both candidate rows of each are kept.
  assert all("target_score" in r and "rank_scores" not in r for r in records)
  # Rows come in (example, label) pairs; an example is right when its higher-scored row is the correct one.
  scores = np.array([r["target_score"] for r in records]).reshape(11, 2)
  is_correct = np.array([bool(ex["is_correct"]) for ex in ev.data.examples]).reshape(11, 2)
  expected = 100.0 * np.mean(is_correct[np.arange(11), np.argmax(scores, axis=1)])
  out = ev.evaluate(params)
  assert set(out) == {"rank/accuracy", "rank/f1"}
  assert out["rank/accuracy"] == pytest.approx(expected)


# ----------------------------------------------------------------------------------------------------------------------
# Decode mode, injections, compile once.


def test_decode_mode_runs_greedy_and_beam(shared, model, params):
  del shared
  for beam in (1, 2):
    ev = ev_lib.TaskEvaluator("super_glue_rte_v102", model, CFG, eval_config(mode="decode", max_examples=8,
                                                                             beam_size=beam))
    out = ev.evaluate(params)
    assert set(out) == {"accuracy"}
    records = ev.predict(params)
    assert all(isinstance(r["decode_prediction"], str) for r in records)
    assert "rank_scores" not in records[0]


def test_a_prompt_changes_scores_and_predictions(shared, model, params):
  del shared
  ev = ev_lib.TaskEvaluator("super_glue_cb_v102", model, CFG, eval_config(mode="both", max_examples=8))
  plain = ev.predict(params)
  prompted = ev.predict(params, random_prompt(3, length=4), prompt_inject)
  assert all(a["rank_scores"] != b["rank_scores"] for a, b in zip(plain, prompted))
  assert [a["decode_prediction"] for a in plain] != [b["decode_prediction"] for b in prompted]


def test_no_recompilation_between_evaluations(shared, model, params):
  del shared
  traces = []

  def inject(trainable, batch, aux):
    traces.append(1)  # Runs only while jax traces a function.
    return Injection(prompt=trainable["prompt"] * aux["scale"])

  ev = ev_lib.TaskEvaluator("super_glue_rte_v102", model, CFG, eval_config(mode="both", max_examples=20))
  first = ev.predict(params, random_prompt(4), inject, {"scale": jnp.float32(1.0)})
  n = len(traces)
  assert n >= 2  # The rank and the decode function each traced once.
  second = ev.predict(params, random_prompt(5), inject, {"scale": jnp.float32(2.0)})
  ev.evaluate(params, random_prompt(6), inject, {"scale": jnp.float32(0.5)})
  assert len(traces) == n
  assert first[0]["rank_scores"] != second[0]["rank_scores"]


# ----------------------------------------------------------------------------------------------------------------------
# Mixtures.


def test_mixture_reports_each_task_and_the_average(shared, model, params):
  del shared
  name = mixtures.make_mixture("evaluator_test_mix", ["super_glue_rte_v102", "super_glue_cb_v102",
                                                      "super_glue_wsc_v102_simple_train"], rates=[1.0, 1.0, 1.0])
  ev = ev_lib.make_evaluator(name, model, CFG, eval_config(max_examples=16))
  assert isinstance(ev, ev_lib.MixtureEvaluator)
  assert {e.task_name for e in ev.evaluators} == {"super_glue_rte_v102", "super_glue_cb_v102"}  # No WSC validation.
  out = ev.evaluate(params)
  rte, cb = out["super_glue_rte_v102/accuracy"], out["super_glue_cb_v102/accuracy"]
  cb_mean = np.mean([out[f"super_glue_cb_v102/{k}"] for k in ("accuracy", "mean_3class_f1")])
  assert out["average/accuracy"] == pytest.approx((rte + cb) / 2)
  assert out["average/score"] == pytest.approx((rte + cb_mean) / 2)


def test_mixture_evaluates_its_eval_only_tasks(shared, model, params):
  """A mixture with WSC `simple_train` carries `simple_eval` at rate 0 (as `super_glue_v102_proportional`): the
  evaluation covers WSC through it, decoded under mode 'auto', while `simple_train` (no validation) is skipped."""
  trained = ["super_glue_rte_v102", "super_glue_wsc_v102_simple_train"]
  name = mixtures.make_mixture("evaluator_test_eval_only", trained, rates=[1.0, 1.0],
                               eval_only=ru.eval_only_tasks(trained))
  ev = ev_lib.MixtureEvaluator(name, model, CFG, eval_config(mode="auto", max_examples=8))
  assert {e.task_name: e.modes for e in ev.evaluators} == {"super_glue_rte_v102": ("rank",),
                                                           "super_glue_wsc_v102_simple_eval": ("decode",)}
  out = ev.evaluate(params)
  assert {"super_glue_rte_v102/accuracy", "super_glue_wsc_v102_simple_eval/accuracy", "average/score"} <= set(out)


def test_auto_mode_ranks_label_word_tasks_and_decodes_the_others(shared, model, params, caplog):
  del shared
  import logging
  caplog.set_level(logging.INFO, logger="absl")
  ev_lib._AUTO_LOGGED.clear()  # pylint: disable=protected-access
  cases = {"super_glue_rte_v102": ("rank",), "super_glue_rte_v102_rank": ("rank",),
           "super_glue_wsc_v102_simple_eval": ("decode",), "glue_stsb_v002": ("decode",)}
  for name, modes in cases.items():
    for _ in range(2):
      ev = ev_lib.TaskEvaluator(name, model, CFG, eval_config(mode="auto", max_examples=4))
      assert ev.modes == modes, name
  assert set(ev.evaluate(params)) == {"pearson_corrcoef", "spearman_corrcoef"}  # Unprefixed: one mode per task.
  logged = [r.getMessage() for r in caplog.records if "EvalConfig.mode='auto'" in r.getMessage()]
  assert len(logged) == len(cases)  # Once per task.
  assert any("glue_stsb_v002 is evaluated by decode (it cannot be rank-classified)" in m for m in logged)


def test_mixture_falls_back_to_decode_for_tasks_without_labels(shared, model, params):
  del shared
  name = mixtures.make_mixture("evaluator_test_fallback", ["super_glue_rte_v102", "super_glue_wsc_v102_simple_eval"],
                               rates=[1.0, 1.0])
  ev = ev_lib.MixtureEvaluator(name, model, CFG, eval_config(max_examples=8))
  assert {e.task_name: e.modes for e in ev.evaluators} == {"super_glue_rte_v102": ("rank",),
                                                           "super_glue_wsc_v102_simple_eval": ("decode",)}
  assert {"super_glue_rte_v102/accuracy", "super_glue_wsc_v102_simple_eval/accuracy"} <= set(ev.evaluate(params))


# ----------------------------------------------------------------------------------------------------------------------
# Bad input.


def test_unknown_task_lists_the_closest_names(model):
  with pytest.raises(ru.UnknownTaskError, match="super_glue_rte_v102"):
    ev_lib.TaskEvaluator("super_glue_rte_v10", model, CFG, eval_config())


@pytest.mark.parametrize("name", ["super_glue_record_v102", "glue_stsb_v002", "super_glue_wsc_v102_simple_eval"])
def test_rank_mode_without_label_candidates_is_an_error(model, name):
  with pytest.raises(ValueError, match=rf"task '{name}' cannot be rank-classified.*mode='decode'") as e:
    ev_lib.TaskEvaluator(name, model, CFG, eval_config(mode="rank"))
  assert "\n" not in str(e.value)  # One line.


def test_decode_mode_on_a_score_only_task_is_an_error(model):
  with pytest.raises(ValueError, match="no predict metric_fns.*mode='rank'"):
    ev_lib.TaskEvaluator("super_glue_rte_v102_rank", model, CFG, eval_config(mode="decode"))


def test_mixture_name_given_to_task_evaluator(model):
  with pytest.raises(ValueError, match="is a mixture"):
    ev_lib.TaskEvaluator("glue_v002_proportional", model, CFG, eval_config())


def test_missing_split_is_named(shared, model):
  del shared
  with pytest.raises(ValueError, match="no split 'validation'.*'train'"):
    ev_lib.TaskEvaluator("super_glue_wsc_v102_simple_train", model, CFG, eval_config(mode="decode"))


def test_vocabulary_larger_than_the_model_is_an_error():
  small = T5Config(vocab_size=100, emb_dim=16, num_heads=2, head_dim=4, mlp_dim=32, num_encoder_layers=1,
                   num_decoder_layers=1)
  with pytest.raises(ValueError, match="vocab_size is 100"):
    ev_lib.TaskEvaluator("super_glue_rte_v102", t5.T5(small), small, eval_config())


# ----------------------------------------------------------------------------------------------------------------------
# Real methods.


def test_prefix_tuning_reaches_rank_and_beam_decoding(shared, model, params):
  del shared
  from xprompt_jax.methods import PrefixTuning
  method = PrefixTuning(length=2, hidden_dim=8, init_std=1.0, reparam=False)
  trainable = method.init(jax.random.PRNGKey(7), params, CFG)
  inject = lambda tr, batch: method.inject(tr, batch, CFG)  # noqa: E731
  ev = ev_lib.TaskEvaluator("super_glue_cb_v102", model, CFG, eval_config(mode="both", max_examples=6, beam_size=2))
  plain, prefixed = ev.predict(params), ev.predict(params, trainable, inject)
  assert all(a["rank_scores"] != b["rank_scores"] for a, b in zip(plain, prefixed))
  assert set(ev.metrics(prefixed)) == {f"{m}/{k}" for m in ("rank", "decode")
                                       for k in ("accuracy", "mean_3class_f1")}


def test_mpt_task_id_selects_the_task_prompt(shared, model, params):
  del shared
  from xprompt_jax.methods import MPT
  method = MPT(length=3, num_tasks=2, uv_init="normal", prompt_init="random_uniform")
  trainable = method.init(jax.random.PRNGKey(8), params, CFG)
  inject = lambda tr, batch: method.inject(tr, batch, CFG)  # noqa: E731
  records = []
  for task_id in (0, 1):
    ev = ev_lib.TaskEvaluator("super_glue_rte_v102", model, CFG, eval_config(max_examples=4), task_id=task_id)
    records.append(ev.predict(params, trainable, inject))
  assert all(a["rank_scores"] != b["rank_scores"] for a, b in zip(*records))
