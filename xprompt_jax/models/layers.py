"""T5 building blocks with T5X parameter names and logical axis names.

Every parameter is created through `nn.with_logical_partitioning`, so `jax.eval_shape(model.init, ...)` carries
its logical axes (`vocab`, `embed`, `mlp`, `heads`, `kv`, `joined_kv`, `relpos_buckets`) for the sharding rules;
`apply` takes plain arrays. Parameters live in `param_dtype` (fp32); activations in `dtype` (bf16 on TPU); layer
norms and softmax run in fp32. There is no 1/sqrt(head_dim) at run time: T5 folds it into the query weights.
"""
from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from xprompt_jax.models.config import T5Config

NEG_INF = -1e10


def _init(scale: float, mode: str = "fan_in", dist: str = "truncated_normal"):
  return nn.initializers.variance_scaling(scale, mode, dist)


class Dense(nn.Module):
  """A bias-free projection with a 2-D kernel `[in, out]` (the T5X checkpoint layout)."""
  features: int
  axes: tuple[str, str]
  config: T5Config
  kernel_init: Callable = _init(1.0)

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.with_logical_partitioning(self.kernel_init, self.axes),
                        (x.shape[-1], self.features), jnp.dtype(self.config.param_dtype))
    dtype = self.config.activation_dtype
    return jnp.dot(x.astype(dtype), kernel.astype(dtype))


class RMSNorm(nn.Module):
  """T5 layer norm: no mean subtraction, no bias, computed in fp32."""
  config: T5Config

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)), (x.shape[-1],),
                       jnp.dtype(self.config.param_dtype))
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.config.layer_norm_eps)
    return (y * scale.astype(jnp.float32)).astype(self.config.activation_dtype)


class Embed(nn.Module):
  """The shared token embedding `token_embedder/embedding [vocab, embed]`."""
  config: T5Config

  def setup(self):
    self.embedding = self.param("embedding", nn.with_logical_partitioning(nn.initializers.normal(1.0),
                                                                          ("vocab", "embed")),
                                (self.config.vocab_size, self.config.emb_dim), jnp.dtype(self.config.param_dtype))

  def __call__(self, ids):
    return jnp.take(self.embedding, ids, axis=0).astype(self.config.activation_dtype)

  def attend(self, x):
    """Logits through the tied embedding (T5 1.0)."""
    dtype = self.config.activation_dtype
    return jnp.dot(x.astype(dtype), self.embedding.astype(dtype).T)


def relative_position_bucket(relative_position, bidirectional: bool, num_buckets: int, max_distance: int):
  """T5's bucketing of `key_position - query_position` (exact below num_buckets/2, log-spaced above)."""
  n = -relative_position
  ret = jnp.zeros_like(n)
  if bidirectional:
    num_buckets //= 2
    ret = ret + (n < 0).astype(n.dtype) * num_buckets
    n = jnp.abs(n)
  else:
    n = jnp.maximum(n, 0)
  max_exact = num_buckets // 2
  is_small = n < max_exact
  val_if_large = max_exact + (
      jnp.log(n.astype(jnp.float32) / max_exact + np.finfo(np.float32).eps) / np.log(max_distance / max_exact)
      * (num_buckets - max_exact)).astype(n.dtype)
  val_if_large = jnp.minimum(val_if_large, num_buckets - 1)
  return ret + jnp.where(is_small, n, val_if_large)


class RelativePositionBias(nn.Module):
  """`relpos_bias/rel_embedding [heads, buckets]`, shared by all layers of one stack."""
  config: T5Config
  bidirectional: bool

  @nn.compact
  def __call__(self, query_positions, key_positions):
    """Bias `[1, heads, q, k]` for int positions `[q]` and `[k]`."""
    cfg = self.config
    rel_embedding = self.param(
        "rel_embedding", nn.with_logical_partitioning(_init(1.0, "fan_avg", "uniform"), ("heads", "relpos_buckets")),
        (cfg.num_heads, cfg.relpos_num_buckets), jnp.dtype(cfg.param_dtype))
    rel = key_positions[None, :] - query_positions[:, None]
    buckets = relative_position_bucket(rel, self.bidirectional, cfg.relpos_num_buckets, cfg.relpos_max_distance)
    bias = jnp.take(rel_embedding.astype(cfg.activation_dtype), buckets, axis=1)  # [heads, q, k]
    return bias[None]


class MultiHeadAttention(nn.Module):
  """Dot-product attention with T5X names (query/key/value/out), optional KV prefix and decode cache.

  `decode=True` keeps keys/values in the 'cache' collection. Self-attention caches grow one position per call
  (`cache_index`); cross-attention caches hold the projected encoder output, computed once when the cache is
  created and only read afterwards.
  """
  config: T5Config
  cross: bool = False

  @nn.compact
  def __call__(self, inputs_q, inputs_kv, mask, bias, *, prefix=None, decode=False, deterministic=True):
    cfg = self.config
    b = inputs_q.shape[0]
    heads, hd = cfg.num_heads, cfg.head_dim
    q_init = _init(1.0 * hd**-0.5, "fan_in", "normal")
    query = Dense(cfg.inner_dim, ("embed", "joined_kv"), cfg, q_init, name="query")
    key = Dense(cfg.inner_dim, ("embed", "joined_kv"), cfg, _init(1.0, "fan_in", "normal"), name="key")
    value = Dense(cfg.inner_dim, ("embed", "joined_kv"), cfg, _init(1.0, "fan_in", "normal"), name="value")
    out = Dense(cfg.emb_dim, ("joined_kv", "embed"), cfg, _init(1.0, "fan_in", "normal"), name="out")

    split = lambda x: x.reshape(x.shape[0], x.shape[1], heads, hd)
    q = split(query(inputs_q))
    q_len = q.shape[1]
    if self.cross and not decode and inputs_kv.shape[0] != b:
      # Grouped queries (rank classification): the B*K decoder rows of K candidates per example attend to their
      # example's B encoder rows, whose keys/values are projected once. Cross-attention queries are independent, so
      # the K candidates of an example fold into one longer query axis: [B*K, T] -> [B, K*T].
      kv_b = inputs_kv.shape[0]
      if b % kv_b:
        raise ValueError(f"cross-attention: {b} query rows are not a multiple of {kv_b} encoder rows")
      q = q.reshape(kv_b, (b // kv_b) * q_len, heads, hd)

    if decode and self.cross:
      is_init = not self.has_variable("cache", "cached_key")
      ck = self.variable("cache", "cached_key", lambda: split(key(inputs_kv)))
      cv = self.variable("cache", "cached_value", lambda: split(value(inputs_kv)))
      k, v = ck.value, cv.value
      del is_init
    elif decode:
      is_init = not self.has_variable("cache", "cached_key")
      k_new, v_new = split(key(inputs_kv)), split(value(inputs_kv))
      ck = self.variable("cache", "cached_key", jnp.zeros, k_new.shape, k_new.dtype)
      cv = self.variable("cache", "cached_value", jnp.zeros, v_new.shape, v_new.dtype)
      idx = self.variable("cache", "cache_index", lambda: jnp.array(0, dtype=jnp.int32))
      if is_init:
        k, v = k_new, v_new
      else:
        if inputs_q.shape[1] != 1:
          raise ValueError(f"decode step expects one query position, got {inputs_q.shape[1]}")
        i = idx.value
        ck.value = jax.lax.dynamic_update_slice(ck.value, k_new.astype(ck.value.dtype), (0, i, 0, 0))
        cv.value = jax.lax.dynamic_update_slice(cv.value, v_new.astype(cv.value.dtype), (0, i, 0, 0))
        idx.value = i + 1
        k, v = ck.value, cv.value
    else:
      k, v = split(key(inputs_kv)), split(value(inputs_kv))

    if prefix is not None:
      pk, pv = prefix
      plen = pk.shape[1]
      pk = jnp.broadcast_to(pk, (k.shape[0],) + pk.shape[1:]).astype(k.dtype)
      pv = jnp.broadcast_to(pv, (v.shape[0],) + pv.shape[1:]).astype(v.dtype)
      k = jnp.concatenate([pk, k], axis=1)
      v = jnp.concatenate([pv, v], axis=1)
      if mask is not None:
        mask = jnp.concatenate([jnp.ones(mask.shape[:3] + (plen,), bool), mask], axis=-1)
      if bias is not None:
        bias = jnp.concatenate([jnp.zeros(bias.shape[:3] + (plen,), bias.dtype), bias], axis=-1)

    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    if bias is not None:
      logits = logits + bias.astype(jnp.float32)
    if mask is not None:
      logits = jnp.where(mask, logits, NEG_INF)
    weights = jax.nn.softmax(logits, axis=-1).astype(cfg.activation_dtype)
    if cfg.dropout_rate > 0 and not deterministic:
      weights = nn.Dropout(cfg.dropout_rate)(weights, deterministic=False)
    y = jnp.einsum("bhqk,bkhd->bqhd", weights, v.astype(cfg.activation_dtype))
    return out(y.reshape(b, q_len, heads * hd))


_ACT = {"relu": jax.nn.relu, "gelu": lambda x: jax.nn.gelu(x, approximate=True),
        "gelu_exact": lambda x: jax.nn.gelu(x, approximate=False), "silu": jax.nn.silu, "linear": lambda x: x}


class MlpBlock(nn.Module):
  """T5 MLP: `wi` (one activation, T5 1.0) or gated `wi_0`, `wi_1` (T5 1.1), then `wo`."""
  config: T5Config

  @nn.compact
  def __call__(self, x, deterministic=True):
    cfg = self.config
    acts = cfg.mlp_activations
    h = None
    for i, act in enumerate(acts):
      name = "wi" if len(acts) == 1 else f"wi_{i}"
      y = _ACT[act](Dense(cfg.mlp_dim, ("embed", "mlp"), cfg, name=name)(x))
      h = y if h is None else h * y
    if cfg.dropout_rate > 0 and not deterministic:
      h = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(h, deterministic=False)
    return Dense(cfg.emb_dim, ("mlp", "embed"), cfg, name="wo")(h)


def dropout(cfg: T5Config, x, deterministic: bool, broadcast_dims=(-2,)):
  if cfg.dropout_rate > 0 and not deterministic:
    return nn.Dropout(cfg.dropout_rate, broadcast_dims=broadcast_dims)(x, deterministic=False)
  return x


def attention_mask(query_valid, key_valid, query_segments=None, key_segments=None, causal=False):
  """Boolean mask `[B, 1, q, k]` from validity vectors, optional packing segments, optional causality."""
  mask = query_valid[:, None, :, None] & key_valid[:, None, None, :]
  if query_segments is not None:
    mask = mask & (query_segments[:, None, :, None] == key_segments[:, None, None, :])
  if causal:
    q, k = query_valid.shape[1], key_valid.shape[1]
    mask = mask & (jnp.arange(q)[:, None] >= jnp.arange(k)[None, :])[None, None]
  return mask


def remat_policy(name: str) -> Optional[Callable]:
  return {"full": None, "dots": jax.checkpoint_policies.checkpoint_dots,
          "dots_with_no_batch_dims": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims}[name]
