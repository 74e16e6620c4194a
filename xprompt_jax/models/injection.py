"""What a parametrisation gives the frozen T5: the model's only contact with prompt/prefix methods.

`Injection.prompt` is prepended to the *embedded* encoder input (Lester et al. prompt tuning); it covers the
attention mask and the relative positions of the concatenated sequence. The three prefix fields are per-layer
key/value prefixes (Li & Liang prefix tuning) for encoder self-attention, decoder self-attention and decoder
cross-attention: each a pair `(keys, values)` of shape `[num_layers, batch or 1, prefix_len, num_heads, head_dim]`.
Prefix positions are always attended to and carry no relative-position bias (they are position-less memory).
"""
from typing import Optional

import flax
import jax

KV = tuple[jax.Array, jax.Array]


@flax.struct.dataclass
class Injection:
  prompt: Optional[jax.Array] = None  # [P, D] shared by the batch, or [B, P, D] per example.
  encoder_prefix: Optional[KV] = None
  decoder_prefix: Optional[KV] = None
  cross_prefix: Optional[KV] = None

  @property
  def prompt_length(self) -> int:
    return 0 if self.prompt is None else self.prompt.shape[-2]


def layer_prefix(prefix: Optional[KV], layer: int) -> Optional[KV]:
  """The (keys, values) prefix of one layer, or None."""
  if prefix is None:
    return None
  return prefix[0][layer], prefix[1][layer]


def check_injection(injection: Optional[Injection], config, batch_size: int) -> None:
  """Validates shapes against the model config; errors name the field and both shapes."""
  if injection is None:
    return
  if injection.prompt is not None:
    p = injection.prompt
    if p.ndim not in (2, 3) or p.shape[-1] != config.emb_dim or (p.ndim == 3 and p.shape[0] not in (1, batch_size)):
      raise ValueError(f"Injection.prompt has shape {tuple(p.shape)}; expected [P, {config.emb_dim}] or "
                       f"[{batch_size}, P, {config.emb_dim}]")
  for field, layers in (("encoder_prefix", config.num_encoder_layers), ("decoder_prefix", config.num_decoder_layers),
                        ("cross_prefix", config.num_decoder_layers)):
    kv = getattr(injection, field)
    if kv is None:
      continue
    for name, arr in zip(("keys", "values"), kv):
      s = tuple(arr.shape)
      if (len(s) != 5 or s[0] != layers or s[1] not in (1, batch_size) or s[3] != config.num_heads
          or s[4] != config.head_dim):
        raise ValueError(f"Injection.{field} {name} has shape {s}; expected [{layers}, {batch_size} or 1, L, "
                         f"{config.num_heads}, {config.head_dim}] ([layers, batch, prefix_len, heads, head_dim])")
