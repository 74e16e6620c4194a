"""Multi-host training: two CPU processes on localhost (`--multihost --coordinator_address ...`, gloo collectives,
one device each) train the tiny config and match one process with the same global batch.

Input: with seqio's ShardInfo each host reads its own shard, so an n-host stream is a different (equally valid)
stream than the one-host stream. To compare exactly, both runs bind `train.batches_fn=@global_batches`
(tests/multihost_worker.py): every process builds the single-stream global batch and keeps its rows
`[i * B/n, (i + 1) * B/n)`, so the global batches are identical and only the data-parallel reduction differs.
The two-process run stops at step 2 and is relaunched, so its checkpoint is written and restored by both hosts.
The per-host `seqio.ShardInfo` path of `data.dataset` is checked separately: two hosts read disjoint examples.
"""
import json
import pathlib
import subprocess
import sys

import numpy as np
from cli_helpers import tiny_flags
import numerics
import pytest
import xla_env

WORKER = str(pathlib.Path(__file__).with_name("multihost_worker.py"))
STEPS = 4
TINY = tiny_flags(STEPS, 1, 2, "--gin.TrainConfig.progress_bar=False", "--gin.train.batches_fn=@global_batches")


def _env(batch_log):
  env = xla_env.env(1)
  env.update(JAX_PLATFORMS="cpu",
             JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo", XPROMPT_TEST_BATCH_LOG=str(batch_log))
  return env


def _train(model_dir, batch_log, *extra):
  return subprocess.Popen([sys.executable, WORKER, "train", *TINY, *extra, f"--model_dir={model_dir}"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(batch_log))


def _final_state(model_dir, like=None):
  """(state, meta, steps); `like` (a restored state) gives the tree and this process's sharding, which a
  checkpoint written by two processes needs."""
  from xprompt_jax.training import checkpointing
  with checkpointing.TrainCheckpointer(model_dir, read_only=True) as ckpt:
    steps = ckpt.all_steps()
    state, meta = ckpt.restore(steps[-1], abstract_state=like)
  return state, meta, steps


@pytest.mark.slow
@pytest.mark.usefixtures("shared")
def test_two_processes_match_one(tmp_path):

  def two_processes(*extra):
    port = xla_env.free_port()
    return [_train(tmp_path / "multi", tmp_path / "multi_batches", "--multihost",
                   f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}", *extra)
            for i in range(2)]

  single = _train(tmp_path / "single", tmp_path / "single_batches")
  # Two hosts stop at step 2 (written by both), then a second launch restores it on both hosts and goes on to 4.
  first = [p.communicate(timeout=900)[0] for p in two_processes("--gin.TrainConfig.num_train_steps=2")]
  multi = two_processes()
  outs = [p.communicate(timeout=900)[0] for p in (*multi, single)]
  for p, out in zip((*multi, single), outs):
    assert p.returncode == 0, out[-4000:]
  assert "done: step 2" in first[0] and "resumed from step 2" in outs[0], (first[0] + outs[0])[-4000:]
  # Logging and printing from process 0 only.
  assert "method: prompt" in outs[0] and "method: prompt" not in outs[1]
  assert f"done: step {STEPS}" in outs[0]

  single_batches = [json.loads(l) for l in open(tmp_path / "single_batches.0")]
  for pid in range(2):
    rows = [json.loads(l) for l in open(tmp_path / f"multi_batches.{pid}")]
    assert [r["position"] for r in rows] == list(range(STEPS))
    assert [r["targets"] for r in rows] == [b["targets"][pid * 2:(pid + 1) * 2] for b in single_batches]

  multi_lines = [json.loads(l) for l in open(tmp_path / "multi" / "metrics.jsonl")]
  single_lines = [json.loads(l) for l in open(tmp_path / "single" / "metrics.jsonl")]
  assert [l["step"] for l in multi_lines if l["kind"] == "train"] == list(range(1, STEPS + 1))  # Written once.
  for key in ("loss", "accuracy", "grad_norm"):
    numerics.assert_close([l[key] for l in multi_lines if l["kind"] == "train"],
                          [l[key] for l in single_lines if l["kind"] == "train"], roundings=numerics.TRAJECTORY,
                          err_msg=key)

  single_state, _, _ = _final_state(tmp_path / "single")
  multi_state, multi_meta, multi_steps = _final_state(tmp_path / "multi", like=single_state)
  assert multi_steps == [2, 4] and multi_meta["process_count"] == 2
  # Adafactor normalises each update by its RMS (lr 0.3), so reduction-order differences in the gradients carry
  # into the parameters at the scale of the updates over the run's steps: a trajectory, not one pass.
  numerics.assert_close(np.asarray(multi_state["trainable"]["prompt"]),
                        np.asarray(single_state["trainable"]["prompt"]), roundings=numerics.TRAJECTORY)


@pytest.mark.usefixtures("shared")
def test_each_host_reads_its_own_shard(monkeypatch):
  """`data.dataset` on host i of 2 reads seqio shard i: local batches of B/2 rows, disjoint across hosts."""
  import jax
  from xprompt_jax.training import data as data_lib
  cfg = data_lib.DataConfig("super_glue_rte_v102", inputs_length=32, targets_length=8, batch_size=4, shuffle=False)
  rows = []
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  for host in range(2):
    monkeypatch.setattr(jax, "process_index", lambda host=host: host)
    batches = list(data_lib.dataset(cfg, num_epochs=1).take(20).as_numpy_iterator())
    assert all(b["encoder_input_tokens"].shape == (2, 32) for b in batches)
    rows.append({tuple(r) for b in batches for r in b["encoder_input_tokens"]})
  assert len(rows[0]) > 30 and len(rows[1]) > 30 and not rows[0] & rows[1]


@pytest.mark.usefixtures("shared")
def test_sigterm_on_one_host_stops_every_host_at_the_same_step(tmp_path):
  """Host 1 is signalled alone, host 0 only once it has saved with host 1 and is exiting (a `stop` or a preemption
  reaches hosts at different steps):
  the hosts agree on one step in a collective, both save it and exit with the preempted status (75, which the
  launcher's `supervise` resumes); neither is left waiting in a collective."""
  import os
  import signal
  import threading
  import time
  port = xla_env.free_port()
  flags = tiny_flags(400, 1, 1000, "--gin.TrainConfig.progress_bar=False", "--gin.train.batches_fn=@recorded_batches")
  env = _env(tmp_path / "batches")
  env["XPROMPT_TEST_BATCH_SLEEP"] = "0.1"
  procs = [subprocess.Popen([sys.executable, WORKER, "train", *flags, f"--model_dir={tmp_path / 'run'}", "--multihost",
                             f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) for i in range(2)]
  log1 = tmp_path / "batches.1"
  deadline = time.time() + 600
  while not (log1.exists() and len(log1.read_text().splitlines()) >= 4):
    assert all(p.poll() is None for p in procs) and time.time() < deadline, procs[0].communicate()[0][-3000:]
    time.sleep(0.1)
  lines = []
  reader = threading.Thread(target=lambda: lines.extend(procs[0].stdout), daemon=True)
  reader.start()
  procs[1].send_signal(signal.SIGTERM)
  # Host 0's own SIGTERM comes late: after it has saved with host 1 and is on its way out (it must still exit 75).
  while procs[0].poll() is None and not any(line.startswith("preempted: saved step") for line in lines):
    assert time.time() < deadline
    time.sleep(0.01)
  if procs[0].poll() is None:
    os.kill(procs[0].pid, signal.SIGTERM)
  reader.join(timeout=300)
  outs = ["".join(lines), procs[1].communicate(timeout=300)[0]]
  procs[0].wait(timeout=300)
  from xprompt_jax import exit_status
  for p, out in zip(procs, outs):
    assert p.returncode == exit_status.PREEMPTED, out[-4000:]
  saved = [int(line.split()[3]) for line in outs[0].splitlines() if line.startswith("preempted: saved step")]
  assert len(saved) == 1 and 4 <= saved[0] < 400, outs[0][-3000:]
  from xprompt_jax.training import checkpointing
  with checkpointing.TrainCheckpointer(str(tmp_path / "run"), read_only=True) as ckpt:
    assert ckpt.all_steps() == saved and ckpt.read_meta()["process_count"] == 2
  taken = [len((tmp_path / f"batches.{i}").read_text().splitlines()) for i in range(2)]
  assert taken[0] == taken[1], taken  # Both hosts trained the same steps.
