"""Lester et al.'s Figure 3 sweeps and domain-transfer tables without training: their jobs (the bindings that make
each design point), the cells and figure gathered from synthetic records (computed here by hand), and the
lm_adapt backbone hand-over."""
import json

import pytest

from xprompt_jax import tables
from xprompt_jax.commands import table_jobs
from xprompt_jax.tables import base
from xprompt_jax.tables import benchmarks
from xprompt_jax.tables import lester
from xprompt_jax.tables import lester_sweeps as ls
from xprompt_jax.tables import lester_transfer as lt
from xprompt_jax.tables import render


def _jobs(name):
  return {j.folder: j for j in tables.get_table(name).jobs()}


def test_each_sweep_changes_one_setting_of_the_default_point():
  init = _jobs("lester_init")
  assert len(init) == 3 * 8 * 3
  rte = init["random_uniform-L100-lm100k/RTE/seed1"].bindings
  assert "PromptTuning.prompt_init = 'random_uniform'" in rte and not any(b.startswith("CLASS_LABELS") for b in rte)
  assert "PromptTuning.length = 100" in rte and "MIXTURE_OR_TASK_NAME = 'taskless_super_glue_rte_v102'" in rte
  default = init["class_labels-L100-lm100k/CB/seed0"].bindings
  assert "CLASS_LABELS = ('entailment', 'contradiction', 'neutral')" in default
  assert not any("SPAN_CORRUPTION" in b for b in default)  # The paper config's LM-adapted checkpoint.
  length = _jobs("lester_length")
  assert {f.split("/")[0] for f in length} == {"sampled_vocab-L1-lm100k", "class_labels-L5-lm100k",
                                                "class_labels-L20-lm100k", "class_labels-L100-lm100k",
                                                "class_labels-L150-lm100k"}
  assert "PromptTuning.length = 150" in length["class_labels-L150-lm100k/WiC/seed2"].bindings


def test_the_objective_sweep_loads_the_span_corruption_checkpoint_and_the_sentinel_tasks():
  jobs = _jobs("lester_objective")
  sc = jobs["class_labels-L100-sc/RTE/seed0"]
  assert "INITIAL_CHECKPOINT_PATH = %SPAN_CORRUPTION_CHECKPOINT_PATH" in sc.bindings
  sentinel = jobs["class_labels-L100-sc_sentinel/RTE/seed0"]
  assert sentinel.task == "sentinel_taskless_super_glue_rte_v102"
  assert "CLASS_LABELS = ('entailment', 'not_entailment')" in sentinel.bindings  # Labels of the base task.
  assert "INITIAL_CHECKPOINT_PATH = %SPAN_CORRUPTION_CHECKPOINT_PATH" in sentinel.bindings
  # Tables that share a results dir share the design points they have in common.
  assert set(jobs) & set(_jobs("lester_lm_steps")) >= {"class_labels-L100-sc/RTE/seed0",
                                                        "class_labels-L100-lm100k/RTE/seed0"}


def test_the_lm_steps_sweep_makes_its_own_backbones_first():
  jobs = tables.get_table("lester_lm_steps").jobs()
  assert jobs[0].folder == ls.LM_ADAPT_FOLDER and jobs[0].kind == "lm_adapt"
  assert "PretrainConfig.export_steps = (10000,)" in jobs[0].bindings
  assert "PretrainConfig.num_train_steps = 50000" in jobs[0].bindings
  by = {j.folder: j for j in jobs}
  ten = by["class_labels-L100-lm10k/BoolQ/seed0"]
  assert ten.needs == ("lm_adapt",) and ten.option("backbone_export") == ("lm_adapt", 0)
  assert by["class_labels-L100-lm50k/BoolQ/seed0"].option("backbone_export") == ("lm_adapt", 1)
  assert by["class_labels-L100-lm100k/BoolQ/seed0"].needs == ()


def test_backbone_bindings_point_at_the_export_or_say_what_is_missing(tmp_path):
  job = _jobs("lester_lm_steps")["class_labels-L100-lm50k/RTE/seed0"]
  (tmp_path / "lm_adapt").mkdir()
  (tmp_path / "lm_adapt" / "result.json").write_text(json.dumps({"exports": [10000, 50000]}))
  path = str(tmp_path / "lm_adapt" / "export" / "checkpoint_50000")
  assert table_jobs.backbone_bindings(job, str(tmp_path)) == [f"INITIAL_CHECKPOINT_PATH = {path!r}",
                                                              f"TrainConfig.initial_checkpoint = {path!r}"]
  (tmp_path / "lm_adapt" / "result.json").write_text(json.dumps({"exports": [10000]}))
  with pytest.raises(ValueError, match=r"loads export 1 of lm_adapt, which made 1 \(\[10000\]\); rerun lm_adapt"):
    table_jobs.backbone_bindings(job, str(tmp_path))
  assert table_jobs.backbone_bindings(_jobs("lester_init")["class_labels-L100-lm100k/RTE/seed0"], "x") == []


def _record(column, value, rank=True):
  metrics = {f"decode/{k}": value for k in column.metrics}
  if rank and benchmarks.can_rank(column):
    metrics.update({f"rank/{k}": value - 10 for k in column.metrics})
  return {"last": {n: dict(metrics) for n in benchmarks.eval_tasks(column)}}


def test_sweep_gather_mean_and_std_over_seeds_and_a_figure():
  table = tables.get_table("lester_init")
  records = {}
  for _, point in table.rows:
    for column in table._columns(point):  # pylint: disable=protected-access
      for seed in ls.SEEDS:
        records[table.folder(point, column, seed)] = _record(column, 60.0 + 3 * seed)  # 60, 63, 66.
  del records["random_uniform-L100-lm100k/CB/seed2"]
  grid = table.gather(records, "xl")
  rows = dict(grid.rows)
  assert rows["class label"][0] == "63.0"
  # Per seed the SuperGLUE score is 60 + 3 s (every metric equal): mean 63, std of (60, 63, 66) = 2.449.
  assert rows["class label"][-2:] == ["63.0 ± 2.4", "53.0 ± 2.4"]
  assert rows["random uniform"][1] == base.MISSING and rows["random uniform"][-2] == base.MISSING
  series = grid.plot["series"]["SuperGLUE score (decoding)"]
  assert series[0] == ("random uniform", None, None) and series[2][0] == "class label"
  assert series[2][1] == pytest.approx(63.0)
  assert render.plot_png(grid)[:4] == b"\x89PNG"
  assert "plot, not numbers" in " ".join(grid.notes)


def test_mrqa_gather_quotes_the_paper_beside_xxl_only():
  table = tables.get_table("lester_mrqa")
  assert [j.folder for j in table.jobs()] == ["squad/seed0", "squad/seed1", "squad/seed2"]
  job = table.jobs()[0]
  assert "TASK_FEATURE_LENGTHS = {'inputs': 512, 'targets': 32}" in job.bindings
  evals = next(b for b in job.bindings if b.startswith("TrainConfig.eval_tasks"))
  assert "'mrqa_textbook_qa_v100'" in evals and "'squad_v010_allanswers'" in evals
  records = {f"squad/seed{s}": {"last": {t: {"decode/f1": 70.0 + s, "decode/em": 50.0} for _, t, _ in lt.MRQA_SETS}}
             for s in lt.SEEDS}
  grid = table.gather(records, "xxl")
  assert dict(grid.rows)["TextbookQA (Book)"] == ["71.0 ± 0.8", "50.0 ± 0.0"]
  assert grid.quotes["TextbookQA (Book)"] == ("54.3 ± 3.7", "66.8 ± 2.9")
  assert set(grid.plot["series"]) == {"prompt tuning (these runs)", "paper (quoted): prompt tuning",
                                      "paper (quoted): model tuning"}
  assert table.gather(records, "base").quote_columns == []


def test_paraphrase_jobs_evaluate_the_source_and_the_target_zero_shot():
  jobs = _jobs("lester_paraphrase")
  qqp = jobs["qqp_to_mrpc/seed1"].bindings
  assert "MIXTURE_OR_TASK_NAME = 'taskless_glue_qqp_v002'" in qqp
  assert "TrainConfig.eval_tasks = ('taskless_glue_qqp_v002', 'taskless_glue_mrpc_from_qqp_v002')" in qqp
  assert "CLASS_LABELS = ('not_duplicate', 'duplicate')" in qqp
  task = "taskless_glue_mrpc_from_qqp_v002"
  records = {f"qqp_to_mrpc/seed{s}": {"last": {task: {"decode/accuracy": 70.0, "decode/f1": 80.0,
                                                      "rank/accuracy": 60.0, "rank/f1": 65.0}}} for s in lt.SEEDS}
  cells = dict(tables.get_table("lester_paraphrase").gather(records, "xxl").rows)[
      "train QQP, evaluate MRPC (zero-shot)"]
  assert cells == ["70.0 ± 0.0 / 80.0 ± 0.0", "— / —", "60.0 ± 0.0 / 65.0 ± 0.0"]


def test_the_sweeps_reuse_the_main_tables_prompt_bindings():
  column = lester.COLUMNS_TASKLESS[1]
  assert ls.DEFAULT.bindings(column, 3)[:-1] == lester.prompt_bindings(column.task, 3)
