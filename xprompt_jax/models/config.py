"""T5 architecture configuration: one frozen dataclass that gin binds (see gin/models/*.gin).

T5 1.1 / LM-adapted: gated-GELU MLP (`mlp_activations=("gelu", "linear")`), untied `logits_dense`, no logit scaling.
T5 1.0: ReLU MLP (`mlp_activations=("relu",)`), logits through the tied embedding scaled by `emb_dim**-0.5`
(`logits_via_embedding=True`).
"""
import dataclasses

import gin
import jax.numpy as jnp

_ACTIVATIONS = ("relu", "gelu", "gelu_exact", "silu", "linear")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class T5Config:
  """Hyper-parameters of the encoder-decoder. `head_dim` is independent of `emb_dim // num_heads`."""

  vocab_size: int = 32128
  emb_dim: int = 512
  num_heads: int = 6
  head_dim: int = 64
  mlp_dim: int = 1024
  num_encoder_layers: int = 8
  num_decoder_layers: int = 8
  mlp_activations: tuple[str, ...] = ("gelu", "linear")
  logits_via_embedding: bool = False
  dropout_rate: float = 0.0
  dtype: str = "float32"  # activation dtype ("bfloat16" on TPU); parameters always live in `param_dtype`.
  param_dtype: str = "float32"
  relpos_num_buckets: int = 32
  relpos_max_distance: int = 128
  layer_norm_eps: float = 1e-6
  scan_layers: bool = False  # nn.scan over the layer stack (params gain a leading 'layers' axis).
  remat_policy: str = "none"  # "none" | "full" | "dots" | "dots_with_no_batch_dims"
  name: str = "t5"

  def __post_init__(self):
    for field in ("vocab_size", "emb_dim", "num_heads", "head_dim", "mlp_dim", "num_encoder_layers",
                  "num_decoder_layers", "relpos_num_buckets", "relpos_max_distance"):
      value = getattr(self, field)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"T5Config.{field} must be a positive int, got {value!r}")
    object.__setattr__(self, "mlp_activations", tuple(self.mlp_activations))
    bad = [a for a in self.mlp_activations if a not in _ACTIVATIONS]
    if bad or not self.mlp_activations:
      raise ValueError(f"T5Config.mlp_activations={self.mlp_activations!r}: each must be one of {_ACTIVATIONS}")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"T5Config.dropout_rate must be in [0, 1), got {self.dropout_rate}")
    if self.remat_policy not in ("none", "full", "dots", "dots_with_no_batch_dims"):
      raise ValueError(f"T5Config.remat_policy={self.remat_policy!r} is not one of none/full/dots/"
                       "dots_with_no_batch_dims")
    jnp.dtype(self.dtype), jnp.dtype(self.param_dtype)  # Fail early on a misspelt dtype.

  @property
  def inner_dim(self) -> int:
    """heads × head_dim: the width of the joined query/key/value projections."""
    return self.num_heads * self.head_dim

  @property
  def is_gated(self) -> bool:
    return len(self.mlp_activations) > 1

  @property
  def activation_dtype(self):
    return jnp.dtype(self.dtype)

  def replace(self, **kwargs) -> "T5Config":
    return dataclasses.replace(self, **kwargs)

  def num_params(self) -> int:
    """Number of parameters of the frozen model (for reporting and parameter-count tables)."""
    d, inner, mlp = self.emb_dim, self.inner_dim, self.mlp_dim
    attn = 4 * d * inner
    mlp_p = len(self.mlp_activations) * d * mlp + mlp * d
    enc = self.num_encoder_layers * (attn + mlp_p + 2 * d) + d + self.num_heads * self.relpos_num_buckets
    dec = self.num_decoder_layers * (2 * attn + mlp_p + 3 * d) + d + self.num_heads * self.relpos_num_buckets
    logits = 0 if self.logits_via_embedding else d * self.vocab_size
    return self.vocab_size * d + enc + dec + logits


# Published sizes (T5 1.1 / LM-adapted; T5 1.0). Gin files under gin/models/ bind the same numbers.
T5_1_1 = dict(mlp_activations=("gelu", "linear"), logits_via_embedding=False)
T5_1_0 = dict(mlp_activations=("relu",), logits_via_embedding=True)

PRESETS = {
    "t5_1_1_tiny": T5Config(emb_dim=8, num_heads=4, head_dim=3, mlp_dim=16, num_encoder_layers=2,
                            num_decoder_layers=2, **T5_1_1, name="t5_1_1_tiny"),
    "t5_1_1_small": T5Config(emb_dim=512, num_heads=6, head_dim=64, mlp_dim=1024, num_encoder_layers=8,
                             num_decoder_layers=8, **T5_1_1, name="t5_1_1_small"),
    "t5_1_1_base": T5Config(emb_dim=768, num_heads=12, head_dim=64, mlp_dim=2048, num_encoder_layers=12,
                            num_decoder_layers=12, **T5_1_1, name="t5_1_1_base"),
    "t5_1_1_large": T5Config(emb_dim=1024, num_heads=16, head_dim=64, mlp_dim=2816, num_encoder_layers=24,
                             num_decoder_layers=24, **T5_1_1, name="t5_1_1_large"),
    "t5_1_1_xl": T5Config(emb_dim=2048, num_heads=32, head_dim=64, mlp_dim=5120, num_encoder_layers=24,
                          num_decoder_layers=24, **T5_1_1, name="t5_1_1_xl"),
    "t5_1_1_xxl": T5Config(emb_dim=4096, num_heads=64, head_dim=64, mlp_dim=10240, num_encoder_layers=24,
                           num_decoder_layers=24, **T5_1_1, name="t5_1_1_xxl"),
    "t5_1_0_small": T5Config(emb_dim=512, num_heads=8, head_dim=64, mlp_dim=2048, num_encoder_layers=6,
                             num_decoder_layers=6, **T5_1_0, name="t5_1_0_small"),
    "t5_1_0_base": T5Config(emb_dim=768, num_heads=12, head_dim=64, mlp_dim=3072, num_encoder_layers=12,
                            num_decoder_layers=12, **T5_1_0, name="t5_1_0_base"),
    "t5_1_0_large": T5Config(emb_dim=1024, num_heads=16, head_dim=64, mlp_dim=4096, num_encoder_layers=24,
                             num_decoder_layers=24, **T5_1_0, name="t5_1_0_large"),
}
