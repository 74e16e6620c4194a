"""`xprompt-jax score` on T5X checkpoints via gin, bucketing, and its bad-input errors (nothing written)."""
import json

import numpy as np
import pytest

from cli_helpers import run_cli
from xprompt_jax import jsonl_io


def _run(*args):
  return run_cli("score", *args, timeout=600)


def test_read_rows_reports_every_bad_line(tmp_path):
  f = tmp_path / "in.jsonl"
  f.write_text('{"inputs": "a", "targets": "b"}\n{"inputs": 3, "targets": "b"}\n\n{"targets": "x"}\n')
  with pytest.raises(jsonl_io.JsonlInputError) as e:
    jsonl_io.read_rows(str(f))
  assert f"{f}:2: field 'inputs' must be a string, got a int" in str(e.value)
  assert f"{f}:4: field 'inputs' must be a string, got missing" in str(e.value)
  f.write_text('{"inputs": "a", "targets": "b"}\n{"inputs": "a", targets: 1}\n')
  with pytest.raises(jsonl_io.JsonlInputError, match=rf"{f}:2: invalid JSON"):
    jsonl_io.read_rows(str(f))
  f.write_text("\n")
  with pytest.raises(jsonl_io.JsonlInputError, match="holds no rows"):
    jsonl_io.read_rows(str(f))


def test_bucket_lengths_are_powers_of_two():
  assert [jsonl_io.bucket_length(n) for n in (1, 8, 9, 100, 129)] == [8, 8, 16, 128, 256]


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
  out = tmp_path / "out.jsonl"

  def rows():
    yield {"a": 1}
    raise RuntimeError("boom")

  with pytest.raises(RuntimeError):
    jsonl_io.write_jsonl_atomic(str(out), rows())
  assert list(tmp_path.iterdir()) == []


def test_t5x_checkpoint_with_model_gin_and_errors(shared, tmp_path):
  ckpt = shared / "checkpoints" / "t5x_t5_1_1_tiny_random" / "checkpoint_3"
  good = tmp_path / "in.jsonl"
  good.write_text("".join(json.dumps({"inputs": f"question {i}: " + "word " * (3 * i), "targets": "yes" * (i + 1)})
                          + "\n" for i in range(5)))
  out = tmp_path / "out.jsonl"
  rc, log = _run(f"--checkpoint={ckpt}", "--gin_file=models/t5x_tiny_random.gin", f"--inputs={good}",
                 f"--output={out}", "--batch_size=2")
  assert rc == 0, log
  scores = [json.loads(l)["score"] for l in open(out)]
  assert len(scores) == 5 and all(np.isfinite(scores)) and all(s < 0 for s in scores)

  # A T5X checkpoint without a model config, an unknown model gin, a malformed row: clear errors, no output.
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"inputs": "a", "targets": "b"}\n{"inputs": "a"}\n')
  out2 = tmp_path / "out2.jsonl"
  rc, log = _run(f"--checkpoint={ckpt}", f"--inputs={good}", f"--output={out2}")
  assert rc == 1 and "is a T5X checkpoint, which stores no model configuration" in log, log
  rc, log = _run(f"--checkpoint={ckpt}", "--gin_file=models/t5_1_1_tinyy.gin", f"--inputs={good}",
                 f"--output={out2}")
  assert rc == 1 and "gin file 'models/t5_1_1_tinyy.gin' not found" in log and "models/t5_1_1_tiny.gin" in log
  rc, log = _run(f"--checkpoint={ckpt}", "--gin_file=models/t5x_tiny_random.gin", f"--inputs={bad}",
                 f"--output={out2}")
  assert rc == 1 and f"{bad}:2: field 'targets' must be a string, got missing" in log, log
  # The wrong architecture for the checkpoint: the parameter path and both shapes are named.
  rc, log = _run(f"--checkpoint={ckpt}", "--gin_file=models/t5_1_1_tiny.gin", f"--inputs={good}",
                 f"--output={out2}")
  assert rc == 1 and "token_embedder/embedding" in log and "(32128, 4)" in log and "(32128, 8)" in log, log
  rc, log = _run(f"--checkpoint={tmp_path / 'missing'}", f"--inputs={good}", f"--output={out2}")
  assert rc == 1 and "missing" in log, log
  assert not out2.exists()
