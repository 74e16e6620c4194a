"""XLA_FLAGS handling of the suite (tests/xla_env.py, tests/conftest.py): the device count is always read, other
flags are kept, and a run that does not get its devices fails instead of skipping the mesh tests."""
import pathlib
import subprocess
import sys

import jax
import pytest
import xla_env

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_device_count_goes_before_a_bare_token_and_other_flags_are_kept():
  asked = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1 --xla_force_host_platform_device_count=2"
  assert xla_env.flags(8, asked) == ("--xla_force_host_platform_device_count=8 --xla_cpu_multi_thread_eigen=false "
                                     "intra_op_parallelism_threads=1")
  assert xla_env.flags(None, asked) == "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
  assert "XLA_FLAGS" not in xla_env.env(None, {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
  assert xla_env.env(4, {})["XLA_FLAGS"] == "--xla_force_host_platform_device_count=4"


def test_this_session_has_the_devices_it_set_up():
  assert jax.device_count() == xla_env.TEST_DEVICES


def _pytest_after(prelude: str, flags: str):
  code = f"{prelude}\nimport sys, pytest\nsys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', 'tests/test_numerics.py']))"
  return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env={**xla_env.env(None), "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"})


@pytest.mark.parametrize("flags", ["--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1", ""])
def test_a_session_without_its_devices_fails_naming_xla_flags(flags):
  # jax initialised before conftest ran: XLA never sees conftest's device count.
  proc = _pytest_after("import jax; jax.devices()", flags)
  assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout[-2000:] + proc.stderr[-2000:]
  assert "XLA gave 1 CPU device(s), not the 8" in proc.stderr + proc.stdout


def test_a_thread_setting_with_a_bare_token_still_gets_eight_devices():
  proc = _pytest_after("", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
