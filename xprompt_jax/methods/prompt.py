"""Prompt tuning (Lester et al., 2021): a soft prompt `[L, D]` prepended to the embedded encoder input.

The trainable tree is `{"prompt": [L, D]}`. `initial_prompt` implements the paper's initialisations and is shared
with MPT (its shared prompt P*) and XPrompt:

* `random_uniform`: U(-init_scale, init_scale), 0.5 by default.
* `sampled_vocab`: rows of the frozen embedding table for distinct ids drawn without replacement from the
  `sampled_vocab_size` (5,000) most frequent tokens. T5's SentencePiece ids are ordered by frequency after the
  special ids, so the range is [first_vocab_id, 5000): `first_vocab_id=3` skips pad (0), eos (1) and unk (2),
  whose embeddings carry no lexical meaning (id 3 is the word-boundary piece "▁", a real and frequent token);
  `first_vocab_id=0` reproduces the reference initialiser, which draws from the first 5,000 rows as they are.
* `class_labels`: row i < len(class_labels) is the mean embedding of label i's sub-tokens (labels are strings
  tokenised with `vocabulary`, default `xprompt_jax.tasks.vocab.get_default_vocabulary()`, or id lists); the
  remaining rows are sampled vocab.
* `from_text`: the embedding rows of a tokenised text (string or id list), cycled/truncated to L rows.
* `from_file`: a `.npy` array of shape [L, D].
"""
import dataclasses
import pathlib
from typing import Any, Optional, Sequence, Union

import gin
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from xprompt_jax.methods.base import Method, Trainable, embedding_table
from xprompt_jax.models.config import T5Config
from xprompt_jax.models.injection import Injection

PROMPT_INITS = ("random_uniform", "sampled_vocab", "class_labels", "from_text", "from_file")
PROMPT_AXES = PartitionSpec("prompt_length", "prompt_embed")

TokensOrText = Union[str, Sequence[int]]


def _tokenize(item: TokensOrText, vocabulary, what: str) -> np.ndarray:
  if isinstance(item, str):
    if vocabulary is None:
      from xprompt_jax.tasks.vocab import get_default_vocabulary  # Local: only string labels need the vocab.
      vocabulary = get_default_vocabulary()
    ids = np.asarray(vocabulary.encode(item), np.int64)
  else:
    ids = np.asarray(list(item), np.int64)
  if ids.ndim != 1 or ids.size == 0:
    raise ValueError(f"{what} {item!r} gives no token ids")
  return ids


def _check_ids(ids: np.ndarray, vocab_size: int, what: str) -> None:
  bad = ids[(ids < 0) | (ids >= vocab_size)]
  if bad.size:
    raise ValueError(f"{what}: token ids {bad.tolist()} are outside the embedding table's {vocab_size} rows")


def sample_vocab_ids(rng: jax.Array, num: int, vocab_size: int, sampled_vocab_size: int = 5000,
                     first_vocab_id: int = 3) -> jax.Array:
  """`num` distinct ids from [first_vocab_id, min(sampled_vocab_size, vocab_size))."""
  high = min(sampled_vocab_size, vocab_size)
  if num > high - first_vocab_id:
    raise ValueError(f"sampled_vocab: cannot draw {num} distinct ids from [{first_vocab_id}, {high}) "
                     f"(sampled_vocab_size={sampled_vocab_size}, vocab_size={vocab_size})")
  if num == 0:
    return jnp.zeros((0,), jnp.int32)
  return first_vocab_id + jax.random.choice(rng, high - first_vocab_id, (num,), replace=False)


def load_prompt_file(path: Union[str, pathlib.Path], length: int, emb_dim: int) -> np.ndarray:
  """A `.npy` prompt, checked to be [length, emb_dim]."""
  try:
    array = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise ValueError(f"from_file: cannot read a .npy prompt from {str(path)!r}: {e}") from e
  if array.shape != (length, emb_dim):
    raise ValueError(f"from_file: {str(path)!r} holds an array of shape {array.shape}; expected "
                     f"[{length}, {emb_dim}] ([prompt length, emb_dim])")
  return array


def initial_prompt(rng: jax.Array, embedding: jax.Array, length: int, init: str, *, init_scale: float = 0.5,
                   sampled_vocab_size: int = 5000, first_vocab_id: int = 3,
                   class_labels: Sequence[TokensOrText] = (), text: Optional[TokensOrText] = None,
                   path: Optional[str] = None, vocabulary: Any = None, dtype=jnp.float32) -> jax.Array:
  """A `[length, emb_dim]` soft prompt initialised by `init` (one of `PROMPT_INITS`) from the frozen embedding."""
  vocab_size, emb_dim = embedding.shape
  if init == "random_uniform":
    return jax.random.uniform(rng, (length, emb_dim), dtype, -init_scale, init_scale)
  if init == "sampled_vocab":
    ids = sample_vocab_ids(rng, length, vocab_size, sampled_vocab_size, first_vocab_id)
    return jnp.take(embedding, ids, axis=0).astype(dtype)
  if init == "class_labels":
    if not class_labels:
      raise ValueError("class_labels init needs class_labels (label strings or token-id lists)")
    if len(class_labels) > length:
      raise ValueError(f"class_labels init: {len(class_labels)} labels do not fit a prompt of length {length}")
    rows = []
    for label in class_labels:
      ids = _tokenize(label, vocabulary, "class label")
      _check_ids(ids, vocab_size, f"class label {label!r}")
      rows.append(jnp.mean(jnp.take(embedding, ids, axis=0), axis=0))
    rest = sample_vocab_ids(rng, length - len(rows), vocab_size, sampled_vocab_size, first_vocab_id)
    return jnp.concatenate([jnp.stack(rows), jnp.take(embedding, rest, axis=0)]).astype(dtype)
  if init == "from_text":
    if text is None:
      raise ValueError("from_text init needs text (a string or a token-id list)")
    ids = _tokenize(text, vocabulary, "from_text text")
    _check_ids(ids, vocab_size, f"from_text text {text!r}")
    return jnp.take(embedding, np.resize(ids, length), axis=0).astype(dtype)
  if init == "from_file":
    if path is None:
      raise ValueError("from_file init needs path (a .npy file of shape [L, D])")
    return jnp.asarray(load_prompt_file(path, length, emb_dim), dtype)
  raise ValueError(f"unknown prompt init {init!r}; known: {', '.join(PROMPT_INITS)}")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class PromptTuning(Method):
  """Lester et al. prompt tuning; fields are the `initial_prompt` arguments (see the module docstring)."""

  length: int = 100
  prompt_init: str = "sampled_vocab"  # One of PROMPT_INITS (not `init`: that is the Method.init function).
  init_scale: float = 0.5
  sampled_vocab_size: int = 5000
  first_vocab_id: int = 3
  class_labels: tuple = ()
  text: Optional[Any] = None
  path: Optional[str] = None
  vocabulary: Any = None

  name = "prompt"

  def __post_init__(self):
    if not isinstance(self.length, int) or self.length <= 0:
      raise ValueError(f"{type(self).__name__}.length must be a positive int, got {self.length!r}")
    if self.prompt_init not in PROMPT_INITS:
      raise ValueError(f"{type(self).__name__}.prompt_init={self.prompt_init!r}; known: {', '.join(PROMPT_INITS)}")
    object.__setattr__(self, "class_labels", tuple(
        label if isinstance(label, str) else tuple(label) for label in self.class_labels))
    if self.text is not None and not isinstance(self.text, str):
      object.__setattr__(self, "text", tuple(self.text))

  @property
  def prompt_length(self) -> int:
    return self.length

  def init_prompt(self, rng: jax.Array, frozen_params, config: T5Config) -> jax.Array:
    embedding = embedding_table(frozen_params)
    if embedding.shape[1] != config.emb_dim:
      raise ValueError(f"frozen token_embedder/embedding has shape {tuple(embedding.shape)}; the config's emb_dim "
                       f"is {config.emb_dim}")
    return initial_prompt(rng, embedding, self.length, self.prompt_init, init_scale=self.init_scale,
                          sampled_vocab_size=self.sampled_vocab_size, first_vocab_id=self.first_vocab_id,
                          class_labels=self.class_labels, text=self.text, path=self.path,
                          vocabulary=self.vocabulary, dtype=jnp.dtype(config.param_dtype))

  def init(self, rng: jax.Array, frozen_params, config: T5Config) -> Trainable:
    return {"prompt": self.init_prompt(rng, frozen_params, config)}

  def inject(self, trainable: Trainable, batch: dict, config: T5Config) -> Injection:
    del batch, config
    return Injection(prompt=trainable["prompt"])

  def logical_axes(self, config: T5Config):
    del config
    return {"prompt": PROMPT_AXES}
