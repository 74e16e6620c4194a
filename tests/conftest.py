"""Shared fixtures: the `../shared` folder (tests needing it skip with a reason when it is absent)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

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
