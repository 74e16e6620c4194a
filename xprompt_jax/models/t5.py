"""A Flax T5 encoder-decoder (1.1 / LM-adapted and 1.0) with T5X parameter names and injection hooks.

    model = T5(PRESETS["t5_1_1_base"])
    logits = model.apply({"params": params}, encoder_input_tokens, decoder_input_tokens, injection=injection)

The model knows nothing of methods: it accepts an optional `Injection` (a prompt prepended to the embedded
encoder input, and/or per-layer key/value prefixes). `encode`/`decode` are exposed separately so rank
classification can encode once and score many targets, and `decode(..., decode=True)` runs one step against a
KV cache (see `xprompt_jax.models.decoding`). With `config.scan_layers` the layer stacks are an `nn.scan` whose
parameters carry a leading 'layers' axis (`encoder/layers/...`); T5X checkpoints are unscanned (`layers_{i}`).
"""
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from xprompt_jax.models import layers as L
from xprompt_jax.models.config import T5Config
from xprompt_jax.models.injection import Injection, check_injection, layer_prefix


class EncoderLayer(nn.Module):
  config: T5Config
  deterministic: bool = True

  @nn.compact
  def __call__(self, x, prefix, mask, bias):
    cfg, det = self.config, self.deterministic
    h = L.RMSNorm(cfg, name="pre_attention_layer_norm")(x)
    h = L.MultiHeadAttention(cfg, name="attention")(h, h, mask, bias, prefix=prefix, deterministic=det)
    x = x + L.dropout(cfg, h, det)
    h = L.RMSNorm(cfg, name="pre_mlp_layer_norm")(x)
    h = L.MlpBlock(cfg, name="mlp")(h, deterministic=det)
    return x + L.dropout(cfg, h, det), None


class DecoderLayer(nn.Module):
  config: T5Config
  deterministic: bool = True
  decode: bool = False

  @nn.compact
  def __call__(self, y, self_prefix, cross_prefix, encoded, self_mask, cross_mask, bias):
    cfg, det = self.config, self.deterministic
    h = L.RMSNorm(cfg, name="pre_self_attention_layer_norm")(y)
    h = L.MultiHeadAttention(cfg, name="self_attention")(h, h, self_mask, bias, prefix=self_prefix,
                                                         decode=self.decode, deterministic=det)
    y = y + L.dropout(cfg, h, det)
    h = L.RMSNorm(cfg, name="pre_cross_attention_layer_norm")(y)
    h = L.MultiHeadAttention(cfg, cross=True, name="encoder_decoder_attention")(
        h, encoded, cross_mask, None, prefix=cross_prefix, decode=self.decode, deterministic=det)
    y = y + L.dropout(cfg, h, det)
    h = L.RMSNorm(cfg, name="pre_mlp_layer_norm")(y)
    h = L.MlpBlock(cfg, name="mlp")(h, deterministic=det)
    return y + L.dropout(cfg, h, det), None


def _stack(layer_cls, cfg: T5Config, num_layers: int, scanned_args: int, broadcast_args: int):
  """The layer class to instantiate: remat-wrapped if configured, and an `nn.scan` over depth if `scan_layers`.

  Of the positional inputs after the carry, the first `scanned_args` (per-layer prefixes) are sliced along
  their leading layer axis; the remaining `broadcast_args` (encoded, masks, bias) are shared by every layer.
  """
  if cfg.remat_policy != "none":
    layer_cls = nn.remat(layer_cls, policy=L.remat_policy(cfg.remat_policy), prevent_cse=not cfg.scan_layers)
  if not cfg.scan_layers:
    return layer_cls
  in_axes = (0,) * scanned_args + (nn.broadcast,) * broadcast_args
  return nn.scan(layer_cls, variable_axes={"params": 0, "cache": 0}, split_rngs={"params": True, "dropout": True},
                 in_axes=in_axes, length=num_layers, metadata_params={nn.PARTITION_NAME: "layers"})


def _scatter_prompt(x, valid, prompt, prompt_positions):
  """Packed inputs: writes prompt row `prompt_positions[b, t]` over position t wherever it is >= 0.

  The data side reserved those positions (one prompt copy at the start of every packed segment, see
  `xprompt_jax.training.packing`); they become valid encoder positions. The gather's gradient sums each prompt
  row's contributions over all copies, as a shared prompt should.
  """
  if prompt is None:
    raise ValueError("encoder_prompt_positions were given but the injection has no prompt")
  if prompt_positions.shape != x.shape[:2]:
    raise ValueError(f"encoder_prompt_positions has shape {tuple(prompt_positions.shape)}; expected the encoder "
                     f"input tokens' shape {tuple(x.shape[:2])}")
  if prompt.ndim == 3 and prompt.shape[0] != 1:
    raise ValueError(f"a per-example prompt of shape {tuple(prompt.shape)} cannot be scattered into packed rows "
                     "(a row holds several examples); pack only with one shared [P, D] prompt")
  table = prompt.reshape(prompt.shape[-2:]).astype(x.dtype)
  is_prompt = prompt_positions >= 0
  rows = jnp.take(table, jnp.maximum(prompt_positions, 0), axis=0)
  return jnp.where(is_prompt[..., None], rows, x), valid | is_prompt


class Encoder(nn.Module):
  config: T5Config
  embedder: nn.Module

  @nn.compact
  def __call__(self, tokens, prompt=None, prefix=None, segment_ids=None, deterministic=True,
               prompt_positions=None):
    cfg = self.config
    b = tokens.shape[0]
    x = self.embedder(tokens)
    valid = tokens > 0
    if prompt_positions is not None:
      x, valid = _scatter_prompt(x, valid, prompt, prompt_positions)
    elif prompt is not None:
      if segment_ids is not None:
        raise ValueError("a prompt with packed encoder inputs (encoder_segment_ids) needs "
                         "encoder_prompt_positions (see xprompt_jax.training.packing) to place one prompt copy "
                         "per packed segment")
      p = jnp.broadcast_to(prompt.astype(x.dtype), (b,) + prompt.shape[-2:])
      x = jnp.concatenate([p, x], axis=1)
      valid = jnp.concatenate([jnp.ones((b, p.shape[1]), bool), valid], axis=1)
    x = L.dropout(cfg, x, deterministic)
    length = x.shape[1]
    pos = np.arange(length)
    bias = L.RelativePositionBias(cfg, bidirectional=True, name="relpos_bias")(pos, pos)
    mask = L.attention_mask(valid, valid, segment_ids, segment_ids)
    stack = _stack(EncoderLayer, cfg, cfg.num_encoder_layers, 1, 2)
    if cfg.scan_layers:
      x, _ = stack(cfg, deterministic, name="layers")(x, prefix, mask, bias)
    else:
      for i in range(cfg.num_encoder_layers):
        x, _ = stack(cfg, deterministic, name=f"layers_{i}")(x, layer_prefix(prefix, i), mask, bias)
    x = L.RMSNorm(cfg, name="encoder_norm")(x)
    return L.dropout(cfg, x, deterministic), valid


class Decoder(nn.Module):
  config: T5Config
  embedder: nn.Module

  @nn.compact
  def __call__(self, encoded, encoder_valid, tokens, *, self_prefix=None, cross_prefix=None, segment_ids=None,
               encoder_segment_ids=None, deterministic=True, decode=False, return_hidden=False):
    cfg = self.config
    b, length = tokens.shape
    y = L.dropout(cfg, self.embedder(tokens), deterministic)
    relpos = L.RelativePositionBias(cfg, bidirectional=False, name="relpos_bias")
    stepping = decode and self.has_variable("cache", "position")
    if stepping:
      # One new token at `position`, attending to the cached keys 0..position.
      position = self.variable("cache", "position", lambda: jnp.array(0, jnp.int32))
      max_len = self.variable("cache", "key_positions", lambda: None).value.shape[0]
      pos = position.value
      bias = relpos(pos[None], jnp.arange(max_len))
      self_mask = jnp.broadcast_to((jnp.arange(max_len) <= pos)[None, None, None, :], (b, 1, 1, max_len))
      position.value = pos + 1
    else:
      if decode:  # Creating the cache: remember its length; the outputs of this call are not used.
        self.variable("cache", "position", lambda: jnp.array(0, jnp.int32))
        self.variable("cache", "key_positions", lambda: jnp.zeros((length,), jnp.int32))
      p = np.arange(length)
      bias = relpos(p, p)
      valid = jnp.ones((b, length), bool)
      self_mask = L.attention_mask(valid, valid, segment_ids, segment_ids, causal=True)
    groups = 1
    if encoded.shape[0] != b:  # K decoder rows per encoder row (rank classification): cross K/V projected once.
      if decode or segment_ids is not None or b % encoded.shape[0]:
        raise ValueError(f"decoder batch {b} differs from the encoder batch {encoded.shape[0]}: allowed only for "
                         "teacher-forced, unpacked scoring with a whole number of decoder rows per encoder row")
      groups = b // encoded.shape[0]
    cross_mask = L.attention_mask(jnp.ones((b // groups, groups * y.shape[1]), bool), encoder_valid,
                                  None if stepping else segment_ids, None if stepping else encoder_segment_ids)
    stack = _stack(DecoderLayer, cfg, cfg.num_decoder_layers, 2, 4)
    if cfg.scan_layers:
      y, _ = stack(cfg, deterministic, decode, name="layers")(y, self_prefix, cross_prefix, encoded, self_mask,
                                                             cross_mask, bias)
    else:
      for i in range(cfg.num_decoder_layers):
        y, _ = stack(cfg, deterministic, decode, name=f"layers_{i}")(
            y, layer_prefix(self_prefix, i), layer_prefix(cross_prefix, i), encoded, self_mask, cross_mask, bias)
    y = L.RMSNorm(cfg, name="decoder_norm")(y)
    y = L.dropout(cfg, y, deterministic)
    if cfg.logits_via_embedding:
      logits = self.embedder.attend(y) * (cfg.emb_dim ** -0.5)
    else:
      logits = L.Dense(cfg.vocab_size, ("embed", "vocab"), cfg, L._init(1.0, "fan_in", "truncated_normal"),
                       name="logits_dense")(y)
    logits = logits.astype(jnp.float32)
    return (logits, y) if return_hidden else logits


class T5(nn.Module):
  """Frozen-T5 forward passes. All entry points take an optional `Injection`."""
  config: T5Config

  def setup(self):
    self.token_embedder = L.Embed(self.config)
    self.encoder = Encoder(self.config, self.token_embedder)
    self.decoder = Decoder(self.config, self.token_embedder)

  def encode(self, encoder_input_tokens, injection: Optional[Injection] = None, encoder_segment_ids=None,
             enable_dropout=False, encoder_prompt_positions=None):
    """Returns `(encoded [B, P+L, D], encoder_valid [B, P+L])` (P = prompt length, 0 without a prompt).

    With `encoder_prompt_positions` ([B, L] ints, -1 off the prompt; packed inputs) the prompt is not prepended:
    its rows are written into the reserved positions, and the output keeps the input length L.
    """
    inj = injection or Injection()
    check_injection(injection, self.config, encoder_input_tokens.shape[0])
    return self.encoder(encoder_input_tokens, inj.prompt, inj.encoder_prefix, encoder_segment_ids,
                        deterministic=not enable_dropout, prompt_positions=encoder_prompt_positions)

  def decode(self, encoded, encoder_valid, decoder_input_tokens, injection: Optional[Injection] = None,
             decoder_segment_ids=None, encoder_segment_ids=None, enable_dropout=False, decode=False,
             return_hidden=False):
    """Logits `[B, T, vocab]` (float32) for teacher-forced decoder inputs, or one cached step (`decode`).

    Teacher-forced, `decoder_input_tokens` may hold K rows per encoder row (`[B*K, T]` against `[B, S, D]`,
    example-major): each example's K rows attend to its encoder output, whose cross-attention keys and values are
    projected once (rank classification). Decoder prefixes then have B*K rows (or 1), cross prefixes B (or 1).
    """
    inj = injection or Injection()
    return self.decoder(encoded, encoder_valid, decoder_input_tokens, self_prefix=inj.decoder_prefix,
                        cross_prefix=inj.cross_prefix, segment_ids=decoder_segment_ids,
                        encoder_segment_ids=encoder_segment_ids, deterministic=not enable_dropout, decode=decode,
                        return_hidden=return_hidden)

  def __call__(self, encoder_input_tokens, decoder_input_tokens, injection: Optional[Injection] = None,
               encoder_segment_ids=None, decoder_segment_ids=None, enable_dropout=False, return_hidden=False,
               encoder_prompt_positions=None):
    """Teacher-forced logits; with `return_hidden`, `(logits, {"encoder": ..., "decoder": ...})`."""
    encoded, valid = self.encode(encoder_input_tokens, injection, encoder_segment_ids, enable_dropout,
                                 encoder_prompt_positions)
    out = self.decode(encoded, valid, decoder_input_tokens, injection, decoder_segment_ids, encoder_segment_ids,
                      enable_dropout, return_hidden=return_hidden)
    if return_hidden:
      logits, dec_hidden = out
      return logits, {"encoder": encoded, "encoder_valid": valid, "decoder": dec_hidden}
    return out


def _boxed_shapes(config: T5Config):
  model = T5(config)
  tokens = jnp.ones((1, 1), jnp.int32)
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), tokens, tokens))["params"]


def abstract_params(config: T5Config):
  """The parameter tree as `jax.ShapeDtypeStruct`s (T5X names), without allocating anything."""
  return nn.meta.unbox(_boxed_shapes(config))


def param_logical_axes(config: T5Config):
  """A tree like the params holding each parameter's logical axis names as a `PartitionSpec`."""
  return nn.get_partition_spec(_boxed_shapes(config))


def init_params(config: T5Config, rng) -> dict:
  """Random parameters (unboxed) — for tests and for pretraining a backbone from scratch."""
  tokens = jnp.ones((1, 1), jnp.int32)
  return nn.meta.unbox(T5(config).init(rng, tokens, tokens)["params"])
