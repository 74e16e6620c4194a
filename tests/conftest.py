"""Shared fixtures: the `../shared` folder (tests needing it skip with a reason when it is absent)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# libtpu (the [test] extra, for ahead-of-time TPU compiles) would otherwise make every JAX process probe for a TPU;
# the AOT tests build their TPU topologies explicitly and work with this set. Subprocesses inherit it.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The suite's tiny programs spend far longer in XLA's compiler than running: with most optimisations off (LLVM at
# -O0; the HLO passes still run) the default suite takes about a third less time. Processes the tests start
# inherit it. .ci/run reruns every tolerance test with the optimisations on (=0), so a result that holds only
# for one optimisation level fails there.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import pytest  # noqa: E402
import xla_env  # noqa: E402

# One persistent XLA compilation cache for the processes the tests start (`xprompt-jax` commands, multi-host
# workers; xla_env.env gives it to them): they compile the same tiny programs again and again, and a hit skips a
# third of a tiny CLI run. The key is the program, compile options, XLA flags and jax version, so a hit is the
# executable a compile would build. The test processes themselves do not use it (their programs rarely repeat, and
# writing entries costs more than it saves). The controller (or the one process with `-n 0`) makes the folder
# before the xdist workers start, they inherit it, and the controller removes it at the end.
_OWN_CACHE = "PYTEST_XDIST_WORKER" not in os.environ and not os.environ.get(xla_env.CACHE_VAR)
if _OWN_CACHE:
  import tempfile  # noqa: E402
  os.environ[xla_env.CACHE_VAR] = tempfile.mkdtemp(prefix="xprompt_jax_test_xla_cache_")

# Eight simulated CPU devices so mesh tests (8x1, 2x4, 1x1) run in-process; jit still defaults to device 0. The
# device count goes first and the caller's other flags (a thread setting, README "Running the tests") after it:
# XLA stops reading XLA_FLAGS at the first token without dashes, which would silently drop a flag after it.
_ASKED = os.environ.get("XLA_FLAGS", "")
os.environ["XLA_FLAGS"] = xla_env.flags(xla_env.TEST_DEVICES)

from xprompt_jax import paths  # noqa: E402


@pytest.fixture(scope="session")
def shared():
  d = paths.shared_dir()
  if d is None:
    pytest.skip("../shared (or $XPROMPT_SHARED) is absent: real data/checkpoint fixtures unavailable")
  return d


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: longer than a few seconds; deselect with -m 'not slow'")
  config.addinivalue_line("markers", "paper_table: the dry run of a part of one paper table; .ci/run runs the slow "
                          "ones after the default suite")
  config.addinivalue_line("markers", "tolerance: compares floating-point results with tests/numerics.py (set on "
                          "every test of a module that imports it); .ci/run reruns these with one XLA CPU thread")


def pytest_collection_modifyitems(config, items):
  import numerics
  for item in items:
    module = getattr(item, "module", None)
    if module is not None and any(v is numerics for v in vars(module).values()):
      item.add_marker("tolerance")


def pytest_sessionstart(session):
  """The mesh, sharding and checkpoint-layout tests need the devices set up above: fail the run, never skip them."""
  import jax
  if jax.default_backend() == "cpu" and jax.device_count() != xla_env.TEST_DEVICES:
    raise pytest.UsageError(
        f"XLA gave {jax.device_count()} CPU device(s), not the {xla_env.TEST_DEVICES} that tests/conftest.py asks "
        f"for with XLA_FLAGS={os.environ['XLA_FLAGS']!r} (you set {_ASKED!r}); was jax imported before conftest, "
        "or does a plugin set XLA_FLAGS?")


def pytest_unconfigure(config):
  if _OWN_CACHE:
    import shutil
    shutil.rmtree(os.environ.pop(xla_env.CACHE_VAR), ignore_errors=True)
