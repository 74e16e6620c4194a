"""Prompt sources for ensemble/inspect/mixed serving: NAME=PATH parsing, PEFT folders and prompt-tuning files."""
import types

import jax
import numpy as np
import pytest

from xprompt_jax.interop import peft as peft_io
from xprompt_jax.interop import run_prompts
from xprompt_jax.interop import t5x_prompt
from xprompt_jax.methods.prefix import PrefixTuning
from xprompt_jax.methods.xprompt import MASKS_KEY, XPrompt, XPromptMasks
from xprompt_jax.models.config import T5Config

CFG = T5Config(vocab_size=64, emb_dim=8, num_heads=2, head_dim=4, mlp_dim=16, num_encoder_layers=1,
               num_decoder_layers=1)


def test_parse_named_sources():
  assert run_prompts.parse_named_sources(["rte=/runs/rte", "/runs/cb/", "/p/x.npy"]) == {
      "rte": "/runs/rte", "cb": "/runs/cb/", "x": "/p/x.npy"}
  with pytest.raises(ValueError, match="prompt name 'a' is given twice"):
    run_prompts.parse_named_sources(["a=/x", "a=/y"])


def test_load_prompt_from_files(tmp_path):
  prompt = np.arange(24, dtype=np.float32).reshape(3, 8)
  t5x_prompt.write_npy(str(tmp_path / "p.npy"), prompt)
  peft_io.export_peft(str(tmp_path / "adapter"), "prompt", {"prompt": prompt}, CFG)
  for source in (tmp_path / "p.npy", tmp_path / "adapter"):
    got, ref = run_prompts.load_prompt(str(source))
    np.testing.assert_array_equal(got, prompt)
    assert ref is None


def test_inference_forms_of_runs():
  prompt = np.ones((2, 8), np.float32)
  masks = XPromptMasks(token=np.array([1.0, 0.0]), piece=np.ones((2, 4)))
  run = types.SimpleNamespace(method=XPrompt(length=2, pieces=4), config=CFG,
                              state={"trainable": {"prompt": prompt}, "aux": {MASKS_KEY: masks}})
  np.testing.assert_array_equal(run_prompts.single_prompt(run), [[1.0] * 8, [0.0] * 8])  # Masks folded in.
  prefix = PrefixTuning(length=2, hidden_dim=4)
  trainable = prefix.init(jax.random.PRNGKey(0), None, CFG)
  run = types.SimpleNamespace(method=prefix, config=CFG, state={"trainable": trainable, "aux": {}})
  name, tree = run_prompts.inference_trainable(run)
  assert name == "prefix" and tree["encoder"]["key"].shape == (1, 2, 2, 4)  # The MLP folded into prefixes.
  with pytest.raises(ValueError, match="needs a prompt-tuning or XPrompt run"):
    run_prompts.single_prompt(run, "inspect")
