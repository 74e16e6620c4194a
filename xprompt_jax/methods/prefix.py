"""Prefix tuning (Li & Liang, 2021): trained key/value prefixes in every attention layer of the frozen T5.

Each enabled attention kind (`encoder` self-attention, `decoder` self-attention, decoder `cross`-attention) gets,
per layer, L prefix keys and values shaped by the model's real `num_heads` x `head_dim` (which need not equal
`emb_dim`). Two trainable forms:

* `reparam=False`: the prefixes themselves, `{kind: {"key": [layers, L, heads, head_dim], "value": ...}}`.
* `reparam=True` (the paper's training recipe): an `[L, reparam_embed_dim]` embedding fed through a 2-layer MLP,
  `tanh(E W_i + b_i) W_kind,key + b_kind,key` (one shared hidden layer of `hidden_dim` units, one output head per
  kind and key/value) giving every layer's prefixes at once. `export` folds the MLP into the plain form, which
  `inference_method()` (the same method with `reparam=False`) injects; `inject` accepts either form.
"""
import dataclasses
from typing import Optional

import gin
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from xprompt_jax.methods.base import Method, Trainable
from xprompt_jax.models.config import T5Config
from xprompt_jax.models.injection import Injection

# Attention kind -> the Injection field it fills.
KINDS = {"encoder": "encoder_prefix", "decoder": "decoder_prefix", "cross": "cross_prefix"}
PLAIN_AXES = PartitionSpec("layers", "prefix_length", "heads", "kv")


def _num_layers(config: T5Config, kind: str) -> int:
  return config.num_encoder_layers if kind == "encoder" else config.num_decoder_layers


@gin.configurable
@dataclasses.dataclass(frozen=True)
class PrefixTuning(Method):
  """Per-layer key/value prefixes; `encoder`/`decoder`/`cross` switch the attention kinds that get one."""

  length: int = 10
  encoder: bool = True
  decoder: bool = True
  cross: bool = True
  reparam: bool = True
  hidden_dim: int = 512
  reparam_embed_dim: Optional[int] = None  # Width of the MLP's input embedding; None: the model's emb_dim.
  init_std: float = 0.02  # Std of the plain prefixes when reparam=False.

  name = "prefix"

  def __post_init__(self):
    for field in ("length", "hidden_dim"):
      value = getattr(self, field)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"PrefixTuning.{field} must be a positive int, got {value!r}")
    if not self.kinds:
      raise ValueError("PrefixTuning: encoder, decoder and cross are all False; enable at least one prefix kind")

  @property
  def kinds(self) -> tuple[str, ...]:
    return tuple(kind for kind in KINDS if getattr(self, kind))

  def _embed_dim(self, config: T5Config) -> int:
    return self.reparam_embed_dim or config.emb_dim

  def init(self, rng: jax.Array, frozen_params, config: T5Config) -> Trainable:
    del frozen_params
    dtype = jnp.dtype(config.param_dtype)
    heads, hd = config.num_heads, config.head_dim
    keys = iter(jax.random.split(rng, 2 + 2 * len(self.kinds)))
    if not self.reparam:
      return {kind: {part: self.init_std * jax.random.normal(next(keys), (_num_layers(config, kind), self.length,
                                                                           heads, hd), dtype)
                     for part in ("key", "value")} for kind in self.kinds}
    e, h = self._embed_dim(config), self.hidden_dim
    mlp = {"wi": {"kernel": e**-0.5 * jax.random.normal(next(keys), (e, h), dtype), "bias": jnp.zeros((h,), dtype)}}
    for kind in self.kinds:
      n = _num_layers(config, kind)
      mlp[kind] = {part: {"kernel": h**-0.5 * jax.random.normal(next(keys), (h, n, heads, hd), dtype),
                          "bias": jnp.zeros((n, heads, hd), dtype)} for part in ("key", "value")}
    return {"embedding": jax.random.normal(next(keys), (self.length, e), dtype), "mlp": mlp}

  def plain_prefixes(self, trainable: Trainable) -> Trainable:
    """The `{kind: {"key", "value"}}` prefixes `[layers, L, heads, head_dim]` of either trainable form."""
    if "embedding" not in trainable:
      return trainable
    mlp = trainable["mlp"]
    hidden = jnp.tanh(trainable["embedding"] @ mlp["wi"]["kernel"] + mlp["wi"]["bias"])
    return {kind: {part: jnp.einsum("lh,hnkd->nlkd", hidden, mlp[kind][part]["kernel"])
                         + mlp[kind][part]["bias"][:, None]
                   for part in ("key", "value")} for kind in self.kinds}

  def inject(self, trainable: Trainable, batch: dict, config: T5Config) -> Injection:
    del batch, config
    plain = self.plain_prefixes(trainable)
    missing = [kind for kind in self.kinds if kind not in plain]
    if missing:
      raise ValueError(f"PrefixTuning: the trainable tree has no prefixes for {missing} (it has {sorted(plain)}); "
                       f"enabled kinds are {list(self.kinds)}")
    # Insert the batch axis (1: shared by every example) the model expects: [layers, 1, L, heads, head_dim].
    return Injection(**{KINDS[kind]: (plain[kind]["key"][:, None], plain[kind]["value"][:, None])
                        for kind in self.kinds})

  def logical_axes(self, config: T5Config):
    del config
    if not self.reparam:
      return {kind: {"key": PLAIN_AXES, "value": PLAIN_AXES} for kind in self.kinds}
    head = {"kernel": PartitionSpec("prefix_hidden", "layers", "heads", "kv"),
            "bias": PartitionSpec("layers", "heads", "kv")}
    mlp = {"wi": {"kernel": PartitionSpec("prompt_embed", "prefix_hidden"), "bias": PartitionSpec("prefix_hidden")}}
    mlp.update({kind: {"key": head, "value": head} for kind in self.kinds})
    return {"embedding": PartitionSpec("prefix_length", "prompt_embed"), "mlp": mlp}

  def export(self, trainable: Trainable, config: T5Config) -> Trainable:
    """Folds the reparametrisation MLP into plain prefixes (the trainable tree of `inference_method()`)."""
    del config
    return self.plain_prefixes(trainable)

  def inference_method(self) -> "PrefixTuning":
    return dataclasses.replace(self, reparam=False)
