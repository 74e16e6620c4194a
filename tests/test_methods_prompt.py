"""Prompt tuning: every initialisation, the injection, gradients and the prompt-length check."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio

import numerics
from xprompt_jax.methods import prompt as P
from xprompt_jax.methods.prompt import PromptTuning, initial_prompt
from xprompt_jax.models.config import PRESETS, T5Config
from xprompt_jax.models.injection import Injection
from xprompt_jax.models.t5 import T5, init_params

# heads x head_dim (8) != emb_dim (16), unequal depths.
CFG = T5Config(vocab_size=64, emb_dim=16, num_heads=2, head_dim=4, mlp_dim=32, num_encoder_layers=2,
               num_decoder_layers=3, relpos_num_buckets=8, relpos_max_distance=16)
RNG = jax.random.PRNGKey(0)
SEQIO_SPM = os.path.join(os.path.dirname(seqio.__file__), "test_data", "sentencepiece", "sentencepiece.model")


@pytest.fixture(scope="module")
def frozen():
  return jax.jit(init_params, static_argnums=0)(CFG, jax.random.PRNGKey(42))


@jax.jit
def _logits(frozen, enc, dec, injection=None):
  return T5(CFG).apply({"params": frozen}, enc, dec, injection=injection)


def _ids_table(vocab_size, emb_dim=4):
  """An embedding table whose row i is filled with i, so a row tells which id it came from."""
  return jnp.repeat(jnp.arange(vocab_size, dtype=jnp.float32)[:, None], emb_dim, axis=1)


def _tokens(seed, shape):
  return jnp.asarray(np.random.default_rng(seed).integers(2, CFG.vocab_size, shape), jnp.int32)


def test_random_uniform_shape_and_range(frozen):
  prompt = PromptTuning(length=50, prompt_init="random_uniform").init(RNG, frozen, CFG)["prompt"]
  assert prompt.shape == (50, 16) and prompt.dtype == jnp.float32
  assert float(jnp.max(jnp.abs(prompt))) <= 0.5
  assert float(jnp.max(prompt)) > 0.4 and float(jnp.min(prompt)) < -0.4  # Spans the range, not a constant.


def test_sampled_vocab_rows_are_distinct_frequent_non_special_ids():
  table = _ids_table(32128)
  prompt = initial_prompt(RNG, table, 300, "sampled_vocab")
  ids = np.asarray(prompt[:, 0]).astype(int)
  np.testing.assert_array_equal(np.asarray(prompt), np.asarray(table)[ids])
  assert len(set(ids.tolist())) == 300
  assert ids.min() >= 3 and ids.max() < 5000


def test_sampled_vocab_rows_come_from_the_frozen_table(frozen):
  prompt = PromptTuning(length=20).init(RNG, frozen, CFG)["prompt"]
  table = np.asarray(frozen["token_embedder"]["embedding"])
  matches = [np.flatnonzero((table == np.asarray(row)).all(axis=1)) for row in prompt]
  ids = [int(m[0]) for m in matches]
  assert all(len(m) == 1 for m in matches) and len(set(ids)) == 20 and min(ids) >= 3


def test_sampled_vocab_too_long_errors():
  with pytest.raises(ValueError, match=r"cannot draw 62 distinct ids from \[3, 64\)"):
    initial_prompt(RNG, _ids_table(64), 62, "sampled_vocab")


def test_class_labels_from_id_lists():
  table = jax.random.normal(RNG, (64, 8))
  labels = ((5, 7, 9), (11,))
  prompt = initial_prompt(RNG, table, 10, "class_labels", class_labels=labels)
  # Means of a few embedding rows.
  numerics.assert_close(prompt[0], jnp.mean(table[jnp.array([5, 7, 9])], axis=0), roundings=numerics.FEW)
  numerics.assert_close(prompt[1], table[11], roundings=numerics.FEW)
  rest = np.asarray(prompt[2:])
  assert all((np.asarray(table) == row).all(axis=1).any() for row in rest)  # Sampled vocab rows.


def test_class_labels_from_strings_with_a_vocabulary(frozen):
  vocab = seqio.SentencePieceVocabulary(SEQIO_SPM)
  method = PromptTuning(length=4, prompt_init="class_labels", class_labels=("yes", "no"), vocabulary=vocab)
  prompt = method.init(RNG, frozen, CFG)["prompt"]
  table = frozen["token_embedder"]["embedding"]
  for row, label in enumerate(("yes", "no")):
    ids = jnp.asarray(vocab.encode(label))
    assert ids.size > 1
    numerics.assert_close(prompt[row], jnp.mean(table[ids], axis=0), roundings=numerics.FEW)  # A mean of a few rows.


def test_class_labels_with_the_default_t5_vocabulary(shared):
  del shared  # The default vocabulary reads <shared>/vocab/t5_spm_32000.model.
  from xprompt_jax.tasks.vocab import get_default_vocabulary
  table = _ids_table(32128)
  prompt = initial_prompt(RNG, table, 3, "class_labels", class_labels=("entailment", "not_entailment"))
  for row, label in enumerate(("entailment", "not_entailment")):
    numerics.assert_close(prompt[row, 0], np.mean(get_default_vocabulary().encode(label)), roundings=numerics.FEW)


def test_class_label_errors():
  table = _ids_table(64)
  with pytest.raises(ValueError, match="token ids \\[70\\] are outside the embedding table's 64 rows"):
    initial_prompt(RNG, table, 4, "class_labels", class_labels=((3, 70),))
  with pytest.raises(ValueError, match="3 labels do not fit a prompt of length 2"):
    initial_prompt(RNG, table, 2, "class_labels", class_labels=((3,), (4,), (5,)))
  with pytest.raises(ValueError, match="needs class_labels"):
    initial_prompt(RNG, table, 2, "class_labels")


def test_from_text_cycles_and_truncates():
  table = _ids_table(64)
  np.testing.assert_array_equal(initial_prompt(RNG, table, 7, "from_text", text=(4, 5, 6))[:, 0],
                                [4, 5, 6, 4, 5, 6, 4])
  np.testing.assert_array_equal(initial_prompt(RNG, table, 2, "from_text", text=(4, 5, 6))[:, 0], [4, 5])
  vocab = seqio.SentencePieceVocabulary(SEQIO_SPM)
  ids = vocab.encode("entailment")
  prompt = initial_prompt(RNG, table, 3, "from_text", text="entailment", vocabulary=vocab)
  np.testing.assert_array_equal(prompt[:, 0], ids[:3])


def test_from_file_round_trip_and_wrong_shape(tmp_path, frozen):
  path = tmp_path / "prompt.npy"
  saved = np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32)
  np.save(path, saved)
  prompt = PromptTuning(length=5, prompt_init="from_file", path=str(path)).init(RNG, frozen, CFG)["prompt"]
  np.testing.assert_array_equal(prompt, saved)
  with pytest.raises(ValueError) as e:
    PromptTuning(length=6, prompt_init="from_file", path=str(path)).init(RNG, frozen, CFG)
  assert str(path) in str(e.value) and "(5, 16)" in str(e.value) and "[6, 16]" in str(e.value)
  with pytest.raises(ValueError, match="cannot read a .npy prompt"):
    initial_prompt(RNG, _ids_table(64), 5, "from_file", path=str(tmp_path / "missing.npy"))


def test_from_file_shared_fixture(shared):
  path = shared / "checkpoints" / "prompt_5x256.npy"
  prompt = initial_prompt(RNG, _ids_table(64, 256), 5, "from_file", path=str(path))
  np.testing.assert_array_equal(prompt, np.load(path).astype(np.float32))  # The fixture is float64.
  with pytest.raises(ValueError, match=r"shape \(5, 256\); expected \[5, 16\]"):
    initial_prompt(RNG, _ids_table(64, 16), 5, "from_file", path=str(path))


def test_bad_configuration_errors(frozen):
  with pytest.raises(ValueError, match="prompt_init='vocab'; known: random_uniform"):
    PromptTuning(prompt_init="vocab")
  with pytest.raises(ValueError, match="length must be a positive int"):
    PromptTuning(length=0)
  with pytest.raises(ValueError, match="needs text"):
    PromptTuning(length=2, prompt_init="from_text").init(RNG, frozen, CFG)
  with pytest.raises(ValueError, match="no token_embedder/embedding"):
    PromptTuning(length=2).init(RNG, {"encoder": {}}, CFG)


def test_injection_equals_the_model_with_the_prompt(frozen):
  method = PromptTuning(length=3, prompt_init="random_uniform")
  trainable = method.init(RNG, frozen, CFG)
  enc, dec = _tokens(0, (2, 5)), _tokens(1, (2, 4))
  via_method = _logits(frozen, enc, dec, method.inject(trainable, {}, CFG))
  direct = _logits(frozen, enc, dec, Injection(prompt=trainable["prompt"]))
  plain = _logits(frozen, enc, dec)
  np.testing.assert_array_equal(via_method, direct)
  numerics.assert_differs(via_method, plain, roundings=numerics.NETWORK)
  jitted = jax.jit(lambda t: method.inject(t, {}, CFG).prompt)(trainable)
  np.testing.assert_array_equal(jitted, trainable["prompt"])


def test_gradient_reaches_the_prompt(frozen):
  method = PromptTuning(length=3)
  trainable = method.init(RNG, frozen, CFG)
  enc, dec = _tokens(0, (2, 5)), _tokens(1, (2, 4))
  loss = lambda t: jnp.sum(_logits(frozen, enc, dec, method.inject(t, {}, CFG)))
  grads = jax.jit(jax.grad(loss))(trainable)
  assert float(jnp.max(jnp.abs(grads["prompt"]))) > 0


def test_prompt_length_check_and_counts(frozen):
  method = PromptTuning(length=100)
  assert method.prompt_length == 100
  method.check_lengths(512, 412)
  with pytest.raises(ValueError, match="prompt length 100 \\+ inputs length 500 = 600 exceeds the encoder length 512"):
    method.check_lengths(512, 500)
  assert method.num_params(method.abstract_trainable(PRESETS["t5_1_1_base"])) == 76_800
  assert PromptTuning(length=4).num_params(PromptTuning(length=4).init(RNG, frozen, CFG)) == 64
  assert P.PROMPT_AXES == method.logical_axes(CFG)["prompt"]
