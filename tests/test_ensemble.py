"""Prompt ensembling: one replicated batch gives each prompt's own predictions, and the vote is their majority."""
import jax
import numpy as np
import pytest

from xprompt_jax.evaluation import ensemble
from xprompt_jax.evaluation import evaluator as ev_lib
from xprompt_jax.models import t5
from xprompt_jax.models.config import T5Config
from xprompt_jax.models.injection import Injection

CFG = T5Config(vocab_size=32128, emb_dim=16, num_heads=2, head_dim=4, mlp_dim=32, num_encoder_layers=2,
               num_decoder_layers=2)


@pytest.fixture(scope="module")
def params():
  return t5.init_params(CFG, jax.random.PRNGKey(0))


def prompt_inject(trainable, batch):
  del batch
  return Injection(prompt=trainable["prompt"])


def prompts(n=3, length=4, scale=3.0):
  return scale * np.asarray(jax.random.normal(jax.random.PRNGKey(7), (n, length, CFG.emb_dim)))


@pytest.mark.parametrize("task, mode, n_examples", [("super_glue_cb_v102", "rank", 24),
                                                    ("super_glue_rte_v102", "decode", 6)])
def test_ensemble_equals_vote_of_separate_runs(shared, params, task, mode, n_examples):
  del shared  # Real SuperGLUE validation rows.
  cfg = ev_lib.EvalConfig(mode=mode, batch_size=8, max_examples=n_examples,
                          feature_lengths={"inputs": 64, "targets": 6})
  ev = ev_lib.TaskEvaluator(task, t5.T5(CFG), CFG, cfg)
  stacked = prompts()
  names = ["a", "b", "c"]
  key = ensemble.PREDICTION_KEYS[mode]
  separate = [[r[key] for r in ev.predict(params, {"prompt": p}, prompt_inject)] for p in stacked]
  ens = ensemble.PromptEnsemble(ev)
  together = ens.predict(params, stacked)
  assert [[r[key] for r in records] for records in together] == separate
  if mode == "rank":
    assert any(len(set(col)) > 1 for col in zip(*separate)), "prompts never disagree: the vote is not exercised"
  voted = [r[key] for r in ens.vote(together)]
  assert voted == ensemble.majority_vote(separate)
  metrics = ens.evaluate(params, stacked, names)
  want = ev.metrics([{key: v} for v in voted])
  assert {k: metrics[f"ensemble/{k}"] for k in want} == want
  for name, p in zip(names, stacked):
    for k, v in ev.evaluate(params, {"prompt": p}, prompt_inject).items():
      assert metrics[f"{name}/{k}"] == pytest.approx(v)


def test_majority_vote_ties_go_to_the_earliest_prompt():
  assert ensemble.majority_vote([["x", "p", "a"], ["y", "q", "b"], ["y", "p", "c"]]) == ["y", "p", "a"]


def test_bad_ensembles_raise():
  with pytest.raises(ValueError, match=r"'a' is \(4, 16\) and 'b' is \(5, 16\)"):
    ensemble.stack_prompts([np.zeros((4, 16)), np.zeros((5, 16))], ["a", "b"])
  with pytest.raises(ValueError, match="width 8 but the frozen model's emb_dim is 16"):
    ensemble.stack_prompts([np.zeros((4, 8)), np.zeros((4, 8))], ["a", "b"], emb_dim=16)
  with pytest.raises(ValueError, match="at least 2 prompts"):
    ensemble.stack_prompts([np.zeros((4, 8))], ["a"])
  with pytest.raises(ValueError, match="different base models cannot be ensembled: 'r1' on /m1 .* 'r2' on /m2"):
    ensemble.check_same_base({"r1": {"path": "/m1", "fingerprint": "f1"}, "r2": {"path": "/m2", "fingerprint": "f2"}})
