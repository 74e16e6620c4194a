"""jsonl_io's json markers: written atomically, read back as None while absent."""
import json

import pytest

from xprompt_jax import jsonl_io


def test_marker_round_trip_creates_the_folder_with_sorted_keys(tmp_path):
  path = tmp_path / "stage" / "result.json"
  assert jsonl_io.read_json_if_exists(str(path)) is None
  jsonl_io.write_json_atomic(str(path), {"b": 1, "a": [1, 2]})
  assert jsonl_io.read_json_if_exists(str(path)) == {"a": [1, 2], "b": 1}
  assert path.read_text(encoding="utf-8").index('"a"') < path.read_text(encoding="utf-8").index('"b"')
  assert not (tmp_path / "stage" / "result.json.tmp").exists()


def test_a_failed_write_keeps_the_previous_marker_whole(tmp_path):
  path = tmp_path / "result.json"
  jsonl_io.write_json_atomic(str(path), [{"accuracy": 61.1}])
  with pytest.raises(TypeError):
    jsonl_io.write_json_atomic(str(path), [{"accuracy": object()}])
  assert json.loads(path.read_text(encoding="utf-8")) == [{"accuracy": 61.1}]
