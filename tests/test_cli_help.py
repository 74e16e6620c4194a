"""`xprompt-jax COMMAND --help` (and `-h`) for every command: exit status 0, the command's own flags listed."""
import subprocess
import sys

import pytest

from xprompt_jax import cli

OWN_FLAG = {"launch": "--accelerator_type", "convert": "--checkpoint", "score": "--checkpoint", "plot": "--compare"}


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_help_exits_zero_and_lists_the_commands_flags(command):
  for help_flag in ("--help", "-h"):
    result = subprocess.run([sys.executable, "-m", "xprompt_jax.cli", command, help_flag], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, (help_flag, result.stdout[-2000:], result.stderr[-2000:])
    flag = OWN_FLAG.get(command, "--gin_file")
    assert f"  {flag}:" in result.stdout, result.stdout[-3000:]


def test_a_bad_flag_still_exits_one():
  result = subprocess.run([sys.executable, "-m", "xprompt_jax.cli", "train", "--bogus"], capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 1 and "bogus" in result.stderr
