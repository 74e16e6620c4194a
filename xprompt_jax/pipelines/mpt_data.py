"""MPT's input streams: multitask batches with stochastic task sampling, and few-shot pools.

Source training (Wang et al. 2023, Sec. 3.2) mixes the source tasks examples-proportionally and, for every batch,
first draws a number of tasks K uniformly from [2, k] (k = number of tasks), then K distinct tasks (weighted by
their mixing rates), and fills the batch from those tasks only (every drawn task gets at least one example, the
rest is spread by the renormalised rates). `SamplingConfig(stochastic=False)` is the "no task sampling" ablation:
each example is drawn from the whole mixture by its rate.

Every batch carries `task_id` ([B] int32, the task's index in the given task list): seqio's feature converters drop
unknown features, so the stream is built here from one feature-converted seqio dataset per task. The task plan of
step s depends only on (seed, s), so the stream is deterministic in `position`: a resumed run replays the plans of
the steps already taken to know how many examples each task consumed and skips exactly those.

Few-shot target adaptation (`few_shot_pool`) draws k examples per class (the class is the target token sequence),
or k in all, from a task's training split with a seed; `pool_batches` then samples batches from that pool, keyed on
the step.
"""
import dataclasses
import functools
import itertools
from typing import Callable, Iterator, Optional, Sequence

import gin
import jax
import numpy as np
import seqio

from xprompt_jax.training import data as data_lib

Batch = dict[str, np.ndarray]


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """Per-step task sampling. `max_tasks=None` means all tasks (the paper's k)."""
  min_tasks: int = 2
  max_tasks: Optional[int] = None
  stochastic: bool = True  # False: the "no task sampling" ablation (plain examples-proportional mixing).
  seed: int = 0

  def __post_init__(self):
    if not isinstance(self.min_tasks, int) or self.min_tasks < 1:
      raise ValueError(f"SamplingConfig.min_tasks must be an int >= 1, got {self.min_tasks!r}")
    if self.max_tasks is not None and (not isinstance(self.max_tasks, int) or self.max_tasks < self.min_tasks):
      raise ValueError(f"SamplingConfig.max_tasks must be None or an int >= min_tasks ({self.min_tasks}), got "
                       f"{self.max_tasks!r}")


def task_sizes(task_names: Sequence[str], split: str = "train", cap: Optional[int] = None) -> np.ndarray:
  """Each task's number of `split` examples, capped at `cap` (T5's 2**19 default, `mixture_cap`)."""
  from xprompt_jax.tasks import mixtures
  cap = cap or mixtures.mixture_cap()
  sizes = []
  for name in task_names:
    n = data_lib.get_task(name).num_input_examples(split)
    if not n:
      raise ValueError(f"examples-proportional mixing needs the size of {name!r}[{split}], which is unknown "
                       "(no local copy and no TFDS metadata); give explicit rates (and steps) instead")
    sizes.append(min(int(n), cap))
  return np.asarray(sizes, np.int64)


def examples_proportional_rates(task_names: Sequence[str], split: str = "train",
                                cap: Optional[int] = None) -> np.ndarray:
  """Normalised mixing rates proportional to the capped task sizes."""
  sizes = task_sizes(task_names, split, cap).astype(np.float64)
  return sizes / sizes.sum()


def check_rates(rates, num_tasks: int) -> np.ndarray:
  rates = np.asarray(rates, np.float64)
  if rates.shape != (num_tasks,) or not np.all(rates > 0) or not np.all(np.isfinite(rates)):
    raise ValueError(f"task rates must be {num_tasks} positive finite numbers (one per task), got {rates.tolist()}")
  return rates / rates.sum()


def draw_task_ids(rates, step: int, batch_size: int, cfg: SamplingConfig) -> np.ndarray:
  """The [batch_size] task ids of step `step` (a pure function of the rates, the step and `cfg.seed`)."""
  rates = check_rates(rates, len(rates))
  rng = np.random.default_rng([cfg.seed, step])
  num_tasks = len(rates)
  if not cfg.stochastic or num_tasks == 1:
    return np.sort(rng.choice(num_tasks, size=batch_size, p=rates)).astype(np.int32)
  high = num_tasks if cfg.max_tasks is None else min(cfg.max_tasks, num_tasks)
  low = min(cfg.min_tasks, high)
  k = int(rng.integers(low, high + 1))
  if batch_size < k:
    raise ValueError(f"task sampling drew K={k} tasks but the batch holds only {batch_size} examples; use a "
                     f"batch size >= {high} or bind SamplingConfig.max_tasks <= {batch_size}")
  chosen = rng.choice(num_tasks, size=k, replace=False, p=rates)
  rest = rng.choice(chosen, size=batch_size - k, p=rates[chosen] / rates[chosen].sum())
  return np.sort(np.concatenate([chosen, rest])).astype(np.int32)


def consumed_counts(rates, position: int, batch_size: int, cfg: SamplingConfig) -> np.ndarray:
  """How many examples of each task the first `position` batches took."""
  counts = np.zeros(len(rates), np.int64)
  for step in range(position):
    counts += np.bincount(draw_task_ids(rates, step, batch_size, cfg), minlength=len(rates))
  return counts


def task_dataset(task_name: str, data_cfg: data_lib.DataConfig, skip: int = 0):
  """One task's endless, shuffled, feature-converted (unbatched, unpacked) training examples after `skip`."""
  if data_cfg.pack:
    raise ValueError("MPT multitask streams do not pack examples (each row needs its own task_id); set "
                     "DataConfig.pack = False")
  task = data_lib.get_task(task_name)
  if not isinstance(task, seqio.Task):
    raise ValueError(f"{task_name!r} is a mixture; MPT streams take a list of tasks (each gets its own task_id)")
  ds = task.get_dataset(data_cfg.task_feature_lengths, split=data_cfg.split, shuffle=data_cfg.shuffle,
                        seed=data_cfg.seed, num_epochs=None, use_cached=data_cfg.use_cached,
                        shuffle_buffer_size=data_cfg.shuffle_buffer_size)
  ds = seqio.EncDecFeatureConverter(pack=False)(ds, data_cfg.task_feature_lengths)
  return ds.skip(skip) if skip else ds


def _local_slice(batch: Batch, global_batch: int) -> Batch:
  local = data_lib.local_batch_size(global_batch)
  start = jax.process_index() * local
  return {k: v[start:start + local] for k, v in batch.items()}


def sampled_batches(task_names: Sequence[str], data_cfg: data_lib.DataConfig, position: int = 0,
                    sampling: SamplingConfig = SamplingConfig(), rates=None) -> Iterator[Batch]:
  """Endless multitask batches with `task_id`, starting after `position` batches (each process its slice)."""
  task_names = list(task_names)
  if not task_names:
    raise ValueError("sampled_batches: no tasks given")
  rates = examples_proportional_rates(task_names, data_cfg.split) if rates is None else check_rates(
      rates, len(task_names))
  counts = consumed_counts(rates, position, data_cfg.batch_size, sampling)
  iterators = [task_dataset(name, data_cfg, int(n)).as_numpy_iterator() for name, n in zip(task_names, counts)]
  for step in itertools.count(position):
    ids = draw_task_ids(rates, step, data_cfg.batch_size, sampling)
    rows = [next(iterators[t]) for t in ids]
    batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    batch["task_id"] = ids
    yield _local_slice(batch, data_cfg.batch_size)


def make_sampled_batches_fn(task_names: Sequence[str], sampling: SamplingConfig = SamplingConfig(),
                            rates=None) -> Callable[[data_lib.DataConfig, int], Iterator[Batch]]:
  """The `batches_fn(data_cfg, position)` hook of `training.loop.train` for a multitask stream."""
  return functools.partial(_call_sampled, tuple(task_names), sampling, None if rates is None else tuple(rates))


def _call_sampled(task_names, sampling, rates, data_cfg, position):
  return sampled_batches(task_names, data_cfg, position, sampling, rates)


def few_shot_pool(task_name: str, data_cfg: data_lib.DataConfig, shots: int, seed: int,
                  per_class: bool = True) -> Batch:
  """`shots` examples per class (fewer when a class has fewer), or with `per_class=False` `shots` examples of the
  whole split drawn uniformly, of `task_name`'s split, chosen with `seed`."""
  if not isinstance(shots, int) or shots <= 0:
    raise ValueError(f"few_shot_pool: shots must be a positive int, got {shots!r}")
  task = data_lib.get_task(task_name)
  ds = task.get_dataset(data_cfg.task_feature_lengths, split=data_cfg.split, shuffle=False, num_epochs=1,
                        use_cached=data_cfg.use_cached)
  ds = seqio.EncDecFeatureConverter(pack=False)(ds, data_cfg.task_feature_lengths)
  rows = list(ds.as_numpy_iterator())
  if not rows:
    raise ValueError(f"few_shot_pool: {task_name!r}[{data_cfg.split}] is empty")
  by_class: dict[bytes, list[int]] = {}
  for i, r in enumerate(rows):
    by_class.setdefault(r["decoder_target_tokens"].tobytes(), []).append(i)
  rng = np.random.default_rng(seed)
  if not per_class:
    return {k: np.stack([rows[i][k] for i in sorted(rng.choice(len(rows), size=min(shots, len(rows)),
                                                               replace=False).tolist())]) for k in rows[0]}
  picked = []
  for key in sorted(by_class):
    members = by_class[key]
    picked.extend(rng.choice(members, size=min(shots, len(members)), replace=False).tolist())
  picked.sort()
  return {k: np.stack([rows[i][k] for i in picked]) for k in rows[0]}


def pool_batches(pool: Batch, batch_size: int, position: int = 0, seed: int = 0,
                 task_id: Optional[int] = None) -> Iterator[Batch]:
  """Endless batches from a small pool: at each step a seeded draw without replacement (every pool row appears
  at least once per batch when the pool is smaller than the batch)."""
  n = len(next(iter(pool.values())))
  for step in itertools.count(position):
    rng = np.random.default_rng([seed, step])
    idx = rng.permutation(np.resize(rng.permutation(n), max(batch_size, n)))[:batch_size]
    batch = {k: v[idx] for k, v in pool.items()}
    if task_id is not None:
      batch["task_id"] = np.full((batch_size,), task_id, np.int32)
    yield _local_slice(batch, batch_size)


def make_pool_batches_fn(pool: Batch, seed: int = 0, task_id: Optional[int] = None):
  """The `batches_fn(data_cfg, position)` hook for few-shot training on `pool`."""
  return lambda data_cfg, position: pool_batches(pool, data_cfg.batch_size, position, seed, task_id)
