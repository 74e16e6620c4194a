"""XLA_FLAGS for the suite and the processes it starts, keeping the flags the person running it set.

XLA reads `XLA_FLAGS` token by token and stops at the first token without leading dashes: in
`--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1 --xla_force_host_platform_device_count=8`
the device count is never read. So every flag is put before such tokens, the device count first. Subprocesses
that want their own device count (one device, as on a user's machine; four for a restore test) get it the same
way, so a run with another thread setting (README, "Running the tests") reaches them too.
"""
import os
from typing import Dict, Optional

DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"
TEST_DEVICES = 8


def flags(device_count: Optional[int] = None, current: Optional[str] = None) -> str:
  """`current` (default $XLA_FLAGS) with its device count replaced by `device_count` (None: no device count)."""
  tokens = (os.environ.get("XLA_FLAGS", "") if current is None else current).split()
  dashed = [t for t in tokens if t.startswith("-") and not t.startswith(DEVICE_COUNT_FLAG)]
  bare = [t for t in tokens if not t.startswith("-")]
  head = [f"{DEVICE_COUNT_FLAG}={device_count}"] if device_count is not None else []
  return " ".join(head + dashed + bare)


CACHE_VAR = "XPROMPT_TEST_XLA_CACHE"  # Set by tests/conftest.py: the run's compilation cache for its subprocesses.


def env(device_count: Optional[int] = None, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
  """A copy of `base` (default os.environ) whose XLA_FLAGS ask for `device_count` devices (None: XLA's one), and
  which, when the suite made one, points jax's persistent compilation cache at the run's cache folder."""
  out = dict(os.environ if base is None else base)
  if out.get(CACHE_VAR) and "JAX_COMPILATION_CACHE_DIR" not in out:
    out.update(JAX_COMPILATION_CACHE_DIR=out[CACHE_VAR], JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  out["XLA_FLAGS"] = flags(device_count, out.get("XLA_FLAGS", ""))
  if not out["XLA_FLAGS"]:
    del out["XLA_FLAGS"]
  return out


def free_port() -> int:
  """A TCP port on localhost that nothing listens on now (the coordinator of a multi-process test job)."""
  import socket
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]
