"""The paper-table machinery without training: job lists, selection, resume, failures and the gathered cells
(computed here by hand from synthetic records)."""
import json

import pytest

from xprompt_jax import tables
from xprompt_jax.tables import base
from xprompt_jax.tables import benchmarks
from xprompt_jax.tables import lester
from xprompt_jax.tables import prefix_prompt
from xprompt_jax.tables import render
from xprompt_jax.tables import runner
from xprompt_jax.training import stages


def _eval_names(column):
  return benchmarks.eval_tasks(column)


def _train_record(column, value, rank_offset=-5.0):
  """A finished train job evaluated as the paper configs do (EvalConfig.mode='both'): every decoded metric is
  `value` (CB's F1 = value / 2), every ranked one `value + rank_offset` (none for free-text answers)."""
  metrics = {}
  for mode, v in (("decode", value), ("rank", value + rank_offset)):
    if mode == "rank" and not benchmarks.can_rank(column):
      continue
    metrics.update({f"{mode}/{k}": (v / 2 if k in ("mean_3class_f1", "f1") else v) for k in column.metrics})
  return {"last": {name: dict(metrics) for name in _eval_names(column)}}


def test_every_table_is_registered_and_has_jobs_with_unique_folders():
  for name in tables.TABLES:
    table = tables.get_table(name)
    assert table.name == name
    jobs = table.jobs()
    folders = [j.folder for j in jobs]
    assert len(folders) == len(set(folders)), name
    assert {j.kind for j in jobs} <= set(runner.KINDS), name
    for job in jobs:  # Dependencies come first, so one pass runs a whole table.
      assert all(folders.index(n) < folders.index(job.folder) for n in job.needs), (name, job.folder)


def test_unknown_table_and_wrong_config_are_one_line_errors():
  with pytest.raises(ValueError, match=r"--table='nope' is not a paper table; known: lester_superglue"):
    tables.get_table("nope")
  table = tables.get_table("lester_superglue")
  assert table.size_of("paper/prompt_tuning_xxl.gin") == "xxl"
  assert table.size_of("/abs/gin/paper/prompt_tuning_small.gin") == "small"
  with pytest.raises(ValueError, match=r"reads the paper configs paper/prompt_tuning_small.gin.*got "
                                       r"--gin_file='paper/mpt_base.gin'"):
    table.size_of("paper/mpt_base.gin")


def test_lester_jobs_are_40_prompts_and_8_ensembles():
  jobs = tables.get_table("lester_superglue").jobs()
  assert len([j for j in jobs if j.kind == "train"]) == 40
  ensembles = [j for j in jobs if j.kind == "ensemble"]
  assert [j.folder for j in ensembles] == [f"{c.label}/ensemble" for c in benchmarks.SUPER_GLUE]
  cb = [j for j in jobs if j.folder == "CB/prompt3"][0]
  assert "TrainConfig.seed = 3" in cb.bindings and "CLASS_LABELS = ('entailment', 'contradiction', 'neutral')" in \
      cb.bindings
  record = [j for j in jobs if j.folder == "ReCoRD/prompt0"][0]
  assert "PromptTuning.prompt_init = 'sampled_vocab'" in record.bindings
  # Lester et al.: "task names prepended to inputs are omitted" (prompt-tuning's taskless_* tasks).
  assert "MIXTURE_OR_TASK_NAME = 'taskless_super_glue_cb_v102'" in cb.bindings and cb.task.startswith("taskless_")


def test_lester_gather_mean_best_ensemble_and_superglue_score():
  records = {}
  for column in lester.COLUMNS_TASKLESS:
    for k in range(lester.NUM_PROMPTS):
      records[lester.prompt_folder(column, k)] = _train_record(column, 60.0 + 10 * k)  # 60, 70, ..., 100.
    ens = _train_record(column, 90.0)["last"]
    records[f"{column.label}/ensemble"] = {"eval": {t: {"ensemble": m} for t, m in ens.items()}}
  grid = tables.get_table("lester_superglue").gather(records, "xxl")
  rows = dict(grid.rows)
  # Decoded cells, then the rank column (ranked = decoded - 5 here); ReCoRD and WSC have no label words to rank.
  assert rows["RTE (acc)"] == ["80.0", "100.0", "90.0", "75.0"]
  assert rows["CB (acc/F1)"] == ["80.0/40.0", "100.0/50.0", "90.0/45.0", "75.0/37.5"]
  assert rows["ReCoRD (EM/F1)"][3] == rows["WSC (acc)"][3] == base.NA
  # Task score = mean of its metrics: 5 one-metric tasks at 80 and 3 two-metric tasks at (80 + 40) / 2 = 60.
  assert rows["SuperGLUE score"][0] == f"{(5 * 80 + 3 * 60) / 8:.1f}"
  # The rank score: the 6 rankable tasks (4 one-metric at 75, CB and MultiRC at (75 + 37.5) / 2).
  assert rows["SuperGLUE score"][3] == f"{(4 * 75 + 2 * 56.25) / 6:.1f}"
  assert grid.quotes["RTE (acc)"] == ("92.6", "93.5", "93.5") and grid.empty_cells() == []
  text = render.markdown(grid)
  assert "| RTE (acc) | 80.0 | 100.0 | 90.0 | 75.0 | 92.6 | 93.5 | 93.5 |" in text and "paper (quoted)" in text
  assert "not ReCoRD, WSC: free-text answers" in " ".join(grid.notes)


def test_each_prompt_counts_at_its_best_checkpoint_by_the_decoded_selection_metric():
  column = lester.COLUMNS_TASKLESS[3]  # MultiRC: selected by F1a.
  name = _eval_names(column)[0]
  assert lester.select_key(column.task) == f"{name}/decode/f1"
  assert "TrainConfig.best_metric = 'taskless_super_glue_wsc_v102_simple_eval/decode/accuracy'" in \
      lester.prompt_bindings("taskless_super_glue_wsc_v102_simple_train", 0)
  evals = [[step, {"decode/f1": f1, "decode/exact_match": em}]
           for step, f1, em in ((1000, 50.0, 9.0), (2000, 70.0, 1.0), (3000, 70.0, 2.0), (4000, 60.0, 3.0))]
  record = {"evals": {name: evals}, "last": {name: evals[-1][1]}}
  assert lester.best_eval(record, column.task) == {name: evals[1][1]}  # The first best, not the last.
  assert lester.best_eval(None, column.task) is None


def test_a_run_evaluated_in_one_mode_fills_the_decoded_cells_only():
  column = lester.COLUMNS_TASKLESS[5]  # RTE
  plain = {"last": {n: {"accuracy": 70.0} for n in _eval_names(column)}}
  assert benchmarks.task_metrics(column, plain["last"]) == [70.0]
  assert benchmarks.task_metrics(column, plain["last"], "rank") is None
  both = _train_record(column, 70.0)["last"]
  assert benchmarks.task_metrics(column, both, "rank") == [65.0] and benchmarks.task_metrics(column, both) == [70.0]
  with pytest.raises(ValueError, match="mode must be one of"):
    benchmarks.task_metrics(column, both, "score")


def test_a_missing_run_leaves_its_cells_empty_and_other_sizes_have_no_quotes():
  records = {lester.prompt_folder(lester.COLUMNS_TASKLESS[0], k): _train_record(lester.COLUMNS_TASKLESS[0], 50.0)
             for k in range(4)}  # BoolQ's 5th prompt missing.
  grid = tables.get_table("lester_superglue").gather(records, "base")
  assert dict(grid.rows)["BoolQ (acc)"] == [base.MISSING] * 4
  assert "BoolQ (acc) / mean of 5" in grid.empty_cells()
  assert grid.quote_columns == [] and "none at base" in grid.notes[0]


def test_a_run_from_before_the_taskless_tasks_is_an_error_not_an_empty_cell():
  records = {lester.prompt_folder(benchmarks.SUPER_GLUE[0], 0): _train_record(benchmarks.SUPER_GLUE[0], 50.0)}
  with pytest.raises(ValueError, match=r"BoolQ/prompt0 holds a run evaluated on \['super_glue_boolq_v102'\], not on "
                                       r"\['taskless_super_glue_boolq_v102'\]"):
    tables.get_table("lester_superglue").gather(records, "xxl")


def test_prefix_vs_prompt_rows_are_seed_means():
  table = tables.get_table("prefix_vs_prompt")
  jobs = table.jobs()
  assert len(jobs) == 2 * 8 * len(prefix_prompt.SEEDS)
  assert "get_method.name = 'prompt'" in [j for j in jobs if j.folder == "prompt/RTE/seed0"][0].bindings
  assert not any("get_method" in b for b in [j for j in jobs if j.folder == "prefix/RTE/seed0"][0].bindings)
  assert [j for j in jobs if j.folder == "prefix/RTE/seed0"][0].task == "taskless_super_glue_rte_v102"
  records = {j.folder: _train_record(next(c for c in lester.COLUMNS_TASKLESS if c.task == j.task), 40.0 + 10 * j.seed)
             for j in jobs}
  rows = dict(table.gather(records, "base").rows)
  assert rows["Prefix tuning (L = 10, MLP)"][benchmarks.SUPER_GLUE.index(benchmarks.by_label(
      benchmarks.SUPER_GLUE, ["RTE"])[0])] == "50.0"


def test_run_jobs_resumes_waits_and_reports_failures(tmp_path):
  jobs = [base.Job("a", "train"), base.Job("b", "train"), base.Job("c", "ensemble", needs=("a", "b"))]
  calls = []

  def execute(job, run_dir):
    calls.append(job.folder)
    if job.folder == "b":
      raise RuntimeError("boom\nsecond line")
    return {"done": job.folder}

  records, failures, waiting = runner.run_jobs(str(tmp_path), jobs, jobs, execute)
  assert calls == ["a", "b"] and records == {"a": {"done": "a"}}
  assert failures == ["b: RuntimeError: boom"] and waiting == ["c (needs b)"]
  assert not (tmp_path / "b" / stages.RESULT).exists()
  calls.clear()
  records, failures, waiting = runner.run_jobs(str(tmp_path), jobs, jobs, lambda j, d: calls.append(j.folder) or {})
  assert calls == ["b", "c"] and not failures and not waiting  # a is read back, not rerun.
  assert json.loads((tmp_path / "a" / stages.RESULT).read_text()) == {"done": "a"}


def test_a_preempted_job_stops_the_table_and_leaves_no_record(tmp_path):
  jobs = [base.Job("a", "train"), base.Job("b", "train")]

  def execute(job, run_dir):
    stages.check_preempted({"preempted": True, "step": 7}, run_dir)

  with pytest.raises(stages.Preempted, match=r"preempted in .*a at step 7"):
    runner.run_jobs(str(tmp_path), jobs, jobs, execute)
  assert runner.read_records(str(tmp_path), jobs) == {}


def test_select_by_glob_and_a_pattern_matching_nothing_is_an_error():
  jobs = tables.get_table("lester_superglue").jobs()
  assert [j.folder for j in runner.select(jobs, ["CB/*"])] == [f"CB/prompt{k}" for k in range(5)] + ["CB/ensemble"]
  with pytest.raises(ValueError, match=r"--runs pattern 'cb/\*' matches no run of this table"):
    runner.select(jobs, ["cb/*"])


def test_unknown_job_kind_is_refused_before_anything_runs(tmp_path):
  with pytest.raises(ValueError, match=r"table job x: unknown kind 'fit'"):
    runner.run_jobs(str(tmp_path), [base.Job("x", "fit")], [], lambda j, d: {})


def test_xprompt_and_mpt_tables_refuse_a_gs_results_dir_up_front():
  from cli_helpers import run_cli
  code, out = run_cli("table", "--table=xprompt_fewshot", "--gin_file=paper/xprompt_xl.gin",
                      "--results_dir=gs://bucket/xprompt", "--runs=RTE/seed0", timeout=300)
  assert code == 1 and "is refused for the xprompt runs of --table=xprompt_fewshot: its stage files" in out, \
      out[-2000:]
  assert "gcsfuse" in out and "Traceback" not in out
  code, out = run_cli("mpt", "--gin_file=paper/mpt_base.gin", "--model_dir=gs://bucket/mpt", timeout=300)
  assert code == 1 and "--model_dir=gs://bucket/mpt is refused for MPT" in out and "Traceback" not in out, out[-2000:]
