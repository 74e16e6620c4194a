"""Local and gs:// addresses map to tensorstore kvstores; file reads name a missing file."""
import os

import pytest

from xprompt_jax.checkpoints import storage


def test_kvstore_specs():
  assert storage.kvstore_spec("gs://bucket/a/b") == {"driver": "gcs", "bucket": "bucket", "path": "a/b/"}
  assert storage.kvstore_spec("gs://bucket") == {"driver": "gcs", "bucket": "bucket", "path": ""}
  assert storage.kvstore_spec("/x/y/") == {"driver": "file", "path": "/x/y/"}
  with pytest.raises(ValueError, match="not a gs://bucket/path"):
    storage.kvstore_spec("gs:///a")


def test_join_parent_absolute():
  assert storage.join("gs://b/dir/", "f") == "gs://b/dir/f"
  assert storage.parent("gs://b/dir/f") == "gs://b/dir"
  assert storage.join("/a", "b", "c") == "/a/b/c"
  assert storage.parent("/a/b/c") == "/a/b"
  assert storage.absolute("gs://b/x") == "gs://b/x"
  assert os.path.isabs(storage.absolute("rel"))


def test_local_read_write(tmp_path):
  path = str(tmp_path / "f.bin")
  storage.write_bytes(path, b"abc")
  assert storage.read_bytes(path) == b"abc"
  assert storage.is_file(path) and not storage.is_dir(path) and storage.exists(path)
  assert storage.is_dir(str(tmp_path)) and not storage.is_file(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="nope.bin does not exist"):
    storage.read_bytes(str(tmp_path / "nope.bin"))
  assert not storage.exists(str(tmp_path / "nope.bin"))


def test_kvstore_branch_on_the_file_driver(tmp_path):
  """The gs:// code path is driver-agnostic; run it on tensorstore's file driver."""
  (tmp_path / "checkpoint").write_bytes(b"xyz")
  (tmp_path / "checkpoint_extra").write_bytes(b"")
  spec = storage.kvstore_spec(str(tmp_path))
  assert storage.kv_read(spec, "checkpoint", "shown") == b"xyz"
  with pytest.raises(FileNotFoundError, match="checkpoint file gs://b/missing does not exist"):
    storage.kv_read(spec, "missing", "gs://b/missing")
  assert storage.kv_has_key(spec, "checkpoint") and storage.kv_has_key(spec, "checkpoint_extra")
  assert not storage.kv_has_key(spec, "check")
  assert storage.kv_has_prefix(spec)
  assert not storage.kv_has_prefix(storage.kvstore_spec(str(tmp_path / "empty")))
