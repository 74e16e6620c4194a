"""The interface every parametrisation (prompt, prefix, MPT, XPrompt) implements, plus parameter counting.

A method is a frozen dataclass that gin binds. It owns the *trainable* tree (a nested dict of arrays, separate
from the frozen T5 params) and turns it into the model's only input from a method, an `Injection`:

    trainable = method.init(rng, frozen_params, config)          # may read frozen["token_embedder"]["embedding"]
    logits = T5(config).apply({"params": frozen}, enc, dec, injection=method.inject(trainable, batch, config))

`logical_axes(config)` mirrors the trainable tree with `PartitionSpec`s of logical axis names that
`xprompt_jax.training.partitioning` maps to the mesh; `param_labels(trainable)` (optional) gives each leaf a
label for per-part learning rates; `export` returns the inference form of the trainable tree (`inference_method()`
is the method whose `inject`/`logical_axes` describe that form).
"""
import abc
import math
from typing import Any, Optional

import jax
import numpy as np

from xprompt_jax.models.config import T5Config
from xprompt_jax.models.injection import Injection

Trainable = dict[str, Any]


def count_params(tree) -> int:
  """Number of scalars in a tree of arrays or `jax.ShapeDtypeStruct`s (nothing is allocated)."""
  return sum(math.prod(np.shape(leaf)) for leaf in jax.tree_util.tree_leaves(tree))


def embedding_table(frozen_params) -> jax.Array:
  """The frozen token embedding `[vocab, emb_dim]` (T5X name `token_embedder/embedding`)."""
  try:
    return frozen_params["token_embedder"]["embedding"]
  except (KeyError, TypeError) as e:
    keys = sorted(frozen_params) if hasattr(frozen_params, "keys") else type(frozen_params).__name__
    raise ValueError(f"frozen params have no token_embedder/embedding (top-level keys: {keys}); pass the T5X-named "
                     "parameter tree of the frozen model") from e


class Method(abc.ABC):
  """Base class of the parametrisations; subclasses are `@gin.configurable` frozen dataclasses."""

  name: str = "method"

  @property
  def prompt_length(self) -> int:
    """Encoder positions the method prepends to the inputs (0 for prefix tuning)."""
    return 0

  @abc.abstractmethod
  def init(self, rng: jax.Array, frozen_params, config: T5Config) -> Trainable:
    """The initial trainable tree."""

  @abc.abstractmethod
  def inject(self, trainable: Trainable, batch: dict, config: T5Config) -> Injection:
    """The `Injection` for one batch (pure and jit-friendly)."""

  @abc.abstractmethod
  def logical_axes(self, config: T5Config):
    """A tree like the trainable one holding each leaf's logical axis names as a `PartitionSpec`."""

  def num_params(self, trainable: Trainable) -> int:
    return count_params(trainable)

  def param_labels(self, trainable: Trainable) -> Optional[Any]:
    """Per-leaf labels for per-part learning rates, or None when every leaf shares one learning rate."""
    del trainable
    return None

  def export(self, trainable: Trainable, config: T5Config) -> Trainable:
    """The inference form of the trainable tree (identity unless a method reparametrises during training)."""
    del config
    return trainable

  def inference_method(self) -> "Method":
    """The method whose `inject` and `logical_axes` describe `export`'s output."""
    return self

  def abstract_trainable(self, config: T5Config, frozen_params=None):
    """The trainable tree as `jax.ShapeDtypeStruct`s, without allocating it (nor the frozen model)."""
    if frozen_params is None:
      from xprompt_jax.models import t5  # Local import: only needed when the caller has no params at hand.
      frozen_params = t5.abstract_params(config)
    return jax.eval_shape(lambda: self.init(jax.random.PRNGKey(0), frozen_params, config))

  def check_lengths(self, encoder_length: int, inputs_length: int) -> None:
    """Raises when the prompt plus the task inputs do not fit the encoder length."""
    if self.prompt_length + inputs_length > encoder_length:
      raise ValueError(f"{type(self).__name__}: prompt length {self.prompt_length} + inputs length {inputs_length} "
                       f"= {self.prompt_length + inputs_length} exceeds the encoder length {encoder_length}; "
                       "shorten the inputs feature length or the prompt")
