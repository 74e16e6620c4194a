"""Shared fixtures: the `../shared` folder (tests needing it skip with a reason when it is absent)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# libtpu (the [test] extra, for ahead-of-time TPU compiles) would otherwise make every JAX process probe for a TPU;
# the AOT tests build their TPU topologies explicitly and work with this set. Subprocesses inherit it.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Eight simulated CPU devices so mesh tests (8x1, 2x4, 1x1) run in-process; jit still defaults to device 0.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

import pytest  # noqa: E402

from xprompt_jax import paths  # noqa: E402


@pytest.fixture(scope="session")
def shared():
  d = paths.shared_dir()
  if d is None:
    pytest.skip("../shared (or $XPROMPT_SHARED) is absent: real data/checkpoint fixtures unavailable")
  return d


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: longer than a few seconds; deselect with -m 'not slow'")
