"""json and jsonl in and out: line-numbered validation of input rows, atomic output, length buckets."""
import json
import os
import tempfile
from typing import Any


class JsonlInputError(ValueError):
  """A malformed row of a jsonl input file (the message names the file and line)."""


def read_rows(path: str, fields=("inputs", "targets")) -> list[dict]:
  """The rows of a jsonl input file; errors name the file and line of every bad row (up to 10)."""
  from xprompt_jax.tasks import sources  # Reuses the task readers' jsonl parsing and error format.
  if not os.path.exists(path):
    raise FileNotFoundError(f"--inputs file {path} does not exist")
  try:
    rows = sources.read_jsonl(path)
  except sources.LocalDataError as e:
    raise JsonlInputError(str(e)) from e
  problems = []
  for lineno, row in rows:
    for key in fields:
      if not isinstance(row.get(key), str):
        got = "missing" if key not in row else f"a {type(row[key]).__name__}"
        problems.append(f"{path}:{lineno}: field {key!r} must be a string, got {got}")
  if problems:
    more = f"\n... and {len(problems) - 10} more" if len(problems) > 10 else ""
    raise JsonlInputError("\n".join(problems[:10]) + more)
  if not rows:
    raise JsonlInputError(f"{path} holds no rows")
  return [row for _, row in rows]


def bucket_length(n: int, minimum: int = 8) -> int:
  """The padded length for a sequence of n tokens: the next power of two (bounded set of compiled shapes)."""
  return max(minimum, 1 << max(0, n - 1).bit_length())


def write_json_atomic(path: str, value) -> None:
  """Writes `value` as json (indent 1, sorted keys) to `path.tmp` and renames it over `path`, creating the folder:
  a marker or listing is either absent or complete."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=1, sort_keys=True)
  os.replace(tmp, path)


def read_json_if_exists(path: str) -> Any:
  """The json value in `path`, or None when there is no such file (a stage not yet finished): the reading side of
  `write_json_atomic`, whose markers are either absent or complete."""
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def check_output(path: str, flag: str = "--output") -> None:
  """Before any work: `path` can be written (its folder exists and is writable, and it is not a folder)."""
  if not path:
    raise ValueError(f"{flag} is required")
  if os.path.isdir(path):
    raise IsADirectoryError(f"{flag}={path} is a folder; give a file path (e.g. {path.rstrip('/')}/out.jsonl)")
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"{flag} folder {folder} does not exist; create it first")
  if not os.access(folder, os.W_OK):
    raise PermissionError(f"{flag} folder {folder} is not writable")


def write_jsonl_atomic(path: str, rows) -> None:
  """Writes rows to a temp file beside `path` and renames it, so a failure leaves no partial output."""
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"--output folder {folder} does not exist")
  if not os.access(folder, os.W_OK):
    raise PermissionError(f"--output folder {folder} is not writable")
  fd, tmp = tempfile.mkstemp(prefix=".score-", suffix=".jsonl.tmp", dir=folder)
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      for row in rows:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
