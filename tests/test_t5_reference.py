"""bench/t5_reference.py on 50 rows per local split: our SuperGLUE/GLUE task text and metrics equal those of Google's
`t5` package (0.9.4; `pip install --no-deps t5==0.9.4`). Skips without `../shared` or without `t5`."""
import pathlib
import sys

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))


@pytest.mark.slow
def test_tasks_match_t5_reference(shared):
  del shared
  import t5_reference  # noqa: E402  (bench/ is a folder of scripts, put on the path above)
  try:
    t5_reference.import_t5()
  except ImportError as e:
    pytest.skip(f"the `t5` package is not importable ({e}): pip install --no-deps t5==0.9.4")
  results = t5_reference.main(["--max_rows", "50"])
  assert len(results) >= 40  # Every local SuperGLUE / FewGLUE / GLUE split (47 with the shared data of 2025).
  bad = [(r["task"], r["split"], r["raw_examples"] or r["text_examples"] or r.get("post_examples"), r["problems"])
         for r in results if not r["ok"]]
  assert not bad, bad
  assert all(r["rows"] > 0 for r in results)
