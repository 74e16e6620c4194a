"""Tests for xprompt_jax.models.decoding: cached decoding against naive full re-runs, beam search, jit reuse."""
import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_softmax

import numerics
from xprompt_jax.models import decoding
from xprompt_jax.models.config import T5Config
from xprompt_jax.models.injection import Injection
from xprompt_jax.models.t5 import T5, init_params

B, L, T = 3, 7, 6
TINY = dict(vocab_size=64, emb_dim=16, num_heads=2, head_dim=4, mlp_dim=32, num_encoder_layers=2,
            num_decoder_layers=3)
CONFIGS = {
    "plain": T5Config(**TINY),
    "scan": T5Config(**TINY, scan_layers=True),
    "odd_heads": T5Config(**{**TINY, "num_heads": 3, "head_dim": 5}, mlp_activations=("relu",),
                          logits_via_embedding=True),
}


def _setup(name, seed=0):
  cfg = CONFIGS[name]
  params = init_params(cfg, jax.random.PRNGKey(seed))
  enc = jax.random.randint(jax.random.PRNGKey(seed + 1), (B, L), 2, cfg.vocab_size)
  enc = enc.at[1, 5:].set(0)  # Padding in one row.
  return T5(cfg), params, enc


def _injection(cfg, kind, batch=B, seed=7):
  keys = jax.random.split(jax.random.PRNGKey(seed), 5)
  n, h, d = cfg.num_decoder_layers, cfg.num_heads, cfg.head_dim
  if kind is None:
    return None
  if kind == "prompt":
    return Injection(prompt=jax.random.normal(keys[0], (4, cfg.emb_dim)))
  if kind == "per_example":  # Per-example prompt and decoder prefix, shared cross prefix.
    return Injection(prompt=jax.random.normal(keys[0], (batch, 4, cfg.emb_dim)),
                     decoder_prefix=(jax.random.normal(keys[1], (n, batch, 2, h, d)),
                                     jax.random.normal(keys[2], (n, batch, 2, h, d))),
                     cross_prefix=(jax.random.normal(keys[3], (n, 1, 3, h, d)),
                                   jax.random.normal(keys[4], (n, 1, 3, h, d))))
  if kind == "prefixes":  # Shared decoder and cross prefixes plus an encoder prefix.
    return Injection(encoder_prefix=(jax.random.normal(keys[0], (cfg.num_encoder_layers, 1, 2, h, d)),
                                     jax.random.normal(keys[1], (cfg.num_encoder_layers, 1, 2, h, d))),
                     decoder_prefix=(jax.random.normal(keys[1], (n, 1, 2, h, d)),
                                     jax.random.normal(keys[2], (n, 1, 2, h, d))),
                     cross_prefix=(jax.random.normal(keys[3], (n, 1, 3, h, d)),
                                   jax.random.normal(keys[4], (n, 1, 3, h, d))))
  raise KeyError(kind)


@functools.partial(jax.jit, static_argnames="model")
def _forward(params, enc, dec_in, injection, *, model):
  return model.apply({"params": params}, enc, dec_in, injection)


def _teacher_forced(model):
  return functools.partial(_forward, model=model)


def _naive_greedy(model, params, enc, injection, max_len, eos_id=1):
  """Re-runs the full teacher-forced model on the growing prefix; argmax of the last position each time."""
  forward = _teacher_forced(model)
  b = enc.shape[0]
  tokens = np.zeros((b, max_len), np.int32)
  ended = np.zeros(b, bool)
  for i in range(max_len):
    dec_in = np.zeros((b, max_len), np.int32)  # Causal: positions after i cannot influence position i.
    dec_in[:, 1:i + 1] = tokens[:, :i]
    nxt = np.argmax(np.asarray(forward(params, enc, jnp.asarray(dec_in), injection))[:, i], axis=-1)
    tokens[:, i] = np.where(ended, 0, nxt)
    ended |= tokens[:, i] == eos_id
  return tokens


def _numpy_logprob(model, params, enc, tokens, injection, lengths):
  """Σ_{j < length} log_softmax(teacher-forced logits)[j, token_j], in numpy."""
  dec_in = np.concatenate([np.zeros((tokens.shape[0], 1), np.int32), tokens[:, :-1]], axis=1)
  logits = np.asarray(_teacher_forced(model)(params, enc, jnp.asarray(dec_in), injection), np.float64)
  picked = np.take_along_axis(log_softmax(logits, axis=-1), tokens[..., None], axis=-1)[..., 0]
  return np.array([picked[r, :n].sum() for r, n in enumerate(lengths)])


# Shared [P, D] prompt, per-example [B, P, D] prompt + decoder prefix, shared prefixes (encoder/decoder/cross).
CASES = [("plain", None), ("plain", "per_example"), ("plain", "prefixes"), ("scan", "per_example"),
         ("scan", "prefixes"), ("odd_heads", "prompt")]


@functools.partial(jax.jit, static_argnames=("model", "max_decode_len"))
def _stepwise_logits(params, enc, dec_in, injection, *, model, max_decode_len):
  """Logits `[B, T, V]` of running `decode_step` on each column of `dec_in` in turn."""
  encoded, valid = decoding.encode(model, params, enc, injection)
  dec_inj = decoding.decoder_side(injection)
  cache = decoding.init_cache(model, params, encoded, valid, dec_inj, max_decode_len)

  def step(cache, tokens):
    logits, cache = decoding.decode_step(model, params, cache, encoded, valid, tokens, dec_inj)
    return cache, logits

  return jax.lax.scan(step, cache, dec_in.T)[1].transpose(1, 0, 2)


@pytest.mark.parametrize("name,kind", CASES)
def test_cached_decoding_matches_full_model(name, kind):
  """Greedy equals argmax re-runs of the full model, and every cached step's logits equal teacher forcing."""
  model, params, enc = _setup(name)
  inj = _injection(model.config, kind)
  got = np.asarray(decoding.greedy_decode(model, params, enc, max_decode_len=T, injection=inj))
  np.testing.assert_array_equal(got, _naive_greedy(model, params, enc, inj, T))
  targets = jax.random.randint(jax.random.PRNGKey(3), (B, T), 0, model.config.vocab_size)
  dec_in = jnp.concatenate([jnp.zeros((B, 1), jnp.int32), targets[:, :-1]], axis=1)
  want = np.asarray(_forward(params, enc, dec_in, inj, model=model))
  stepped = np.asarray(_stepwise_logits(params, enc, dec_in, inj, model=model, max_decode_len=T))
  numerics.assert_close(stepped, want)  # The same network, run a position at a time against the cache.


def test_greedy_stops_and_pads_after_eos():
  model, params, enc = _setup("plain")
  first = np.asarray(decoding.greedy_decode(model, params, enc, max_decode_len=T))
  eos = int(first[0, 1])  # Make row 0 end at its second token (or earlier).
  assert eos != 0
  got = np.asarray(decoding.greedy_decode(model, params, enc, max_decode_len=T, eos_id=eos))
  np.testing.assert_array_equal(got, _naive_greedy(model, params, enc, None, T, eos_id=eos))
  end = int(np.argmax(got[0] == eos))
  assert end <= 1 and np.all(got[0, end + 1:] == 0)


def _peaked(params, cfg, scale=1000.0):
  """Sharpen the output distribution so that greedy is the unique best sequence under any length penalty."""
  params = jax.tree_util.tree_map(lambda x: x, params)
  if cfg.logits_via_embedding:
    params["token_embedder"]["embedding"] = params["token_embedder"]["embedding"] * scale
  else:
    params["decoder"]["logits_dense"]["kernel"] = params["decoder"]["logits_dense"]["kernel"] * scale
  return params


@pytest.mark.parametrize("name", ["plain", "scan"])
def test_beam_on_peaked_model_equals_greedy(name):
  model, params, enc = _setup(name)
  params = _peaked(params, model.config)
  eos = int(np.asarray(decoding.greedy_decode(model, params, enc, max_decode_len=T))[0, 2])
  assert eos != 0
  greedy = np.asarray(decoding.greedy_decode(model, params, enc, max_decode_len=T, eos_id=eos))
  # Rows whose greedy output never ends: any finished hypothesis outranks it (T5X semantics), so skip those.
  finished = (greedy == eos).any(axis=1)
  assert finished[0]
  for beam in (1, 4):
    tokens, scores = decoding.beam_search(model, params, enc, beam_size=beam, max_decode_len=T, eos_id=eos)
    assert tokens.shape == (B, beam, T) and scores.shape == (B, beam)
    np.testing.assert_array_equal(np.asarray(tokens[finished, 0]), greedy[finished], err_msg=f"beam {beam}")


def _check_beam_scores(model, params, enc, inj, tokens, scores, eos, alpha):
  """Every filled beam's score is its recomputed log-prob divided by the brevity penalty of its length."""
  tokens, scores = np.asarray(tokens), np.asarray(scores)
  assert np.all(np.diff(scores, axis=1) <= 0), "beams must be sorted best first"
  b, k, t = tokens.shape
  for j in range(k):
    filled = scores[:, j] > decoding.NEG_INF / 2
    ends = tokens[:, j] == eos
    lengths = np.where(ends.any(axis=1), np.argmax(ends, axis=1) + 1, t)
    lp = _numpy_logprob(model, params, enc, tokens[:, j], inj, lengths)
    want = lp / ((5.0 + lengths) / 6.0) ** alpha
    numerics.assert_close(scores[filled, j], want[filled], err_msg=f"beam {j}")  # Cached steps against one pass.
    for r in np.flatnonzero(filled):
      assert np.all(tokens[r, j, lengths[r]:] == 0)
  return lengths


@pytest.mark.parametrize("name,kind", [("plain", "per_example"), ("scan", "prefixes"), ("odd_heads", "prompt")])
def test_beam_scores_are_penalised_log_probs_and_beat_greedy(name, kind):
  model, params, enc = _setup(name)
  inj = _injection(model.config, kind)
  alpha = 0.6
  eos = int(np.asarray(decoding.greedy_decode(model, params, enc, max_decode_len=T, injection=inj))[0, 2])
  assert eos != 0
  greedy = np.asarray(decoding.greedy_decode(model, params, enc, max_decode_len=T, injection=inj, eos_id=eos))
  tokens, scores = decoding.beam_search(model, params, enc, beam_size=4, max_decode_len=T, alpha=alpha,
                                        injection=inj, eos_id=eos)
  _check_beam_scores(model, params, enc, inj, tokens, scores, eos, alpha)
  finished = (greedy == eos).any(axis=1)
  assert finished[0]
  g_len = np.argmax(greedy == eos, axis=1) + 1
  g_score = _numpy_logprob(model, params, enc, greedy, inj, g_len) / ((5.0 + g_len) / 6.0) ** alpha
  assert np.all(np.asarray(scores)[finished, 0] >= g_score[finished] - numerics.tolerance(g_score[finished]))


def test_beam_rows_match_single_example_searches():
  """Beam expansion of the batch (encoder output, per-example prompt/prefixes) keeps examples apart."""
  model, params, enc = _setup("plain")
  inj = _injection(model.config, "per_example")
  tokens, scores = decoding.beam_search(model, params, enc, beam_size=3, max_decode_len=T, injection=inj, eos_id=5)
  for r in range(B):
    one = Injection(prompt=inj.prompt[r:r + 1], decoder_prefix=tuple(a[:, r:r + 1] for a in inj.decoder_prefix),
                    cross_prefix=inj.cross_prefix)
    t1, s1 = decoding.beam_search(model, params, enc[r:r + 1], beam_size=3, max_decode_len=T, injection=one,
                                  eos_id=5)
    np.testing.assert_array_equal(np.asarray(tokens[r]), np.asarray(t1[0]))
    numerics.assert_close(scores[r], s1[0])  # The same beams, a batch of 3 against a batch of 1.


def test_beam_without_any_eos_returns_live_beams_with_penalty():
  model, params, enc = _setup("plain")
  never = model.config.vocab_size + 5  # An id no step can produce.
  tokens, scores = decoding.beam_search(model, params, enc, beam_size=2, max_decode_len=4, alpha=0.6, eos_id=never)
  assert np.all(np.asarray(scores) > decoding.NEG_INF / 2)  # Every slot holds a live beam of length 4.
  _check_beam_scores(model, params, enc, None, tokens, scores, never, 0.6)


def test_sampling_topk1_is_greedy_and_samples_stay_in_topk():
  model, params, enc = _setup("plain")
  greedy = np.asarray(decoding.greedy_decode(model, params, enc, max_decode_len=T))
  top1 = decoding.sample_decode(model, params, enc, rng=jax.random.PRNGKey(0), max_decode_len=T, topk=1)
  np.testing.assert_array_equal(np.asarray(top1), greedy)
  sample = np.asarray(decoding.sample_decode(model, params, enc, rng=jax.random.PRNGKey(1), max_decode_len=T,
                                             temperature=2.0, topk=3))
  dec_in = np.concatenate([np.zeros((B, 1), np.int32), sample[:, :-1]], axis=1)
  logits = np.asarray(_teacher_forced(model)(params, enc, jnp.asarray(dec_in), None))
  rank = (logits > np.take_along_axis(logits, sample[..., None], axis=-1)).sum(-1)
  ended_before = np.cumsum(sample == 1, axis=1) - (sample == 1) > 0
  assert np.all(rank[~ended_before] < 3)
  assert not np.array_equal(sample, greedy)
  with pytest.raises(ValueError, match="temperature"):
    decoding.sample_decode(model, params, enc, rng=jax.random.PRNGKey(0), max_decode_len=T, temperature=0.0)


def _compiles(caplog, name):
  return sum(1 for r in caplog.records if f"Compiling jit({name})" in r.getMessage())


def test_decoders_compile_once_per_shape(caplog):
  cfg = CONFIGS["plain"].replace(vocab_size=66)  # A config no other test uses: a cold jit cache.
  model = T5(cfg)
  p1, p2 = init_params(cfg, jax.random.PRNGKey(0)), init_params(cfg, jax.random.PRNGKey(1))
  enc = jax.random.randint(jax.random.PRNGKey(2), (B, L), 2, cfg.vocab_size)
  caplog.set_level(logging.WARNING)
  with jax.log_compiles():
    for params, tokens in ((p1, enc), (p2, enc + 1), (p1, enc[:, ::-1])):
      decoding.greedy_decode(model, params, tokens, max_decode_len=T)
      decoding.beam_search(model, params, tokens, beam_size=2, max_decode_len=T)
      decoding.sample_decode(model, params, tokens, rng=jax.random.PRNGKey(0), max_decode_len=T, temperature=0.7)
    assert (_compiles(caplog, "_greedy"), _compiles(caplog, "_beam_search"), _compiles(caplog, "_sample")) == (1, 1, 1)
    decoding.greedy_decode(model, p1, enc[:2], max_decode_len=T)  # A new batch shape compiles again.
    decoding.sample_decode(model, p1, enc, rng=jax.random.PRNGKey(0), max_decode_len=T, temperature=1.3)
  assert _compiles(caplog, "_greedy") == 2 and _compiles(caplog, "_sample") == 1


def test_expand_injection_and_gather_cache_layouts():
  cfg = CONFIGS["plain"]
  inj = _injection(cfg, "per_example", batch=2)
  out = decoding.expand_injection(inj, 3)
  assert out.prompt.shape == (6, 4, cfg.emb_dim)
  np.testing.assert_array_equal(np.asarray(out.prompt[3]), np.asarray(inj.prompt[1]))
  assert out.decoder_prefix[0].shape == (3, 6, 2, 2, 4) and out.cross_prefix[0].shape == (3, 1, 3, 2, 4)
  assert decoding.expand_injection(None, 3) is None
  cache = {"decoder": {"position": jnp.array(2), "layers_0": {
      "self_attention": {"cached_key": jnp.arange(4.0)[:, None, None, None] * jnp.ones((4, 2, 1, 1)),
                         "cache_index": jnp.array(1)},
      "encoder_decoder_attention": {"cached_key": jnp.arange(4.0)[:, None, None, None] * jnp.ones((4, 2, 1, 1))}}}}
  got = decoding.gather_cache(cache, jnp.array([1, 1, 3, 0]), scan_layers=False)
  np.testing.assert_array_equal(np.asarray(got["decoder"]["layers_0"]["self_attention"]["cached_key"][:, 0, 0, 0]),
                                [1, 1, 3, 0])
  np.testing.assert_array_equal(
      np.asarray(got["decoder"]["layers_0"]["encoder_decoder_attention"]["cached_key"][:, 0, 0, 0]), [0, 1, 2, 3])
  with pytest.raises(ValueError, match="layers_0/self_attention/cached_key"):
    decoding.gather_cache(cache, jnp.array([0]), scan_layers=True)


def test_bad_arguments_raise():
  model, params, enc = _setup("plain")
  with pytest.raises(ValueError, match="max_decode_len"):
    decoding.greedy_decode(model, params, enc, max_decode_len=0)
  with pytest.raises(ValueError, match="beam_size"):
    decoding.beam_search(model, params, enc, beam_size=0, max_decode_len=T)
  with pytest.raises(ValueError, match=r"\[batch, length\]"):
    decoding.greedy_decode(model, params, enc[0], max_decode_len=T)
