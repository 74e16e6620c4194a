"""Content fingerprints of frozen-model checkpoints, so a training checkpoint can name the exact base model it needs.

`fingerprint_checkpoint(path)` hashes a checkpoint folder or file, local or `gs://` (read through `etils.epath`,
which uses `tf.io.gfile` for gs:// when TensorFlow is installed). What is hashed:

  * Which files. A Hugging Face folder (`config.json` + `*.safetensors`): `config.json`, the safetensors files and
    `model.safetensors.index.json`, so tokenizer files, READMEs or `.git` do not matter. Any other folder (T5X:
    the `checkpoint` msgpack plus every zarr chunk and `.zarray` file; Orbax; unknown layouts): every file below it
    except hidden ones (a file or folder name starting with ".", like `.git` or `.lock`, zarr's `.zarray`,
    `.zattrs`, `.zgroup`, `.zmetadata` excepted). A single file (a legacy T5X msgpack): that file.
  * Per file, in order of its '/'-separated path relative to `path` (sorted, so listing order never matters):
    the relative path, the size in bytes, and a SHA-256 of its content. Files of at most `full_hash_max_bytes`
    (64 MiB) are hashed entirely; larger files only by their first and last `edge_bytes` (16 MiB) -- together
    with the exact size this catches truncation, re-sharding and re-conversion while keeping the cost of a
    multi-GB safetensors file at 32 MiB of reads. An in-place edit strictly inside the middle of such a file is
    NOT detected; T5X zarr chunks are far below 64 MiB, so T5X checkpoints are always hashed in full.
  * The folder's own name is not hashed (a copy to another place or bucket has the same fingerprint), nor is a
    single file's name.

The result is `"sha256:<64 hex digits>"` over those records; the scheme version is part of the hashed bytes.
"""
import concurrent.futures
import hashlib
from typing import Optional

from etils import epath

from xprompt_jax.checkpoints import CheckpointError
from xprompt_jax.checkpoints import detect_format
from xprompt_jax.checkpoints import hf

SCHEME = b"xprompt_jax.fingerprint.v1\n"
FULL_HASH_MAX_BYTES = 64 * 2**20
EDGE_BYTES = 16 * 2**20
_BLOCK = 4 * 2**20


def _hash_range(f, length: int, digest) -> None:
  while length > 0:
    block = f.read(min(_BLOCK, length))
    if not block:
      raise OSError("file ended early while hashing")
    digest.update(block)
    length -= len(block)


def file_digest(path: epath.Path, size: int, full_hash_max_bytes: int = FULL_HASH_MAX_BYTES,
                edge_bytes: int = EDGE_BYTES) -> str:
  """SHA-256 of a file's content, or of its first and last `edge_bytes` when it exceeds `full_hash_max_bytes`."""
  digest = hashlib.sha256()
  with path.open("rb") as f:
    if size <= full_hash_max_bytes:
      _hash_range(f, size, digest)
    else:
      _hash_range(f, edge_bytes, digest)
      f.seek(size - edge_bytes)
      _hash_range(f, edge_bytes, digest)
  return digest.hexdigest()


_ZARR_METADATA = (".zarray", ".zattrs", ".zgroup", ".zmetadata")


def _is_hidden(relative: str) -> bool:
  """'.git/...', '.lock', '.cache/...'; zarr's own metadata files (`.zarray`, ...) are content, not hidden."""
  return any(part.startswith(".") and part not in _ZARR_METADATA for part in relative.split("/"))


def _hf_selected(relative: str) -> bool:
  return relative in (hf.CONFIG_NAME, hf.INDEX_NAME) or ("/" not in relative and relative.endswith(".safetensors"))


def checkpoint_files(path: str) -> list[tuple[str, epath.Path]]:
  """The (relative name, path) pairs that `fingerprint_checkpoint` hashes, sorted by relative name."""
  root = epath.Path(path)
  if root.is_file():
    return [("", root)]
  if not root.is_dir():
    raise FileNotFoundError(f"frozen checkpoint {path} does not exist (nothing to fingerprint)")
  try:
    is_hf = detect_format(str(path)) == "hf"
  except CheckpointError:
    is_hf = False
  files = []
  for folder, _, names in root.walk():
    for name in names:
      full = epath.Path(folder) / name
      relative = full.relative_to(root).as_posix()
      if _is_hidden(relative) or (is_hf and not _hf_selected(relative)):
        continue
      files.append((relative, full))
  if not files:
    raise FileNotFoundError(f"frozen checkpoint folder {path} holds no files to fingerprint")
  return sorted(files, key=lambda item: item[0])


def fingerprint_checkpoint(path: str, *, full_hash_max_bytes: int = FULL_HASH_MAX_BYTES,
                           edge_bytes: int = EDGE_BYTES, max_workers: Optional[int] = 8) -> str:
  """A deterministic content hash `"sha256:<hex>"` of the checkpoint at `path` (see the module docstring).

  Files are read in parallel (`max_workers` threads; reads and hashing release the GIL).
  """
  if edge_bytes <= 0 or 2 * edge_bytes > full_hash_max_bytes:
    raise ValueError(f"need 0 < 2 * edge_bytes <= full_hash_max_bytes, got edge_bytes={edge_bytes}, "
                     f"full_hash_max_bytes={full_hash_max_bytes}")
  files = checkpoint_files(str(path))

  def record(item: tuple[str, epath.Path]) -> bytes:
    relative, full = item
    size = full.stat().length
    digest = file_digest(full, size, full_hash_max_bytes, edge_bytes)
    mode = "full" if size <= full_hash_max_bytes else f"edges{edge_bytes}"
    return f"{relative}\0{size}\0{mode}\0{digest}\n".encode()

  with concurrent.futures.ThreadPoolExecutor(max_workers=max_workers) as pool:
    records = list(pool.map(record, files))
  total = hashlib.sha256(SCHEME)
  for r in records:
    total.update(r)
  return "sha256:" + total.hexdigest()
