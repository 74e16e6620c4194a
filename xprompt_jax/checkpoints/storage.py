"""Where checkpoint bytes live: local folders or `gs://bucket/path`, both read through tensorstore's kvstores.

One code path for both (tensorstore's `file` and `gcs` drivers) keeps TensorFlow out of checkpoint loading.
"""
import os

import tensorstore as ts


def is_gcs(path: str) -> bool:
  return str(path).startswith("gs://")


def join(base: str, *names: str) -> str:
  base = str(base)
  if is_gcs(base):
    return "/".join([base.rstrip("/"), *names])
  return os.path.join(base, *names)


def absolute(path: str) -> str:
  """Local paths made absolute (orbax and tensorstore need them so); gs:// addresses unchanged."""
  return str(path) if is_gcs(path) else os.path.abspath(path)


def kvstore_spec(path: str) -> dict:
  """A tensorstore kvstore spec for a folder (`gs://bucket/dir` -> gcs driver, else the local file driver)."""
  path = str(path)
  if is_gcs(path):
    bucket, _, key = path[len("gs://"):].partition("/")
    if not bucket:
      raise ValueError(f"{path!r} is not a gs://bucket/path address")
    return {"driver": "gcs", "bucket": bucket, "path": key.rstrip("/") + "/" if key else ""}
  return {"driver": "file", "path": os.path.abspath(path).rstrip("/") + "/"}


def _split(path: str) -> tuple[str, str]:
  path = str(path).rstrip("/")
  if is_gcs(path):
    head, _, tail = path.rpartition("/")
    return head, tail
  return os.path.dirname(os.path.abspath(path)), os.path.basename(path)


def parent(path: str) -> str:
  """The folder holding `path`."""
  return _split(path)[0]


def read_bytes(path: str) -> bytes:
  """The contents of one file; FileNotFoundError naming it when absent."""
  if not is_gcs(path):
    if not os.path.isfile(path):
      raise FileNotFoundError(f"checkpoint file {path} does not exist")
    with open(path, "rb") as f:
      return f.read()
  folder, name = _split(path)
  return kv_read(kvstore_spec(folder), name, path)


def write_bytes(path: str, data: bytes) -> None:
  if not is_gcs(path):
    with open(path, "wb") as f:
      f.write(data)
    return
  folder, name = _split(path)
  ts.KvStore.open(kvstore_spec(folder)).result().write(name, data).result()


def is_file(path: str) -> bool:
  if not is_gcs(path):
    return os.path.isfile(path)
  folder, name = _split(path)
  return kv_has_key(kvstore_spec(folder), name)


def is_dir(path: str) -> bool:
  """Local: an existing folder. GCS: any object under the prefix."""
  if not is_gcs(path):
    return os.path.isdir(path)
  return kv_has_prefix(kvstore_spec(path))


def exists(path: str) -> bool:
  return is_file(path) or is_dir(path)


# The kvstore operations behind the gs:// branches (driver-agnostic, so they are tested on the file driver).
def kv_read(spec: dict, key: str, shown_as: str) -> bytes:
  result = ts.KvStore.open(spec).result().read(key).result()
  if result.state != "value":
    raise FileNotFoundError(f"checkpoint file {shown_as} does not exist")
  return bytes(result.value)


def kv_has_key(spec: dict, key: str) -> bool:
  """Whether `key` exists, by listing just that key (no object data is transferred)."""
  kv = ts.KvStore.open(spec).result()
  raw = key.encode()
  return bool(kv.list(ts.KvStore.KeyRange(inclusive_min=raw, exclusive_max=raw + b"\x00")).result())


def kv_has_prefix(spec: dict) -> bool:
  return bool(ts.KvStore.open(spec).result().list().result())
