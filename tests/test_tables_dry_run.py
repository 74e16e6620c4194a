"""The paper-table commands, run as a user runs them with `--dry_run`: the same configs and code path, a tiny random
T5 of the config's family written as a T5X checkpoint, capped steps/rows/batch, local ../shared data or TFDS mock
data.

Every table has a part here that runs each kind of stage it has (`paper_table`): the Lester, prefix-vs-prompt and
32-shot XPrompt parts in the default suite, the longer XPrompt SuperGLUE / controls and MPT parts `slow`, which
`.ci/run` runs after the default suite (`-m "paper_table and slow"`). The whole tables are `slow` and outside CI
(hours on 2 cores; their durations are in docs/paper_tables.md)."""
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


@pytest.mark.paper_table
def test_lester_dry_run_trains_five_prompts_and_ensembles_them(tmp_path):
  result, out = _table(tmp_path, "lester_superglue", "paper/prompt_tuning_xxl.gin", "CB/*")
  assert out.count("(train)") == 5 and "table: CB/ensemble (ensemble)" in out
  assert base.MISSING not in "".join(_cells(result, "CB (acc/F1)"))
  assert "dry_run_t5_1_1_xxl/checkpoint_0" in out  # The frozen model is the tiny T5X checkpoint.
  assert result["quotes"]["CB (acc/F1)"] == ["99.3/99.0", "100.0/100.0", "100.0/100.0"]
  # Rerunning resumes: nothing is trained again.
  _, again = _table(tmp_path, "lester_superglue", "paper/prompt_tuning_xxl.gin", "CB/*")
  assert "(train)" not in again and "6/48 runs finished" in again


@pytest.mark.paper_table
def test_lester_lm_steps_dry_run_lm_adapts_and_tunes_prompts_on_its_exports(tmp_path):
  result, out = _table(tmp_path, "lester_lm_steps", "paper/prompt_tuning_base.gin", "lm_adapt",
                       "class_labels-L100-lm10k/RTE/seed0", "class_labels-L100-lm50k/RTE/seed0")
  assert "table: lm_adapt (lm_adapt)" in out and "c4_v220_prefix_lm[train]" in out
  assert json.loads((tmp_path / "lm_adapt" / "result.json").read_text())["exports"] == [1, 2]
  for row, export in (("lm10k", 1), ("lm50k", 2)):  # Each row's prompt is tuned on its own export.
    meta = (tmp_path / f"class_labels-L100-{row}" / "RTE" / "seed0" / "checkpoints" / "2" / "meta" / "metadata")
    assert f"lm_adapt/export/checkpoint_{export}" in meta.read_text(), row
  assert (tmp_path / "table.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert result["plot"]["x_label"] == "LM adaptation steps"


@pytest.mark.paper_table
def test_lester_objective_dry_run_trains_the_sentinel_task_on_the_span_corruption_checkpoint(tmp_path):
  _, out = _table(tmp_path, "lester_objective", "paper/prompt_tuning_small.gin",
                  "class_labels-L100-sc_sentinel/CB/seed0")
  assert "sentinel_taskless_super_glue_cb_v102/decode/accuracy=" in out
  assert "sentinel_taskless_super_glue_cb_v102/rank/accuracy=" in out  # Ranked behind the sentinel too.


@pytest.mark.paper_table
@pytest.mark.slow
def test_lester_transfer_dry_runs_evaluate_out_of_domain_and_zero_shot(tmp_path):
  mrqa, out = _table(tmp_path / "mrqa", "lester_mrqa", "paper/prompt_tuning_xxl.gin", "squad/seed0")
  assert "mrqa_textbook_qa_v100/decode/f1=" in out and "squad_v010_allanswers/decode/f1=" in out
  assert mrqa["quote_columns"] and (tmp_path / "mrqa" / "table.png").exists()
  _, out = _table(tmp_path / "pp", "lester_paraphrase", "paper/prompt_tuning_xxl.gin", "qqp_to_mrpc/seed0")
  assert "taskless_glue_mrpc_from_qqp_v002/decode/accuracy=" in out and "data: glue_qqp_v002[train]" in out


@pytest.mark.paper_table
def test_prefix_vs_prompt_dry_run_trains_prefix_tuning(tmp_path):
  _, out = _table(tmp_path, "prefix_vs_prompt", "paper/prefix_tuning_base.gin", "prefix/WSC/seed0")
  assert "method: prefix" in out
  assert "super_glue_wsc_v102_simple_eval" in out  # WSC trains on simple_train and is decoded on simple_eval.


@pytest.mark.paper_table
def test_xprompt_fewshot_dry_run_runs_every_stage_of_one_run(tmp_path):
  result, out = _table(tmp_path, "xprompt_fewshot", "paper/xprompt_large.gin", "RTE/seed0")
  for stage in ("stage pt", "stage importance", "pruned at 90%", "stage rewind_r"):
    assert stage in out, stage
  record = json.loads((tmp_path / "RTE" / "seed0" / "result.json").read_text())
  assert set(record["variants"]) == {"prompt_tuning", "xprompt"}
  assert len(json.loads((tmp_path / "RTE" / "seed0" / "shots.json").read_text())["indices"]) == 32
  assert result["quote_columns"] == ["paper (quoted)"]


@pytest.mark.paper_table
@pytest.mark.slow
def test_xprompt_superglue_dry_run_selects_multircs_best_checkpoint_by_f1(tmp_path):
  result, out = _table(tmp_path, "xprompt_superglue", "paper/xprompt_xxl.gin", "MultiRC/seed0")
  assert "stage rewind_r" in out
  record = json.loads((tmp_path / "MultiRC" / "seed0" / "result.json").read_text())
  assert set(record["variants"]) == {"prompt_tuning", "xprompt"}  # Controls are off in the SuperGLUE table.
  # Decoded and ranked (EvalConfig.mode='both'), the checkpoint selected on the decoded F1a.
  assert set(record["variants"]["xprompt"]["eval"]["super_glue_multirc_v102"]) >= {
      "decode/f1", "decode/exact_match", "rank/f1", "rank/exact_match"}
  assert result["quote_columns"] == ["paper (quoted)"]  # XXL: the paper's best scores, labelled as a quote.


@pytest.mark.paper_table
@pytest.mark.slow
def test_xprompt_controls_dry_run_runs_every_control_and_the_random_uniform_init(tmp_path):
  result, _ = _table(tmp_path, "xprompt_controls", "paper/xprompt_xl.gin", "CB/*")
  record = json.loads((tmp_path / "CB" / "seed0" / "result.json").read_text())
  assert set(record["variants"]) == {"prompt_tuning", "xprompt", "reversed", "random", "length", "token_only",
                                     "piece_only"}
  uniform = json.loads((tmp_path / "CB" / "random_uniform_seed0" / "result.json").read_text())
  assert set(uniform["variants"]) == {"prompt_tuning", "xprompt"}
  cells = [c for label, c in ((r["label"], r["cells"]) for r in result["rows"])]
  assert len(cells) == 9 and all(base.MISSING not in row[0] for row in cells)  # CB's column, every row.


@pytest.mark.paper_table
@pytest.mark.slow
def test_mpt_ablations_dry_run_trains_a_source_variant_and_its_target(tmp_path):
  result, out = _table(tmp_path, "mpt_ablations", "paper/mpt_base.gin", "teachers/glue_*", "teachers/squad_*",
                       "teachers/super_glue_*", "source/distance", "distance/MultiRC")
  assert out.count("(mpt_teacher)") == 6 and "source/distance (mpt_source)" in out
  record = json.loads((tmp_path / "distance" / "MultiRC" / "result.json").read_text())
  assert {"decode/f1", "rank/f1"} <= set(record["eval"]["super_glue_multirc_v102"])
  row = _cells(result, "distance: prompt-distance (MSE) loss instead of logits + hidden distillation")
  assert base.MISSING not in row[0]  # MultiRC, the first target column.


@pytest.mark.paper_table
@pytest.mark.slow
def test_mpt_dry_run_chains_teachers_source_and_a_target(tmp_path):
  result, out = _table(tmp_path, "mpt_glue_superglue", "paper/mpt_base.gin", "teachers/*", "seed0/source",
                       "seed0/MNLI")
  assert out.count("(mpt_teacher)") == 6 and "seed0/source (mpt_source)" in out
  record = json.loads((tmp_path / "seed0" / "MNLI" / "result.json").read_text())
  assert set(record["eval"]) == {"glue_mnli_matched_v002", "glue_mnli_mismatched_v002"}  # As T5 reports MNLI.
  assert (tmp_path / "seed0" / "source" / "stage" / "mpt_source.npz").exists()
  # The MRQA + Others and few-shot tables reuse those teachers and that source prompt in the same results dir.
  _, out = _table(tmp_path, "mpt_mrqa_others", "paper/mpt_base.gin", "seed0/NQ", "seed0/Yelp-2")
  assert "(mpt_teacher)" not in out and "(mpt_source)" not in out
  nq = json.loads((tmp_path / "seed0" / "NQ" / "result.json").read_text())
  assert set(nq["eval"]["mrqa_natural_questions_v100"]) == {"decode/em", "decode/f1"}
  _, out = _table(tmp_path, "mpt_fewshot", "paper/mpt_base.gin", "fewshot/4shot/CB/draw3")
  few = json.loads((tmp_path / "fewshot" / "4shot" / "CB" / "draw3" / "result.json").read_text())
  assert (few["shots"], few["draw"]) == (4, 3) and "decode/accuracy" in few["eval"]["super_glue_cb_v102"]


@pytest.mark.slow
@pytest.mark.parametrize("table,gin_file", [("lester_superglue", "paper/prompt_tuning_xxl.gin"),
                                            ("prefix_vs_prompt", "paper/prefix_tuning_small.gin"),
                                            ("xprompt_superglue", "paper/xprompt_xxl.gin"),
                                            ("xprompt_fewshot", "paper/xprompt_xl.gin"),
                                            ("xprompt_controls", "paper/xprompt_xl.gin"),
                                            ("mpt_glue_superglue", "paper/mpt_base.gin"),
                                            ("mpt_ablations", "paper/mpt_base.gin"),
                                            ("mpt_mrqa_others", "paper/mpt_base.gin"),
                                            ("mpt_fewshot", "paper/mpt_base.gin"),
                                            ("lester_init", "paper/prompt_tuning_base.gin"),
                                            ("lester_length", "paper/prompt_tuning_base.gin"),
                                            ("lester_objective", "paper/prompt_tuning_base.gin"),
                                            ("lester_lm_steps", "paper/prompt_tuning_base.gin"),
                                            ("lester_mrqa", "paper/prompt_tuning_xxl.gin"),
                                            ("lester_paraphrase", "paper/prompt_tuning_xxl.gin")])
def test_whole_table_dry_run_fills_every_cell(tmp_path, table, gin_file):
  result, out = _table(tmp_path, table, gin_file, timeout=7200)
  assert result["unfinished"] == [] and result["failures"] == [], out[-3000:]
  assert not [c for r in result["rows"] for c in r["cells"] if base.MISSING in c.split("/")]
