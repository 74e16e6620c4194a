"""The pretraining corpus: training files only (val/test never opened), text extraction, held-out split, tasks."""
import json
import pathlib

import numpy as np
import seqio

from xprompt_jax.pretraining import objectives
from xprompt_jax.pretraining import tasks


def _fake_data(root: pathlib.Path) -> pathlib.Path:
  (root / "superglue" / "RTE").mkdir(parents=True)
  (root / "glue_resplit" / "SST-2").mkdir(parents=True)
  rows = [{"premise": f"train premise {i} about cats", "hypothesis": "cats exist", "label": "entailment",
           "idx": i} for i in range(300)]
  (root / "superglue" / "RTE" / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
  for name in ("val.jsonl", "test.jsonl"):
    (root / "superglue" / "RTE" / name).write_text(json.dumps({"premise": "SECRET VALIDATION TEXT", "idx": 0}))
  (root / "glue_resplit" / "SST-2" / "train.json").write_text(json.dumps(
      {"0": {"text_a": "a fine movie", "text_b": None, "label": "1"},
       "1": {"text_a": "train premise 0 about cats cats exist", "text_b": None, "label": "0"}}))
  (root / "glue_resplit" / "SST-2" / "dev.json").write_text(json.dumps({"0": {"text_a": "SECRET DEV TEXT"}}))
  return root


def test_only_training_files_are_read(tmp_path, monkeypatch):
  root = _fake_data(tmp_path)
  opened = []
  real = tasks._read_text
  monkeypatch.setattr(tasks, "_read_text", lambda p: opened.append(p.name) or real(p))
  tasks.documents.cache_clear()
  docs = tasks.documents(str(root), "train") + tasks.documents(str(root), "validation")
  tasks.documents.cache_clear()
  assert opened and set(opened) == {"train.jsonl", "train.json"}
  assert not any("SECRET" in d for d in docs)
  assert "train premise 3 about cats cats exist" in docs and "a fine movie" in docs
  assert not any("entailment" in d for d in docs)  # Labels are not text.
  assert len(docs) == 301  # The GLUE copy of an RTE example is kept once.


def test_heldout_split_is_small_and_disjoint(tmp_path):
  root = _fake_data(tmp_path)
  tasks.documents.cache_clear()
  train, val = tasks.documents(str(root), "train"), tasks.documents(str(root), "validation")
  tasks.documents.cache_clear()
  assert not set(train) & set(val)
  assert 0 < len(val) < 0.06 * len(train)
  assert all(tasks.is_heldout(d) for d in val) and not any(tasks.is_heldout(d) for d in train)


def test_strings_of_skips_non_text_and_walks_nesting():
  row = {"idx": 3, "passage": {"text": "p", "questions": [{"question": "q", "answers": [{"text": "a", "label": 1}]}]},
         "label": "x", "start1": 4, "version": 1.1}
  assert tasks.strings_of(row) == ["p", "q", "a"]


def test_shared_training_files(shared):
  files = tasks.training_files(shared / "data")
  assert all(f.name.startswith("train.") for f in files)
  assert {f.parent.name for f in files} >= {"RTE", "CB", "WiC", "MNLI", "SST-2", "BoolQ"}


def test_span_corruption_task_yields_sentinel_examples(shared):
  del shared
  task = seqio.get_mixture_or_task(tasks.SPAN_CORRUPTION_TASK)
  ds = task.get_dataset({"inputs": 64, "targets": 16}, split="validation", shuffle=False, seed=0)
  ex = next(ds.as_numpy_iterator())
  assert ex["targets"][0] == 32099 and ex["targets"][-1] == 1 and ex["inputs"][-1] == 1
  assert len(ex["inputs"]) <= 64 and len(ex["targets"]) == objectives.span_corruption_lengths(64)[1]
  assert np.sum(ex["inputs"] >= 32000) == np.sum(ex["targets"] >= 32000)
