"""Training input: a SeqIO task or mixture through T5X's encoder-decoder feature converter, as numpy batches.

The stream is deterministic given `seed` (seqio shuffles with it), so a resumed run rebuilds the same stream and
skips the `position` batches it already consumed: no example is skipped or repeated across a restart. In a
multi-host run each process reads its own shard (`seqio.ShardInfo`) and yields its slice of the global batch.
"""
import dataclasses
from typing import Iterator, Optional

import gin
import jax
import numpy as np
import seqio
import tensorflow as tf


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DataConfig:
  """What to train on. `inputs_length`/`targets_length` are the task feature lengths (before the prompt)."""
  mixture_or_task_name: str = gin.REQUIRED
  split: str = "train"
  inputs_length: int = 512
  targets_length: int = 16
  batch_size: int = 32  # Global batch size (all hosts together).
  shuffle: bool = True
  seed: int = 0
  pack: bool = False
  use_cached: bool = False
  shuffle_buffer_size: Optional[int] = 10_000
  prefetch: int = 4

  def __post_init__(self):
    for name in ("inputs_length", "targets_length", "batch_size"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"DataConfig.{name}={value!r} must be a positive int")

  @property
  def task_feature_lengths(self) -> dict[str, int]:
    return {"inputs": self.inputs_length, "targets": self.targets_length}


def get_task(name: str):
  """The registered task or mixture; an unknown name lists the closest registered ones."""
  from xprompt_jax.tasks import registry_utils  # Importing the package registers the tasks.
  return registry_utils.get_task_or_mixture(name)


def check_vocabulary(cfg: DataConfig, model_vocab_size: int) -> None:
  """Raises when a feature's vocabulary has more ids than the model embeds (they would be silently clipped)."""
  task = get_task(cfg.mixture_or_task_name)
  for feature_name, feature in task.output_features.items():
    size = getattr(feature.vocabulary, "vocab_size", None)
    if size is not None and size > model_vocab_size:
      raise ValueError(f"{cfg.mixture_or_task_name}: the {feature_name!r} vocabulary has {size} ids but the model "
                       f"embeds only T5Config.vocab_size={model_vocab_size}; use the checkpoint's vocab_size "
                       f"(>= {size})")


def local_batch_size(global_batch: int) -> int:
  n = jax.process_count()
  if global_batch % n:
    raise ValueError(f"DataConfig.batch_size={global_batch} is not divisible by the {n} processes")
  return global_batch // n


def dataset(cfg: DataConfig, position: int = 0, num_epochs: Optional[int] = None) -> tf.data.Dataset:
  """Batched feature-converted dataset of this process, starting after `position` global batches."""
  task = get_task(cfg.mixture_or_task_name)
  shard = seqio.ShardInfo(index=jax.process_index(), num_shards=jax.process_count())
  kwargs = {}
  if not isinstance(task, seqio.Mixture):  # A mixture shuffles each sub-task with its own buffer; it takes none.
    kwargs["shuffle_buffer_size"] = cfg.shuffle_buffer_size
  try:
    ds = task.get_dataset(cfg.task_feature_lengths, split=cfg.split, shuffle=cfg.shuffle, seed=cfg.seed,
                          num_epochs=num_epochs, shard_info=shard, use_cached=cfg.use_cached, **kwargs)
  except tf.errors.InvalidArgumentError as e:
    if "buffer_size must be greater than zero" in str(e):  # Sources shuffle their rows with a buffer of len(rows).
      raise ValueError(f"{cfg.mixture_or_task_name}[{cfg.split}] is empty: no examples to train on") from e
    raise
  converter = seqio.EncDecFeatureConverter(pack=cfg.pack)
  ds = converter(ds, cfg.task_feature_lengths)
  ds = ds.batch(local_batch_size(cfg.batch_size), drop_remainder=True)
  if position:
    ds = ds.skip(position)
  return ds.prefetch(cfg.prefetch)


def batches(cfg: DataConfig, position: int = 0) -> Iterator[dict[str, np.ndarray]]:
  """Endless numpy batches (the train split repeats) starting after `position` batches."""
  return dataset(cfg, position).as_numpy_iterator()


def describe(cfg: DataConfig) -> str:
  """Where the data comes from (local files under ../shared or TFDS), for the run's log."""
  from xprompt_jax.tasks import sources
  get_task(cfg.mixture_or_task_name)  # A clear error for an unknown name.
  return sources.describe_source(cfg.mixture_or_task_name, cfg.split)
