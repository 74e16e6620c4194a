"""Tests for tasks/sources.py: the data-source setting, local readers and their errors, and HybridSource."""
import json

import gin
import pytest
import seqio

from xprompt_jax.tasks import sources
from xprompt_jax.tasks import superglue  # noqa: F401  (registers the tasks used below)


@pytest.fixture(autouse=True)
def _reset_mode(monkeypatch):
  monkeypatch.delenv(sources.ENV_VAR, raising=False)
  sources.set_data_source(None)
  gin.clear_config()
  yield
  sources.set_data_source(None)
  gin.clear_config()


def test_mode_precedence_code_then_gin_then_env(monkeypatch):
  assert sources.get_data_source_mode() == "auto"
  monkeypatch.setenv(sources.ENV_VAR, "tfds")
  assert sources.get_data_source_mode() == "tfds"
  gin.parse_config("data_source.mode = 'local'")
  assert sources.get_data_source_mode() == "local"
  sources.set_data_source("auto")
  assert sources.get_data_source_mode() == "auto"


def test_bad_mode_names_the_setting(monkeypatch):
  with pytest.raises(ValueError, match="set_data_source"):
    sources.set_data_source("gcs")
  monkeypatch.setenv(sources.ENV_VAR, "disk")
  with pytest.raises(ValueError, match="XPROMPT_DATA_SOURCE.*'disk'"):
    sources.get_data_source_mode()


def test_malformed_jsonl_reports_file_and_line(tmp_path):
  path = tmp_path / "val.jsonl"
  good = {"premise": "p", "hypothesis": "h", "label": "entailment", "idx": 0}
  path.write_text(json.dumps(good) + "\n" + '{"premise": "p", "hyp\n')
  with pytest.raises(sources.LocalDataError, match=rf"{path}:2: invalid JSON"):
    sources.super_glue_rows("rte")(path)


def test_missing_field_and_bad_label_report_file_and_line(tmp_path):
  path = tmp_path / "train.jsonl"
  path.write_text(json.dumps({"premise": "p", "label": "entailment", "idx": 0}) + "\n")
  with pytest.raises(sources.LocalDataError, match=rf"{path}:1: missing field 'hypothesis'"):
    sources.super_glue_rows("rte")(path)
  path.write_text(json.dumps({"premise": "p", "hypothesis": "h", "label": "maybe", "idx": 0}) + "\n")
  with pytest.raises(sources.LocalDataError, match=rf"{path}:1: label 'maybe'"):
    sources.super_glue_rows("rte")(path)


def test_tsv_field_count_error_names_line(tmp_path):
  path = tmp_path / "dev.tsv"
  path.write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tonly two\n")
  with pytest.raises(sources.LocalDataError, match=rf"{path}:3: expected 4 tab-separated fields"):
    sources.glue_tsv_rows("rte")(path)


def test_tsv_header_bom_is_dropped(tmp_path):
  path = tmp_path / "dev.tsv"
  path.write_text("\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tA .\tB .\n", encoding="utf-8")
  assert sources.glue_tsv_rows("mrpc")(path) == [{"sentence1": "A .", "sentence2": "B .", "label": 1, "idx": 0}]


def test_resplit_json_labels_follow_tfds(tmp_path):
  path = tmp_path / "train.json"
  path.write_text(json.dumps({"0": {"text_a": "p", "text_b": "h", "label": "contradiction"},
                              "1": {"text_a": "p2", "text_b": "h2", "label": "neutral"}}))
  rows = sources.glue_resplit_rows("mnli")(path)
  assert [r["label"] for r in rows] == [2, 1]  # TFDS order: entailment, neutral, contradiction.
  path.write_text(json.dumps({"0": {"text_a": "s", "text_b": None, "label": "2"}}))
  with pytest.raises(sources.LocalDataError, match="record '0': label '2'"):
    sources.glue_resplit_rows("sst2")(path)


def test_super_glue_labels_become_tfds_ints(tmp_path):
  path = tmp_path / "val.jsonl"
  lines = [{"premise": "a", "choice1": "b", "choice2": "c", "question": "cause", "label": 1, "idx": 3},
           {"premise": "a", "choice1": "b", "choice2": "c", "question": "effect", "idx": 4}]
  path.write_text("\n".join(json.dumps(x) for x in lines))
  rows = sources.super_glue_rows("copa")(path)
  assert [(r["label"], r["idx"]) for r in rows] == [(1, 3), (-1, 4)]


def _fake_shared(tmp_path, monkeypatch, rte_val_lines):
  folder = tmp_path / "data" / "superglue" / "RTE"
  folder.mkdir(parents=True)
  (folder / "val.jsonl").write_text("\n".join(rte_val_lines) + "\n")
  monkeypatch.setenv("XPROMPT_SHARED", str(tmp_path))
  return folder


def test_task_reads_a_local_file_and_reports_its_bad_line(tmp_path, monkeypatch):
  good = json.dumps({"premise": "It rains.", "hypothesis": "It is wet.", "label": "entailment", "idx": 0})
  folder = _fake_shared(tmp_path, monkeypatch, [good, "{not json"])
  sources.set_data_source("local")
  assert sources.describe_source("super_glue_rte_v102", "validation") == (
      f"super_glue_rte_v102[validation]: local file {folder / 'val.jsonl'}")
  task = seqio.get_mixture_or_task("super_glue_rte_v102")
  with pytest.raises(sources.LocalDataError, match=rf"{folder / 'val.jsonl'}:2: invalid JSON"):
    task.source.get_dataset("validation", shuffle=False)


def test_local_mode_missing_split_names_task_split_and_folder(tmp_path, monkeypatch):
  _fake_shared(tmp_path, monkeypatch, [])
  sources.set_data_source("local")
  task = seqio.get_mixture_or_task("super_glue_rte_v102")
  with pytest.raises(sources.SplitUnavailableError) as e:
    task.source.get_dataset("train", shuffle=False)
  msg = str(e.value)
  assert "'super_glue_rte_v102'" in msg and "'train'" in msg and str(tmp_path / "data/superglue/RTE/train.jsonl") in msg


def test_auto_mode_falls_back_to_tfds_and_tfds_mode_ignores_local_files(shared):
  sources.set_data_source("auto")
  assert "local file" in sources.describe_source("super_glue_rte_v102", "validation")
  assert sources.describe_source("super_glue_boolq_v102", "train") == (
      "super_glue_boolq_v102[train]: TFDS super_glue/boolq:1.0.2 split 'train'")
  sources.set_data_source("tfds")
  assert "TFDS super_glue/rte:1.0.2" in sources.describe_source("super_glue_rte_v102", "validation")


def test_local_counts_and_shuffle_are_deterministic(shared):
  sources.set_data_source("local")
  source = seqio.get_mixture_or_task("super_glue_cb_v102").source
  assert source.num_input_examples("validation") == 56
  a = [int(x["idx"]) for x in source.get_dataset("validation", shuffle=True, seed=3).as_numpy_iterator()]
  b = [int(x["idx"]) for x in source.get_dataset("validation", shuffle=True, seed=3).as_numpy_iterator()]
  assert a == b and sorted(a) == list(range(56)) and a != list(range(56))
  shard = source.get_dataset("validation", shuffle=False, shard_info=seqio.ShardInfo(index=1, num_shards=2))
  assert [int(x["idx"]) for x in shard.as_numpy_iterator()] == list(range(1, 56, 2))
