"""Autoregressive decoding against the T5 KV cache: greedy, temperature/top-k sampling and T5X-style beam search.

Every entry point encodes once, creates the decoder cache with one `T5.decode(..., decode=True)` call over
`max_decode_len` dummy positions (which also projects the encoder output into the cross-attention caches), then
runs one cached decoder step per position inside a `jax.lax.while_loop`. Each entry point is a single jitted
computation, compiled once per (model config, input shapes, static options).

Conventions (T5): decoding starts from token 0; `eos_id` (1) ends a sequence; positions after EOS are 0.
Prompt and encoder-prefix injections act on the encoder only; decoder and cross prefixes are applied at every step.
"""
import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp
from flax import traverse_util

from xprompt_jax.models.injection import Injection
from xprompt_jax.models.t5 import T5

NEG_INF = -1.0e7  # "Effective -inf" for beam bookkeeping (finite so sums and divisions stay finite).
_SELF_CACHE_LEAVES = ("cached_key", "cached_value")


def repeat_batch(x: jax.Array, repeats: int, axis: int = 0) -> jax.Array:
  """`[..., B, ...] -> [..., B * repeats, ...]`, each example's copies adjacent (example-major)."""
  return jnp.repeat(x, repeats, axis=axis)


def expand_injection(injection: Optional[Injection], repeats: int) -> Optional[Injection]:
  """Repeats per-example injection fields `repeats` times along their batch axis; batch-1/shared ones stay.

  A `[B, P, D]` prompt is repeated on axis 0, `[layers, B, L, H, Dh]` prefixes on axis 1; a `[P, D]` prompt and
  prefixes with batch 1 broadcast against any batch and are returned unchanged.
  """
  if injection is None or repeats == 1:
    return injection
  prompt = injection.prompt
  if prompt is not None and prompt.ndim == 3 and prompt.shape[0] > 1:
    prompt = repeat_batch(prompt, repeats, axis=0)

  def kv(pair):
    if pair is None or pair[0].shape[1] == 1:
      return pair
    return tuple(repeat_batch(a, repeats, axis=1) for a in pair)

  return Injection(prompt=prompt, encoder_prefix=kv(injection.encoder_prefix),
                   decoder_prefix=kv(injection.decoder_prefix), cross_prefix=kv(injection.cross_prefix))


def decoder_side(injection: Optional[Injection]) -> Optional[Injection]:
  """Only the fields `T5.decode` reads (decoder and cross prefixes), so nothing encoder-side is copied around."""
  if injection is None:
    return None
  return Injection(decoder_prefix=injection.decoder_prefix, cross_prefix=injection.cross_prefix)


def encode(model: T5, params, encoder_input_tokens, injection: Optional[Injection] = None):
  """`(encoded [B, P+L, D], encoder_valid [B, P+L])` (deterministic)."""
  return model.apply({"params": params}, encoder_input_tokens, injection, method=T5.encode)


def init_cache(model: T5, params, encoded, encoder_valid, injection: Optional[Injection], max_decode_len: int):
  """Creates the decoder cache: self-attention caches of `max_decode_len` and the projected cross keys/values."""
  dummy = jnp.zeros((encoded.shape[0], max_decode_len), jnp.int32)
  _, variables = model.apply({"params": params}, encoded, encoder_valid, dummy, injection, decode=True,
                             method=T5.decode, mutable=["cache"])
  return variables["cache"]


def decode_step(model: T5, params, cache, encoded, encoder_valid, tokens, injection: Optional[Injection] = None):
  """One cached step: `tokens [B]` at the cache's current position -> `(logits [B, vocab] float32, new cache)`."""
  logits, variables = model.apply({"params": params, "cache": cache}, encoded, encoder_valid, tokens[:, None],
                                  injection, decode=True, method=T5.decode, mutable=["cache"])
  return logits[:, 0, :], variables["cache"]


def gather_cache(cache, flat_indices: jax.Array, scan_layers: bool):
  """Reorders the decoder self-attention caches along batch by `flat_indices [B']` (beam reordering).

  Self-attention `cached_key`/`cached_value` leaves are `[B, T, H, Dh]`, or `[layers, B, T, H, Dh]` with
  `scan_layers`. Cross-attention caches are left alone (identical across the beams of one example), as are the
  position counters, which hold no batch axis.
  """
  axis = 1 if scan_layers else 0
  flat = traverse_util.flatten_dict(cache)
  out = {}
  for path, leaf in flat.items():
    if path[-1] in _SELF_CACHE_LEAVES and "encoder_decoder_attention" not in path:
      if leaf.ndim != 4 + axis:
        raise ValueError(f"cache leaf {'/'.join(path)} has shape {leaf.shape}; expected "
                         f"{'[layers, B, T, H, Dh]' if scan_layers else '[B, T, H, Dh]'} "
                         f"(scan_layers={scan_layers})")
      leaf = jnp.take(leaf, flat_indices, axis=axis)
    out[path] = leaf
  return traverse_util.unflatten_dict(out)


def _check_inputs(encoder_input_tokens, max_decode_len: int):
  if encoder_input_tokens.ndim != 2:
    raise ValueError(f"encoder_input_tokens must be [batch, length], got shape {encoder_input_tokens.shape}")
  if not isinstance(max_decode_len, int) or max_decode_len <= 0:
    raise ValueError(f"max_decode_len must be a positive int, got {max_decode_len!r}")


def _token_loop(model: T5, params, encoder_input_tokens, injection, max_decode_len: int, eos_id: int,
                choose: Callable[[jax.Array, jax.Array], jax.Array]):
  """Shared greedy/sampling loop; `choose(logits [B, V], step) -> tokens [B]`. Stops once every row hit EOS."""
  b = encoder_input_tokens.shape[0]
  encoded, valid = encode(model, params, encoder_input_tokens, injection)
  dec_inj = decoder_side(injection)
  cache = init_cache(model, params, encoded, valid, dec_inj, max_decode_len)

  def cond(state):
    i, _, _, _, ended = state
    return (i < max_decode_len) & ~jnp.all(ended)

  def body(state):
    i, tokens, current, cache, ended = state
    logits, cache = decode_step(model, params, cache, encoded, valid, current, dec_inj)
    nxt = jnp.where(ended, 0, choose(logits, i).astype(jnp.int32))
    tokens = jax.lax.dynamic_update_slice(tokens, nxt[:, None], (0, i))
    return i + 1, tokens, nxt, cache, ended | (nxt == eos_id)

  state = (jnp.array(0, jnp.int32), jnp.zeros((b, max_decode_len), jnp.int32), jnp.zeros((b,), jnp.int32), cache,
           jnp.zeros((b,), bool))
  return jax.lax.while_loop(cond, body, state)[1]


@functools.partial(jax.jit, static_argnames=("model", "max_decode_len", "eos_id"))
def _greedy(model, params, encoder_input_tokens, injection, *, max_decode_len, eos_id):
  choose = lambda logits, i: jnp.argmax(logits, axis=-1)
  return _token_loop(model, params, encoder_input_tokens, injection, max_decode_len, eos_id, choose)


def greedy_decode(model: T5, params, encoder_input_tokens, *, max_decode_len: int,
                  injection: Optional[Injection] = None, eos_id: int = 1) -> jax.Array:
  """Greedy decoding with the KV cache: `tokens [B, max_decode_len]` int32, zeros after each row's EOS."""
  _check_inputs(encoder_input_tokens, max_decode_len)
  return _greedy(model, params, encoder_input_tokens, injection, max_decode_len=max_decode_len, eos_id=eos_id)


@functools.partial(jax.jit, static_argnames=("model", "max_decode_len", "eos_id", "topk"))
def _sample(model, params, encoder_input_tokens, injection, rng, temperature, *, max_decode_len, eos_id, topk):

  def choose(logits, i):
    if topk:
      kth = jax.lax.top_k(logits, topk)[0][:, -1:]
      logits = jnp.where(logits >= kth, logits, -jnp.inf)
    return jax.random.categorical(jax.random.fold_in(rng, i), logits / temperature, axis=-1)

  return _token_loop(model, params, encoder_input_tokens, injection, max_decode_len, eos_id, choose)


def sample_decode(model: T5, params, encoder_input_tokens, *, rng, max_decode_len: int, temperature: float = 1.0,
                  topk: int = 0, injection: Optional[Injection] = None, eos_id: int = 1) -> jax.Array:
  """Ancestral sampling from `softmax(logits / temperature)`, restricted to the `topk` best tokens if `topk > 0`.

  `temperature` is traced (changing it does not recompile); `topk` is static. Returns `[B, max_decode_len]`.
  """
  _check_inputs(encoder_input_tokens, max_decode_len)
  if not temperature > 0:
    raise ValueError(f"sample_decode: temperature must be > 0 (use greedy_decode for argmax), got {temperature}")
  if not isinstance(topk, int) or not 0 <= topk <= model.config.vocab_size:
    raise ValueError(f"sample_decode: topk must be an int in [0, vocab_size={model.config.vocab_size}], got {topk!r}")
  return _sample(model, params, encoder_input_tokens, injection, rng, jnp.asarray(temperature, jnp.float32),
                 max_decode_len=max_decode_len, eos_id=eos_id, topk=topk)


def brevity_penalty(length, alpha: float):
  """T5X/GNMT length normalisation `((5 + length) / 6) ** alpha` (a sequence's score is log-prob / penalty)."""
  return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


@functools.partial(jax.jit, static_argnames=("model", "beam_size", "max_decode_len", "alpha", "eos_id"))
def _beam_search(model, params, encoder_input_tokens, injection, *, beam_size, max_decode_len, alpha, eos_id):
  b, k, t = encoder_input_tokens.shape[0], beam_size, max_decode_len
  vocab = model.config.vocab_size
  encoded, valid = encode(model, params, encoder_input_tokens, injection)
  encoded, valid = repeat_batch(encoded, k), repeat_batch(valid, k)
  dec_inj = expand_injection(decoder_side(injection), k)
  cache = init_cache(model, params, encoded, valid, dec_inj, t)
  rows = jnp.arange(b)[:, None]

  def pick(x, idx):  # x [b, n, ...], idx [b, m] -> [b, m, ...]
    return x[rows, idx]

  def cond(s):
    i, live_lp, fin_scores, fin_flags = s["i"], s["live_lp"], s["fin_scores"], s["fin_flags"]
    # Live log-probs only fall as sequences grow, so the best a live beam can still reach is its log-prob
    # under the largest penalty; once every finished slot beats that everywhere, nothing can change.
    best_live = live_lp[:, 0] / brevity_penalty(t, alpha)
    worst_finished = jnp.where(jnp.all(fin_flags, axis=1), jnp.min(fin_scores, axis=1), NEG_INF)
    return (i < t) & ~jnp.all(worst_finished > best_live)

  def body(s):
    i = s["i"]
    current = jax.lax.dynamic_index_in_dim(s["live_seqs"], i, axis=2, keepdims=False).reshape(b * k)
    logits, cache = decode_step(model, params, s["cache"], encoded, valid, current, dec_inj)
    log_probs = jax.nn.log_softmax(logits.reshape(b, k, vocab), axis=-1) + s["live_lp"][:, :, None]
    # The best 2k continuations: even if k of them end here, k remain to keep the live set full.
    cand_lp, flat_idx = jax.lax.top_k(log_probs.reshape(b, k * vocab), 2 * k)
    parent, token = flat_idx // vocab, (flat_idx % vocab).astype(jnp.int32)
    cand_seqs = jax.lax.dynamic_update_slice(pick(s["live_seqs"], parent), token[:, :, None], (0, 0, i + 1))
    ends = token == eos_id

    live_lp, keep = jax.lax.top_k(jnp.where(ends, NEG_INF, cand_lp), k)
    flat_parents = (rows * k + pick(parent, keep)).reshape(b * k)
    new_cache = gather_cache(cache, flat_parents, model.config.scan_layers)

    finished_now = ends & (cand_lp > NEG_INF / 2)  # Not an extension of a never-filled beam slot.
    new_scores = jnp.where(finished_now, cand_lp / brevity_penalty(i + 1, alpha), NEG_INF)
    all_scores = jnp.concatenate([s["fin_scores"], new_scores], axis=1)
    fin_scores, best = jax.lax.top_k(all_scores, k)
    return {
        "i": i + 1,
        "live_seqs": pick(cand_seqs, keep),
        "live_lp": live_lp,
        "fin_seqs": pick(jnp.concatenate([s["fin_seqs"], cand_seqs], axis=1), best),
        "fin_scores": fin_scores,
        "fin_flags": pick(jnp.concatenate([s["fin_flags"], finished_now], axis=1), best),
        "cache": new_cache,
    }

  init = {
      "i": jnp.array(0, jnp.int32),
      "live_seqs": jnp.zeros((b, k, t + 1), jnp.int32),  # Column 0 is the start token 0.
      "live_lp": jnp.tile(jnp.array([0.0] + [NEG_INF] * (k - 1), jnp.float32), (b, 1)),
      "fin_seqs": jnp.zeros((b, k, t + 1), jnp.int32),
      "fin_scores": jnp.full((b, k), NEG_INF, jnp.float32),
      "fin_flags": jnp.zeros((b, k), bool),
      "cache": cache,
  }
  s = jax.lax.while_loop(cond, body, init)
  # Rows where no hypothesis reached EOS return the live beams, scored as if ending at max_decode_len.
  any_finished = jnp.any(s["fin_flags"], axis=1)
  seqs = jnp.where(any_finished[:, None, None], s["fin_seqs"], s["live_seqs"])
  scores = jnp.where(any_finished[:, None], s["fin_scores"], s["live_lp"] / brevity_penalty(t, alpha))
  return seqs[:, :, 1:], scores


def beam_search(model: T5, params, encoder_input_tokens, *, beam_size: int, max_decode_len: int, alpha: float = 0.6,
                injection: Optional[Injection] = None, eos_id: int = 1) -> tuple[jax.Array, jax.Array]:
  """T5X-style beam search: `(tokens [B, beam, max_decode_len], scores [B, beam])`, best beam FIRST.

  A hypothesis ending in EOS at length n (EOS included) scores `log p / ((5 + n) / 6) ** alpha`; finished
  hypotheses are kept aside while `beam_size` live ones continue, and the search stops early once no live beam can
  beat the worst kept one. Rows where nothing reached EOS within `max_decode_len` return their live beams (scored
  with the penalty at `max_decode_len`). Slots never filled hold score `NEG_INF`. Unlike T5X (ascending order),
  beams come sorted best first, so `tokens[:, 0]` is the prediction.
  """
  _check_inputs(encoder_input_tokens, max_decode_len)
  if not isinstance(beam_size, int) or beam_size <= 0:
    raise ValueError(f"beam_search: beam_size must be a positive int, got {beam_size!r}")
  if 2 * beam_size > beam_size * model.config.vocab_size:
    raise ValueError(f"beam_search: vocab_size={model.config.vocab_size} is too small for beam_size={beam_size}")
  return _beam_search(model, params, encoder_input_tokens, injection, beam_size=beam_size,
                      max_decode_len=max_decode_len, alpha=float(alpha), eos_id=eos_id)
