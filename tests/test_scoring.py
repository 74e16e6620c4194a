"""Tests for xprompt_jax.evaluation.scoring: teacher-forced log-likelihoods and encode-once rank classification."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_softmax

import numerics
from xprompt_jax.evaluation import scoring
from xprompt_jax.models.config import T5Config
from xprompt_jax.models.injection import Injection
from xprompt_jax.models.t5 import T5, init_params

B, L = 3, 7
TINY = dict(vocab_size=64, emb_dim=16, num_heads=2, head_dim=4, mlp_dim=32, num_encoder_layers=2,
            num_decoder_layers=3)


def _setup(scan=False):
  cfg = T5Config(**TINY, scan_layers=scan)
  params = init_params(cfg, jax.random.PRNGKey(0))
  enc = jax.random.randint(jax.random.PRNGKey(1), (B, L), 2, cfg.vocab_size).at[2, 4:].set(0)
  return T5(cfg), params, enc


def _injection(cfg, seed=5):
  """Per-example prompt and decoder prefix, a shared cross prefix: every expansion path is exercised."""
  k = jax.random.split(jax.random.PRNGKey(seed), 5)
  n, h, d = cfg.num_decoder_layers, cfg.num_heads, cfg.head_dim
  return Injection(prompt=jax.random.normal(k[0], (B, 3, cfg.emb_dim)),
                   decoder_prefix=(jax.random.normal(k[1], (n, B, 2, h, d)), jax.random.normal(k[2], (n, B, 2, h, d))),
                   cross_prefix=(jax.random.normal(k[3], (n, 1, 2, h, d)), jax.random.normal(k[4], (n, 1, 2, h, d))))


def _targets(rows, seed=2):
  """Zero-padded targets ending in EOS (1), of lengths 1..4."""
  rng = np.random.default_rng(seed)
  out = np.zeros((rows, 5), np.int32)
  for r in range(rows):
    n = 1 + r % 4
    out[r, :n - 1] = rng.integers(2, TINY["vocab_size"], n - 1)
    out[r, n - 1] = 1
  return out


def _forward(params, enc, dec_in, injection, *, model):
  return model.apply({"params": params}, enc, dec_in, injection)


_forward = jax.jit(_forward, static_argnames="model")


def _numpy_scores(model, params, enc, targets, injection=None):
  dec_in = np.concatenate([np.zeros((targets.shape[0], 1), np.int32), targets[:, :-1]], axis=1)
  logits = np.asarray(_forward(params, enc, jnp.asarray(dec_in), injection, model=model), np.float64)
  picked = np.take_along_axis(log_softmax(logits, axis=-1), targets[..., None], axis=-1)[..., 0]
  return (picked * (targets > 0)).sum(axis=1)


def test_shift_right():
  np.testing.assert_array_equal(np.asarray(scoring.shift_right(jnp.array([[5, 6, 1, 0], [1, 0, 0, 0]]))),
                                [[0, 5, 6, 1], [0, 1, 0, 0]])


@pytest.mark.parametrize("with_injection", [False, True])
def test_sequence_scores_equal_numpy_log_softmax_sums(with_injection):
  model, params, enc = _setup()
  inj = _injection(model.config) if with_injection else None
  targets = _targets(B)
  score = jax.jit(scoring.sequence_scores, static_argnums=0)  # A pure function: jit-friendly as is.
  got = np.asarray(score(model, params, enc, jnp.asarray(targets), injection=inj))
  numerics.assert_close(got, _numpy_scores(model, params, enc, targets, inj))  # Network, then log-softmax sums.
  batch = {"encoder_input_tokens": enc, "decoder_target_tokens": jnp.asarray(targets)}
  score_fn = scoring.make_score_fn(model)
  numerics.assert_close(score_fn(params, batch, inj), got)
  # Loss weights select positions: dropping the EOS term of every row.
  weights = (targets > 1).astype(np.float32)
  eos_lp = _numpy_scores(model, params, enc, targets, inj) - _numpy_scores(model, params, enc, targets * (targets > 1),
                                                                           inj)
  weighted = score_fn(params, {**batch, "decoder_loss_weights": jnp.asarray(weights)}, inj)
  # got - eos_lp cancels the EOS terms: the full scores are the scale of what is compared.
  numerics.assert_close(weighted, got - eos_lp, scale=np.abs(got).max())


def test_score_fn_names_missing_features():
  model, params, enc = _setup()
  with pytest.raises(KeyError, match="decoder_target_tokens"):
    scoring.make_score_fn(model)(params, {"encoder_input_tokens": enc})


@pytest.mark.parametrize("scan,with_injection", [(False, False), (False, True), (True, True)])
def test_rank_classification_equals_separate_forward_passes(scan, with_injection):
  model, params, enc = _setup(scan)
  inj = _injection(model.config) if with_injection else None
  labels = _targets(4, seed=3)  # K = 4 shared candidates.
  got = np.asarray(scoring.rank_classification_scores(model, params, enc, jnp.asarray(labels), injection=inj))
  assert got.shape == (B, 4)
  want = np.stack([_numpy_scores(model, params, enc, np.tile(labels[k], (B, 1)), inj) for k in range(4)], axis=1)
  numerics.assert_close(got, want)
  np.testing.assert_array_equal(np.asarray(scoring.rank_classify(model, params, enc, jnp.asarray(labels),
                                                                 injection=inj)), want.argmax(axis=1))
  jitted = scoring.make_rank_classification_fn(model)(params, enc, jnp.asarray(labels), inj)
  numerics.assert_close(jitted, got)


def test_per_example_candidates_equal_separate_forward_passes():
  model, params, enc = _setup()
  inj = _injection(model.config)
  cands = _targets(B * 2, seed=4).reshape(B, 2, -1)  # COPA-like: two choices per example.
  got = np.asarray(scoring.rank_classification_scores(model, params, enc, jnp.asarray(cands), injection=inj))
  want = np.stack([_numpy_scores(model, params, enc, cands[:, k], inj) for k in range(2)], axis=1)
  numerics.assert_close(got, want)
  np.testing.assert_array_equal(np.asarray(scoring.rank_classify(model, params, enc, jnp.asarray(cands),
                                                                 injection=inj)), want.argmax(axis=1))


def test_per_example_cross_prefix_follows_the_encoder_rows():
  """Mixed-task serving: every example has its own cross-attention prefix, shared by its K candidate rows."""
  model, params, enc = _setup()
  cfg = model.config
  k = jax.random.split(jax.random.PRNGKey(9), 2)
  shape = (cfg.num_decoder_layers, B, 2, cfg.num_heads, cfg.head_dim)
  inj = Injection(cross_prefix=(jax.random.normal(k[0], shape), jax.random.normal(k[1], shape)))
  labels = _targets(3, seed=6)
  got = np.asarray(scoring.rank_classification_scores(model, params, enc, jnp.asarray(labels), injection=inj))
  want = np.stack([_numpy_scores(model, params, enc, np.tile(labels[j], (B, 1)), inj) for j in range(3)], axis=1)
  numerics.assert_close(got, want)


def test_decoder_rows_must_be_a_multiple_of_encoder_rows():
  model, params, enc = _setup()
  encoded, valid = model.apply({"params": params}, enc, method=T5.encode)
  with pytest.raises(ValueError, match="decoder batch 4 differs from the encoder batch 3"):
    model.apply({"params": params}, encoded, valid, jnp.zeros((4, 2), jnp.int32), method=T5.decode)


def test_rank_classification_encodes_once(monkeypatch):
  model, params, enc = _setup()
  calls = []
  encode = T5.encode

  def counting_encode(self, *args, **kwargs):
    calls.append(args[0].shape)
    return encode(self, *args, **kwargs)

  monkeypatch.setattr(T5, "encode", counting_encode)
  scores = scoring.rank_classification_scores(model, params, enc, jnp.asarray(_targets(5)))
  assert calls == [(B, L)] and scores.shape == (B, 5)


def test_rank_classification_rejects_mismatched_candidates():
  model, params, enc = _setup()
  with pytest.raises(ValueError, match=r"candidates have shape \(2, 2, 5\)"):
    scoring.rank_classification_scores(model, params, enc, jnp.zeros((2, 2, 5), jnp.int32))
  with pytest.raises(ValueError, match="decoder_target_tokens"):
    scoring.sequence_scores(model, params, enc, jnp.zeros((5,), jnp.int32))
