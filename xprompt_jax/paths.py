"""Where the read-only shared data lives: `$XPROMPT_SHARED`, else `../shared` beside the project root."""
import os
import pathlib

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]


def shared_dir() -> pathlib.Path | None:
  """The shared data folder, or None when it is absent (tests then skip, tasks fall back to TFDS)."""
  env = os.environ.get("XPROMPT_SHARED")
  candidates = [pathlib.Path(env)] if env else []
  candidates.append(PROJECT_ROOT.parent / "shared")
  for c in candidates:
    if c.is_dir():
      return c
  return None


def gin_dir() -> pathlib.Path:
  """The folder holding the shipped gin configs (source tree or installed package data)."""
  import xprompt_jax.gin as gin_pkg  # `gin/` is installed as `xprompt_jax.gin`.
  return pathlib.Path(gin_pkg.__file__).resolve().parent
