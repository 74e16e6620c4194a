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
  """The folder holding the shipped gin configs: `gin/` of a source checkout, else the installed package data.

  `gin/` has no `__init__.py` on purpose: a regular package named `gin` in the working directory would shadow
  the gin-config library.
  """
  source = PROJECT_ROOT / "gin"
  if (source / "models").is_dir():
    return source
  return pathlib.Path(__file__).resolve().parent / "gin"
