"""Test-only entry point: `python tests/multihost_worker.py <command> [--flags]` runs the real `xprompt-jax` CLI
with two extra gin-bindable input streams for the reliability and multi-host tests.

  * `recorded_batches`: the normal SeqIO stream (`data.batches`) that appends, for every batch the trainer takes,
    `{"position", "process", "sha256", "targets"}` to `$XPROMPT_TEST_BATCH_LOG.<process index>`, and sleeps
    `$XPROMPT_TEST_BATCH_SLEEP` seconds first (so a test can signal a run mid-training); `$XPROMPT_TEST_POISON=P:R`
    puts a NaN loss weight in row R of batch P (loss weights become float32); with `$XPROMPT_TEST_HOLD=FILE` the
    run waits before batch 2 until FILE exists (a run kept busy while a test does something else). Bind it with
    `--gin.train.batches_fn=@recorded_batches`.
  * `global_batches`: every process builds the same single-stream global batch (as one process reading the whole
    split would) and keeps its own rows `[i * B/n, (i + 1) * B/n)`, recorded like `recorded_batches`. A one-process
    run and an n-process run then train on identical global batches, which makes their losses comparable.
"""
import hashlib
import json
import os
import sys
import time

import gin
import jax
import numpy as np
import seqio


def _digest(batch) -> str:
  h = hashlib.sha256()
  for key in sorted(batch):
    h.update(key.encode())
    h.update(np.ascontiguousarray(batch[key]).tobytes())
  return h.hexdigest()


def _recorded(stream, position: int):
  log = os.environ.get("XPROMPT_TEST_BATCH_LOG")
  pause = float(os.environ.get("XPROMPT_TEST_BATCH_SLEEP", "0"))
  poison = os.environ.get("XPROMPT_TEST_POISON")  # "P:R": a NaN loss weight in row R of the batch at position P.
  hold = os.environ.get("XPROMPT_TEST_HOLD")  # From batch 2 on, wait until this file exists.
  for batch in stream:
    if pause:
      time.sleep(pause)
    while hold and position >= 2 and not os.path.exists(hold):
      time.sleep(0.05)
    if poison:
      batch["decoder_loss_weights"] = batch["decoder_loss_weights"].astype(np.float32)
      at, row = map(int, poison.split(":"))
      if position == at:
        batch["decoder_loss_weights"][row, 0] = np.nan
    if log:
      with open(f"{log}.{jax.process_index()}", "a", encoding="utf-8") as f:
        f.write(json.dumps({"position": position, "process": jax.process_index(), "sha256": _digest(batch),
                            "targets": batch["decoder_target_tokens"][:, :4].tolist()}) + "\n")
    yield batch
    position += 1


@gin.configurable
def recorded_batches(cfg, position=0):
  from xprompt_jax.training import data as data_lib
  return _recorded(data_lib.batches(cfg, position), position)


def _global_stream(cfg, position):
  from xprompt_jax.training import data as data_lib
  task = data_lib.get_task(cfg.mixture_or_task_name)
  ds = task.get_dataset(cfg.task_feature_lengths, split=cfg.split, shuffle=cfg.shuffle, seed=cfg.seed,
                        num_epochs=None, shard_info=None, shuffle_buffer_size=cfg.shuffle_buffer_size)
  ds = seqio.EncDecFeatureConverter(pack=cfg.pack)(ds, cfg.task_feature_lengths)
  ds = ds.batch(cfg.batch_size, drop_remainder=True).skip(position)
  local = data_lib.local_batch_size(cfg.batch_size)
  start = jax.process_index() * local
  for batch in ds.as_numpy_iterator():
    yield {k: v[start:start + local] for k, v in batch.items()}


@gin.configurable
def global_batches(cfg, position=0):
  return _recorded(_global_stream(cfg, position), position)


if __name__ == "__main__":
  from xprompt_jax import cli
  sys.exit(cli.run([sys.argv[0], *sys.argv[1:]]))
