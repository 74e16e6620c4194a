"""Mixed-task serving: rows of different prompts in shared batches predict what per-prompt runs predict."""
import jax
import numpy as np
import pytest

from xprompt_jax.evaluation import mixed
from xprompt_jax.models import t5
from xprompt_jax.models.config import T5Config
from xprompt_jax.tasks import vocab as vocab_lib

CFG = T5Config(vocab_size=32128, emb_dim=16, num_heads=2, head_dim=4, mlp_dim=32, num_encoder_layers=2,
               num_decoder_layers=2)
TEXTS = ["rte sentence1: A man sleeps. sentence2: A person rests.", "cb premise: It rains. hypothesis: It is wet.",
         "boolq question: is the sky blue? passage: The sky is blue.", "rte sentence1: Dogs bark. sentence2: Cats.",
         "cb premise: She left early. hypothesis: She stayed.", "copa premise: The glass fell. choice1: It broke."]


@pytest.fixture(scope="module")
def setup():
  params = t5.init_params(CFG, jax.random.PRNGKey(0))
  keys = jax.random.split(jax.random.PRNGKey(3), 3)
  prompts = {"rte": 3 * jax.random.normal(keys[0], (4, 16)), "cb": 3 * jax.random.normal(keys[1], (4, 16)),
             "long": 3 * jax.random.normal(keys[2], (6, 16))}
  return params, {k: np.asarray(v) for k, v in prompts.items()}, vocab_lib.get_default_vocabulary()


def _server(setup, prompts):
  params, _, vocab = setup
  return mixed.MixedPromptServer(t5.T5(CFG), params, prompts, vocab, inputs_length=32, max_decode_len=5,
                                 batch_size=4)


@pytest.mark.slow
def test_mixed_batches_equal_per_prompt_runs(setup):
  _, prompts, _ = setup
  order = ["rte", "cb", "long", "cb", "rte", "long", "cb", "rte", "rte"]
  rows = [{"task": name, "inputs": TEXTS[i % len(TEXTS)]} for i, name in enumerate(order)]
  preds, stats = _server(setup, prompts).predict(rows)
  assert stats["examples"] == len(rows) and stats["batches"] == 2 + 1 and stats["examples_per_s"] > 0
  for name in prompts:
    picked = [i for i, r in enumerate(rows) if r["task"] == name]
    alone, _ = _server(setup, {name: prompts[name]}).predict([rows[i] for i in picked])
    assert [preds[i] for i in picked] == alone
  # The prompts matter: one input decoded under each prompt does not give one output for all.
  same_input = [{"task": n, "inputs": TEXTS[0]} for n in prompts]
  assert len(set(_server(setup, prompts).predict(same_input)[0])) > 1


def test_bad_rows_name_the_line(setup):
  _, prompts, _ = setup
  with pytest.raises(ValueError, match=r"in.jsonl:2: prompt 'wic' is not loaded; loaded prompts: rte, cb, long"):
    _server(setup, prompts).predict([{"task": "rte", "inputs": "x"}, {"task": "wic", "inputs": "y"}], "in.jsonl")
  with pytest.raises(ValueError, match="rows:1: the row names no prompt"):
    _server(setup, prompts).predict([{"inputs": "x"}])
  with pytest.raises(ValueError, match="one width D"):
    _server(setup, {"a": np.zeros((4, 16)), "b": np.zeros((4, 8))})


@pytest.mark.slow
def test_server_from_prompt_files_on_the_gin_model(setup, tmp_path):
  import gin
  from xprompt_jax.commands import common
  from xprompt_jax.evaluation import evaluator as ev_lib
  from xprompt_jax.interop import t5x_prompt
  _, prompts, vocab = setup
  for name in ("rte", "cb"):
    t5x_prompt.write_npy(str(tmp_path / f"{name}.npy"), prompts[name])
  common.import_configurables()
  gin.clear_config()
  try:
    gin.parse_config([f"T5Config.{k} = {v!r}" for k, v in (("vocab_size", 32128), ("emb_dim", 16), ("num_heads", 2),
                                                           ("head_dim", 4), ("mlp_dim", 32))]
                     + ["TrainConfig.seed = 0", "TrainConfig.initial_checkpoint = None"])
    cfg = ev_lib.EvalConfig(batch_size=4, feature_lengths={"inputs": 32, "targets": 5})
    server = mixed.server_from_sources([f"rte={tmp_path / 'rte.npy'}", str(tmp_path / "cb.npy")], cfg, vocab)
  finally:
    gin.clear_config()
  assert server.names == ["rte", "cb"]
  rows = [{"prompt": "cb", "inputs": TEXTS[1]}, {"prompt": "rte", "inputs": TEXTS[0]}]
  preds, stats = server.predict(rows)
  assert len(preds) == 2 and stats["batches"] == 1 and all(isinstance(p, str) for p in preds)
