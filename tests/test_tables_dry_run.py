"""The paper-table commands, run as a user runs them with `--dry_run`: the same configs and code path, a tiny random
T5 of the config's family written as a T5X checkpoint, capped steps/rows/batch, local ../shared data or TFDS mock
data. The default suite runs a subset of each table that exercises every kind of stage; the whole tables are
`slow` (their durations on 2 cores are in docs/paper_tables.md)."""
import json

import pytest

from cli_helpers import run_cli
from xprompt_jax import paths
from xprompt_jax.tables import base

pytestmark = pytest.mark.skipif(paths.shared_dir() is None, reason="../shared (or $XPROMPT_SHARED) is absent: the "
                                "dry runs read the real local SuperGLUE files where they exist")


def _table(tmp_path, table, gin_file, *runs, timeout=1800):
  args = ["table", f"--table={table}", f"--gin_file={gin_file}", f"--results_dir={tmp_path}", "--dry_run"]
  code, out = run_cli(*args, *([f"--runs={','.join(runs)}"] if runs else []), timeout=timeout)
  assert code == 0, out[-3000:]
  return json.loads((tmp_path / "table.json").read_text()), out


def _cells(result, label):
  return dict((r["label"], r["cells"]) for r in result["rows"])[label]


def test_lester_dry_run_trains_five_prompts_and_ensembles_them(tmp_path):
  result, out = _table(tmp_path, "lester_superglue", "paper/prompt_tuning_xxl.gin", "CB/*")
  assert out.count("(train)") == 5 and "table: CB/ensemble (ensemble)" in out
  assert base.MISSING not in "".join(_cells(result, "CB (acc/F1)"))
  assert "dry_run_t5_1_1_xxl/checkpoint_0" in out  # The frozen model is the tiny T5X checkpoint.
  assert result["quotes"]["CB (acc/F1)"] == ["99.3/99.0", "100.0/100.0", "100.0/100.0"]
  # Rerunning resumes: nothing is trained again.
  _, again = _table(tmp_path, "lester_superglue", "paper/prompt_tuning_xxl.gin", "CB/*")
  assert "(train)" not in again and "6/48 runs finished" in again


def test_prefix_vs_prompt_dry_run_trains_both_methods(tmp_path):
  result, out = _table(tmp_path, "prefix_vs_prompt", "paper/prefix_tuning_base.gin", "*/WSC/seed0")
  assert "method: prefix" in out and "method: prompt" in out
  assert "super_glue_wsc_v102_simple_eval" in out  # WSC trains on simple_train and is decoded on simple_eval.


@pytest.mark.slow
@pytest.mark.parametrize("table,gin_file", [("lester_superglue", "paper/prompt_tuning_xxl.gin"),
                                            ("prefix_vs_prompt", "paper/prefix_tuning_small.gin")])
def test_whole_table_dry_run_fills_every_cell(tmp_path, table, gin_file):
  result, out = _table(tmp_path, table, gin_file, timeout=5400)
  assert result["unfinished"] == [] and result["failures"] == [], out[-3000:]
  assert not [c for r in result["rows"] for c in r["cells"] if base.MISSING in c.split("/")]
