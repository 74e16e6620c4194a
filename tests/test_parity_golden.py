"""Parity with the reference PyTorch T5 (../shared/golden/t5_1_1_mini, random weights, fp32).

Scores go through the real `xprompt-jax score` console script; logits, encoder outputs and the Lester-style
prompted logits go through the HF loader and the model directly.
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numerics
from cli_helpers import run_cli
from xprompt_jax import checkpoints
from xprompt_jax.models.injection import Injection
from xprompt_jax.models.t5 import T5


@pytest.fixture(scope="module")
def golden(shared):
  root = shared / "golden"
  rows = [json.loads(l) for l in open(root / "t5_1_1_mini" / "scores.jsonl")]
  ref = np.load(root / "t5_1_1_mini" / "reference_outputs.npz")
  params, config = checkpoints.load_params(str(root / "t5_1_1_mini"))
  return root, rows, ref, params, config


def test_config_read_from_hf(golden):
  _, _, _, _, config = golden
  assert (config.emb_dim, config.num_heads, config.head_dim, config.mlp_dim) == (64, 4, 16, 96)
  assert config.mlp_activations == ("gelu", "linear") and not config.logits_via_embedding


def test_logits_and_encoder_outputs(golden):
  _, rows, ref, params, config = golden
  model = T5(config)
  for i in (0, 1):
    x = jnp.array([rows[i]["input_ids"]])
    t = np.array(rows[i]["target_ids"])
    dec = jnp.array([[0] + list(t[:-1])])
    numerics.assert_close(model.apply({"params": params}, x, dec)[0], ref[f"logits_{i}"],
                          roundings=numerics.IMPLEMENTATIONS)
    encoded, _ = model.apply({"params": params}, x, method=T5.encode)
    numerics.assert_close(encoded[0], ref[f"encoder_out_{i}"], roundings=numerics.IMPLEMENTATIONS)


def test_prompted_logits_through_the_prompt_hook(golden):
  _, rows, ref, params, config = golden
  x = jnp.array([rows[0]["input_ids"]])
  t = np.array(rows[0]["target_ids"])
  dec = jnp.array([[0] + list(t[:-1])])
  logits = T5(config).apply({"params": params}, x, dec, injection=Injection(prompt=jnp.asarray(ref["prompt"])))
  numerics.assert_close(logits[0], ref["prompted_logits_0"], roundings=numerics.IMPLEMENTATIONS)
  log_probs = jax.nn.log_softmax(logits[0].astype(jnp.float32))
  score = float(np.sum(np.take_along_axis(np.asarray(log_probs, np.float64), t[:, None], 1)))
  want = rows[0]["prompted_score"]
  numerics.assert_close(score, want, roundings=numerics.VOCAB_SCORES)


def test_scores_through_the_score_command(golden, tmp_path):
  root, rows, _, _, _ = golden
  out = tmp_path / "scores.jsonl"
  code, log = run_cli("score", f"--checkpoint={root / 't5_1_1_mini'}", f"--inputs={root / 'pairs.jsonl'}",
                      f"--output={out}", "--batch_size=4", timeout=600)
  assert code == 0, log[-3000:]
  got = [json.loads(l) for l in open(out)]
  assert len(got) == len(rows)
  for g, r in zip(got, rows):
    assert g["inputs"] == r["inputs"] and g["targets"] == r["targets"]
    numerics.assert_close(g["score"], r["score"], roundings=numerics.VOCAB_SCORES, err_msg=r["inputs"][:40])
