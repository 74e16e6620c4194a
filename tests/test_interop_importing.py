"""Imported prompts against the gin-bound method: matching trees pass, mismatches name the bindings to set."""
import numpy as np
import pytest

from xprompt_jax.interop import importing
from xprompt_jax.interop import t5x_prompt
from xprompt_jax.methods import MPT, PromptTuning, XPrompt
from xprompt_jax.models.config import T5Config

CFG = T5Config(vocab_size=64, emb_dim=8, num_heads=2, head_dim=4, mlp_dim=16, num_encoder_layers=1,
               num_decoder_layers=1)


def test_reads_a_prompt_file_and_accepts_prompt_or_xprompt(tmp_path):
  t5x_prompt.write_npy(str(tmp_path / "p.npy"), np.ones((4, 8)))
  name, fields, trainable = importing.read_trainable("t5x", str(tmp_path / "p.npy"), CFG)
  assert (name, fields, trainable["prompt"].shape) == ("prompt", {"length": 4}, (4, 8))
  for method in (PromptTuning(length=4), XPrompt(length=4, pieces=4)):
    importing.check_against_method(method, name, fields, trainable, method.abstract_trainable(CFG))


def test_mismatches_name_the_binding(tmp_path):
  trainable = {"prompt": np.ones((4, 8))}
  method = PromptTuning(length=5)
  with pytest.raises(ValueError, match=r"prompt: imported \(4, 8\) vs method \(5, 8\). Bind: PromptTuning.length = 4"):
    importing.check_against_method(method, "prompt", {"length": 4}, trainable, method.abstract_trainable(CFG))
  method = MPT(length=4, num_tasks=2)
  with pytest.raises(ValueError, match="for method 'prompt' .* bind get_method.name = 'prompt'"):
    importing.check_against_method(method, "prompt", {"length": 4}, trainable, method.abstract_trainable(CFG))
  with pytest.raises(ValueError, match="unknown prompt source kind 'onnx'"):
    importing.read_trainable("onnx", str(tmp_path), CFG)
