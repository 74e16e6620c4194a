"""google-research/prompt-tuning prompt files: the shipped .npy fixture, numpy checkpoints and T5X checkpoints."""
import os

import jax
import numpy as np
import pytest

from xprompt_jax.checkpoints import t5x
from xprompt_jax.interop import t5x_prompt
from xprompt_jax.models import t5
from xprompt_jax.models.config import T5Config


def test_reads_the_prompt_tuning_fixture(shared):
  prompt = t5x_prompt.read_prompt(str(shared / "checkpoints" / "prompt_5x256.npy"))
  raw = np.load(shared / "checkpoints" / "prompt_5x256.npy")
  assert prompt.shape == (5, 256) and prompt.dtype == np.float32
  np.testing.assert_array_equal(prompt, raw.astype(np.float32))  # The same float64 -> float32 cast: bit-identical.


def test_numpy_checkpoint_layout_and_latest_step(tmp_path):
  a, b = np.ones((3, 4), np.float32), np.full((3, 4), 2.0, np.float32)
  file = t5x_prompt.write_numpy_checkpoint(str(tmp_path), 100, a)
  t5x_prompt.write_numpy_checkpoint(str(tmp_path), 2000, b)
  assert file == os.path.join(str(tmp_path), "numpy_checkpoints", "checkpoint_100", "encoder.prompt.prompt.prompt")
  np.testing.assert_array_equal(t5x_prompt.read_prompt(str(tmp_path)), b)  # model_dir: the latest step.
  np.testing.assert_array_equal(t5x_prompt.read_prompt(os.path.dirname(file)), a)
  np.testing.assert_array_equal(t5x_prompt.read_prompt(file), a)  # The suffix-less file itself.


def test_t5x_checkpoint_round_trip_keeps_the_frozen_model(tmp_path):
  config = T5Config(vocab_size=64, emb_dim=8, num_heads=2, head_dim=4, mlp_dim=16, num_encoder_layers=1,
                    num_decoder_layers=1)
  frozen = t5.init_params(config, jax.random.PRNGKey(0))
  prompt = np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32)
  path = t5x_prompt.write_t5x_checkpoint(str(tmp_path / "checkpoint_7"), prompt, frozen, step=7)
  np.testing.assert_array_equal(t5x_prompt.read_prompt(path), prompt)
  np.testing.assert_array_equal(t5x_prompt.read_prompt(path, "target/encoder/prompt/prompt/prompt"), prompt)
  stored = t5x.read_t5x(path)
  np.testing.assert_array_equal(stored["token_embedder"]["embedding"], frozen["token_embedder"]["embedding"])
  with pytest.raises(KeyError, match="has no parameter encoder/prompt/nope"):
    t5x_prompt.read_prompt(path, "encoder/prompt/nope")
  with pytest.raises(ValueError, match=r"\(6, 5\) does not match .* \(64, 8\)"):
    t5x_prompt.write_t5x_checkpoint(str(tmp_path / "bad"), np.zeros((6, 5)), frozen)


def test_bad_inputs_name_the_file(tmp_path):
  bad = tmp_path / "p.npy"
  np.save(bad, np.zeros((2, 3, 4)))
  with pytest.raises(ValueError, match=r"p.npy holds an array of shape \(2, 3, 4\)"):
    t5x_prompt.read_prompt(str(bad))
  with pytest.raises(FileNotFoundError, match="no checkpoint_<step> folders"):
    t5x_prompt.read_prompt(str(tmp_path))
  with pytest.raises(ValueError, match="no single \\[L, D\\] 'prompt'"):
    t5x_prompt.prompt_from_trainable({"shared_prompt": np.zeros((2, 2))}, "mpt")
