"""Tests for xprompt_jax.training.fingerprint: deterministic content hashes of frozen checkpoints."""
import hashlib
import shutil

from etils import epath
import pytest

from xprompt_jax.training import fingerprint as fp_lib
from xprompt_jax.training.fingerprint import fingerprint_checkpoint


def _tree(root, files):
  for name, data in files.items():
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
  return root


_T5X_LIKE = {"checkpoint": b"msgpack", "target.encoder.kernel/.zarray": b"{}", "target.encoder.kernel/0.0": b"a" * 100,
             "target.encoder.kernel/0.1": b"b" * 100}


def test_deterministic_and_independent_of_location(tmp_path):
  a = _tree(tmp_path / "a", _T5X_LIKE)
  b = _tree(tmp_path / "elsewhere" / "b", _T5X_LIKE)
  fp = fingerprint_checkpoint(str(a))
  assert fp.startswith("sha256:") and len(fp) == len("sha256:") + 64
  assert fingerprint_checkpoint(str(a)) == fp == fingerprint_checkpoint(str(b))


def test_independent_of_listing_order(tmp_path, monkeypatch):
  root = _tree(tmp_path / "a", _T5X_LIKE)
  expected = fingerprint_checkpoint(str(root))
  original = epath.Path.walk

  def reversed_walk(self, **kwargs):
    for folder, dirs, names in reversed(list(original(self, **kwargs))):
      yield folder, dirs[::-1], names[::-1]

  monkeypatch.setattr(epath.Path, "walk", reversed_walk)
  assert fingerprint_checkpoint(str(root)) == expected


@pytest.mark.parametrize("change", ["content", "zarr_metadata", "rename", "add", "remove"])
def test_any_change_of_a_small_file_changes_it(tmp_path, change):
  root = _tree(tmp_path / "a", _T5X_LIKE)
  before = fingerprint_checkpoint(str(root))
  chunk = root / "target.encoder.kernel" / "0.1"
  if change == "content":
    chunk.write_bytes(b"b" * 99 + b"c")
  elif change == "zarr_metadata":
    (root / "target.encoder.kernel" / ".zarray").write_bytes(b'{"dtype": "<f4"}')
  elif change == "rename":
    chunk.rename(root / "target.encoder.kernel" / "1.0")
  elif change == "add":
    (root / "target.decoder.kernel").mkdir()
    (root / "target.decoder.kernel" / "0.0").write_bytes(b"")
  else:
    chunk.unlink()
  assert fingerprint_checkpoint(str(root)) != before


def test_large_files_hash_size_and_both_ends(tmp_path):
  """With full_hash_max_bytes=64 and edge_bytes=16 a 100-byte file is hashed by size + 16 bytes at each end."""
  root = _tree(tmp_path / "a", {"big.bin": bytes(range(100)), "small.bin": b"x" * 64})
  kw = {"full_hash_max_bytes": 64, "edge_bytes": 16}
  before = fingerprint_checkpoint(str(root), **kw)
  data = bytearray(range(100))
  data[50] = 255  # the middle: documented as not detected for large files
  (root / "big.bin").write_bytes(bytes(data))
  assert fingerprint_checkpoint(str(root), **kw) == before
  assert fingerprint_checkpoint(str(root)) != fingerprint_checkpoint(str(_tree(tmp_path / "b", {
      "big.bin": bytes(range(100)), "small.bin": b"x" * 64})))  # with the defaults the whole file counts
  for position in (3, 90):
    changed = bytearray(range(100))
    changed[position] = 255
    (root / "big.bin").write_bytes(bytes(changed))
    assert fingerprint_checkpoint(str(root), **kw) != before, position
  (root / "big.bin").write_bytes(bytes(range(100)) + b"\0")
  assert fingerprint_checkpoint(str(root), **kw) != before
  (root / "big.bin").write_bytes(bytes(range(100)))
  (root / "small.bin").write_bytes(b"x" * 63 + b"y")  # 64 bytes: still hashed in full
  assert fingerprint_checkpoint(str(root), **kw) != before


def test_file_digest_matches_hashlib(tmp_path):
  path = tmp_path / "f"
  data = bytes(range(256)) * 10
  path.write_bytes(data)
  assert fp_lib.file_digest(epath.Path(path), len(data)) == hashlib.sha256(data).hexdigest()
  ends = hashlib.sha256(data[:100] + data[-100:]).hexdigest()
  assert fp_lib.file_digest(epath.Path(path), len(data), full_hash_max_bytes=200, edge_bytes=100) == ends


def test_hf_folder_hashes_config_and_weights_only(tmp_path):
  files = {"config.json": b'{"d_model": 8}', "model.safetensors": b"weights"}
  root = _tree(tmp_path / "hf", files)
  before = fingerprint_checkpoint(str(root))
  assert [name for name, _ in fp_lib.checkpoint_files(str(root))] == ["config.json", "model.safetensors"]
  _tree(root, {"README.md": b"hello", "tokenizer.json": b"{}", ".git/HEAD": b"ref"})
  assert fingerprint_checkpoint(str(root)) == before
  (root / "config.json").write_bytes(b'{"d_model": 16}')
  assert fingerprint_checkpoint(str(root)) != before


def test_hidden_files_are_ignored(tmp_path):
  root = _tree(tmp_path / "a", _T5X_LIKE)
  before = fingerprint_checkpoint(str(root))
  _tree(root, {".lock": b"pid 1", ".cache/x": b"y"})
  assert fingerprint_checkpoint(str(root)) == before


def test_single_file_ignores_its_name(tmp_path):
  (tmp_path / "checkpoint_0").write_bytes(b"legacy msgpack")
  (tmp_path / "renamed").write_bytes(b"legacy msgpack")
  assert fingerprint_checkpoint(str(tmp_path / "checkpoint_0")) == fingerprint_checkpoint(str(tmp_path / "renamed"))


def test_real_t5x_checkpoint_changes_with_one_chunk(shared, tmp_path):
  source = shared / "checkpoints" / "t5x_t5_1_1_tiny_random" / "checkpoint_3"
  copy = tmp_path / "checkpoint_3"
  shutil.copytree(source, copy)
  names = [name for name, _ in fp_lib.checkpoint_files(str(copy))]
  assert "checkpoint" in names
  assert any(n.endswith("/0.0") for n in names) and any(n.endswith("/.zarray") for n in names)
  assert fingerprint_checkpoint(str(copy)) == fingerprint_checkpoint(str(source))
  chunk = next(p for p in sorted(copy.glob("target.*/*")) if not p.name.startswith("."))
  chunk.write_bytes(chunk.read_bytes() + b"\0")
  assert fingerprint_checkpoint(str(copy)) != fingerprint_checkpoint(str(source))


def test_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    fingerprint_checkpoint(str(tmp_path / "missing"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="holds no files"):
    fingerprint_checkpoint(str(tmp_path / "empty"))
  with pytest.raises(ValueError, match="edge_bytes"):
    fingerprint_checkpoint(str(tmp_path), full_hash_max_bytes=10, edge_bytes=6)
