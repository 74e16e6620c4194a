"""Teacher-forced sequence log-likelihoods and rank classification that encodes each input once.

`sequence_scores` follows T5X's `score_batch`: the sum over target positions (EOS included, pad 0 excluded) of
`log_softmax(logits)` in float32 at the target token. Rank classification scores every candidate target against
the *same* encoder output: the B inputs are encoded once, each decoder layer projects its cross-attention keys and
values once per example, and one teacher-forced decoder pass over the B×K (input, candidate) rows (example-major)
scores every pair; each example's K rows attend to its one copy of the keys and values.
Candidates are either one label set shared by the batch (`[K, T]`, e.g. "entailment"/"not_entailment") or one
set per example (`[B, K, T]`, e.g. COPA's two choices).
"""
from typing import Optional

import jax
import jax.numpy as jnp

from xprompt_jax.models.decoding import decoder_side, encode, expand_injection
from xprompt_jax.models.injection import Injection
from xprompt_jax.models.t5 import T5


def shift_right(targets: jax.Array) -> jax.Array:
  """Decoder inputs for teacher forcing: targets shifted right with the start token 0 in front."""
  return jnp.pad(targets, [(0, 0)] * (targets.ndim - 1) + [(1, 0)])[..., :-1]


def token_log_probs(logits: jax.Array, targets: jax.Array, weights: Optional[jax.Array] = None) -> jax.Array:
  """Per-position `log p(target)` `[B, T]` in float32, zero where `weights` is 0 (default: where targets are 0)."""
  if logits.shape[:-1] != targets.shape:
    raise ValueError(f"logits {logits.shape} do not match targets {targets.shape} ([B, T, vocab] vs [B, T])")
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  picked = jnp.take_along_axis(log_probs, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  weights = (targets > 0) if weights is None else weights
  return jnp.where(weights > 0, picked, 0.0)


def sequence_scores(model: T5, params, encoder_input_tokens, decoder_target_tokens, *,
                    injection: Optional[Injection] = None, decoder_input_tokens=None) -> jax.Array:
  """`[B]` log-likelihood of each target sequence (sum over non-pad target tokens, EOS included)."""
  _check_2d("encoder_input_tokens", encoder_input_tokens)
  _check_2d("decoder_target_tokens", decoder_target_tokens)
  if decoder_input_tokens is None:
    decoder_input_tokens = shift_right(decoder_target_tokens)
  logits = model.apply({"params": params}, encoder_input_tokens, decoder_input_tokens, injection)
  return jnp.sum(token_log_probs(logits, decoder_target_tokens), axis=-1)


def make_score_fn(model: T5):
  """A jitted `(params, batch, injection=None) -> scores [B]` over a batch dict of T5X features.

  The batch needs `encoder_input_tokens` and `decoder_target_tokens`; `decoder_input_tokens` is used when present
  (else derived by `shift_right`), and `decoder_loss_weights` when present selects the scored positions.
  """

  @jax.jit
  def score(params, batch, injection=None):
    missing = [k for k in ("encoder_input_tokens", "decoder_target_tokens") if k not in batch]
    if missing:
      raise KeyError(f"score batch lacks features {missing}; it has {sorted(batch)}")
    targets = batch["decoder_target_tokens"]
    dec_inputs = batch.get("decoder_input_tokens")
    logits = model.apply({"params": params}, batch["encoder_input_tokens"],
                         shift_right(targets) if dec_inputs is None else dec_inputs, injection)
    return jnp.sum(token_log_probs(logits, targets, batch.get("decoder_loss_weights")), axis=-1)

  return score


def _check_2d(name, x):
  if x.ndim != 2:
    raise ValueError(f"{name} must be [batch, length], got shape {tuple(x.shape)}")


def _candidates_per_example(encoder_input_tokens, candidates):
  """`[K, T]` shared or `[B, K, T]` per-example candidates -> `[B, K, T]`, with shape errors naming both."""
  b = encoder_input_tokens.shape[0]
  if candidates.ndim == 2:
    return jnp.broadcast_to(candidates, (b,) + candidates.shape)
  if candidates.ndim == 3 and candidates.shape[0] == b:
    return candidates
  raise ValueError(f"candidates have shape {tuple(candidates.shape)}; expected [K, T] (shared labels) or "
                   f"[{b}, K, T] (per example) for encoder_input_tokens of shape {tuple(encoder_input_tokens.shape)}")


def _candidate_rows(injection: Optional[Injection], k: int) -> Optional[Injection]:
  """The decoder-side injection for K candidate rows per example: decoder (self-attention) prefixes follow the
  B*K decoder rows, cross prefixes the B encoder rows they attend to."""
  side = decoder_side(injection)
  if side is None:
    return None
  expanded = expand_injection(Injection(decoder_prefix=side.decoder_prefix), k)
  return Injection(decoder_prefix=expanded.decoder_prefix, cross_prefix=side.cross_prefix)


def rank_classification_scores(model: T5, params, encoder_input_tokens, label_targets, *,
                               injection: Optional[Injection] = None) -> jax.Array:
  """`[B, K]` log-likelihood of each candidate target given each input, encoding the inputs once.

  `label_targets` is `[K, T]` (the same K candidates for every example) or `[B, K, T]` (each example's own K
  candidates); each row holds the candidate's target tokens including EOS, zero-padded.
  """
  _check_2d("encoder_input_tokens", encoder_input_tokens)
  cands = _candidates_per_example(encoder_input_tokens, label_targets)
  b, k, t = cands.shape
  encoded, valid = encode(model, params, encoder_input_tokens, injection)
  targets = cands.reshape(b * k, t)
  # The decoder gets all B*K rows but the B encoder rows: each layer projects cross-attention K/V once per example.
  logits = model.apply({"params": params}, encoded, valid, shift_right(targets), _candidate_rows(injection, k),
                       method=T5.decode)
  return jnp.sum(token_log_probs(logits, targets), axis=-1).reshape(b, k)


def rank_classify(model: T5, params, encoder_input_tokens, label_targets, *,
                  injection: Optional[Injection] = None) -> jax.Array:
  """`[B]` index of the most likely candidate (ties go to the lowest index); candidates as in the scores."""
  scores = rank_classification_scores(model, params, encoder_input_tokens, label_targets, injection=injection)
  return jnp.argmax(scores, axis=-1)


def make_rank_classification_fn(model: T5):
  """A jitted `(params, encoder_input_tokens, label_targets, injection=None) -> scores [B, K]`."""

  @jax.jit
  def scores(params, encoder_input_tokens, label_targets, injection=None):
    return rank_classification_scores(model, params, encoder_input_tokens, label_targets, injection=injection)

  return scores
