"""The MPT tables without training: the job graph (teachers -> source -> targets, the ablation rows' sources shared
where they agree), the cells gathered from synthetic records, and the structured mock rows of the dry run."""
import pytest

from xprompt_jax import tables
from xprompt_jax.tables import benchmarks
from xprompt_jax.tables import mpt_tables
from xprompt_jax.tasks import mixtures


def test_main_table_jobs_chain_teachers_sources_and_13_targets_per_seed():
  jobs = {j.folder: j for j in tables.get_table("mpt_glue_superglue").jobs()}
  assert len(jobs) == 6 + 3 * (1 + 13)
  source = jobs["seed1/source"]
  assert source.kind == "mpt_source" and source.needs == tuple(f"teachers/{t}" for t in mixtures.MPT_SOURCE_TASKS)
  assert "TrainConfig.seed = 1" in source.bindings
  mnli = jobs["seed1/MNLI"]
  assert mnli.kind == "mpt_target" and mnli.needs == ("seed1/source",) and mnli.task == "glue_mnli_v002"


def test_ablation_jobs_share_the_full_source_for_target_only_rows():
  jobs = {j.folder: j for j in tables.get_table("mpt_ablations").jobs()}
  assert sorted(f for f in jobs if f.startswith("source/")) == [
      "source/decomposition_only", "source/distance", "source/distillation_only", "source/full", "source/neither",
      "source/no_hidden", "source/no_task_sampling", "source/sources_12"]
  assert jobs["task_only/CB"].needs == ("source/full",) and jobs["shared_only/WSC"].needs == ("source/full",)
  assert jobs["no_hidden/CB"].needs == ("source/no_hidden",)
  assert len(jobs["source/sources_12"].needs) == 12 and len(jobs["source/full"].needs) == 6
  assert dict(jobs["task_only/CB"].options)["ablation"] == "task_only"


def _target(column, value):
  """A finished target job evaluated in both modes (ranked = decoded - 10; free-text answers decoded only)."""
  metrics = {f"decode/{k}": value for k in column.metrics}
  if benchmarks.can_rank(column):
    metrics.update({f"rank/{k}": value - 10 for k in column.metrics})
  return {"eval": {n: dict(metrics) for n in benchmarks.eval_tasks(column)}}


def test_main_gather_glue_and_superglue_averages():
  table = tables.get_table("mpt_glue_superglue")
  records = {f"seed{s}/{c.label}": _target(c, 60.0 + s) for c in table.columns() for s in mpt_tables.SEEDS}
  grid = table.gather(records, "base")
  (label, cells), = grid.rows
  # Mean ± std over the 3 seeds (60, 61, 62), as the paper reports them.
  assert cells[0] == "61.0 ± 0.8" and cells[-4:] == ["61.0", "61.0", "51.0", "51.0"] and grid.empty_cells() == []
  assert cells[1] == "61.0 ± 0.8 / 61.0 ± 0.8"  # QQP: acc / F1.
  assert "74.1" in grid.quotes["MPT"][0]
  records["seed2/CoLA"] = _target(benchmarks.GLUE[-1], float("nan"))  # An undefined metric is shown, not missing.
  assert table.gather(records, "base").rows[0][1][7].startswith("nan ± ")


def test_ablation_gather_quotes_the_base_averages():
  table = tables.get_table("mpt_ablations")
  records = {f"full/{c.label}": _target(c, 70.0) for c in mpt_tables.super_glue_targets()}
  grid = table.gather(records, "base")
  full = next(r for r in grid.rows if r[0].startswith("full:"))
  assert full[1][-2:] == ["70.0", "60.0"] and grid.quotes[full[0]] == ["74.1"]
  decomposition = next(r for r in grid.rows if r[0].startswith("decomposition_only:"))
  assert grid.quotes[decomposition[0]] == ["+3.5 % over 'neither'"]
  assert table.gather(records, "small").quote_columns == []


def test_structured_mock_rows_are_valid_multiple_choice_examples():
  pytest.importorskip("tensorflow_datasets")
  import seqio
  import tasks  # noqa: F401  (registers the tasks)
  from xprompt_jax.tables import dry_run
  with dry_run.data_sources():
    for name in ("race_high_v200", "ai2_arc_challenge_v100", "hellaswag_v110"):
      ds = seqio.get_mixture_or_task(name).get_dataset({"inputs": 64, "targets": 4}, split="train", shuffle=False)
      rows = list(ds.as_numpy_iterator())
      assert rows and all(r["targets_pretokenized"] in (b"A", b"B", b"C", b"D") for r in rows), name


def test_mrqa_others_targets_share_the_main_tables_teachers_and_sources():
  main = {j.folder: j for j in tables.get_table("mpt_glue_superglue").jobs()}
  jobs = {j.folder: j for j in tables.get_table("mpt_mrqa_others").jobs()}
  shared = [f for f in jobs if f.startswith(("teachers/", "seed0/source", "seed1/source", "seed2/source"))]
  assert len(shared) == 6 + 3 and all(jobs[f] == main[f] for f in shared)
  assert len(jobs) == 6 + 3 * (1 + 8)
  nq = jobs["seed2/NQ"]
  assert nq.task == "mrqa_natural_questions_v100" and nq.needs == ("seed2/source",)
  assert "TASK_FEATURE_LENGTHS = {'inputs': 512, 'targets': 32}" in nq.bindings
  assert "EvalConfig.split = 'test'" in jobs["seed0/Yelp-2"].bindings  # Yelp-2 has no dev set.
  assert not any("split" in b for b in jobs["seed0/SciTail"].bindings)


def test_mrqa_others_gather_averages_each_benchmark():
  table = tables.get_table("mpt_mrqa_others")
  records = {f"seed{s}/{c.label}": _target(c, 50.0 + 10 * (c in mpt_tables.MRQA)) for c in table.columns()
             for s in mpt_tables.SEEDS}
  (_, cells), = table.gather(records, "base").rows
  assert cells[0] == "60.0 ± 0.0" and cells[-3:] == ["60.0", "50.0", "40.0"]  # MRQA F1 is free text: no rank.


def test_fewshot_jobs_adapt_the_seed0_source_on_ten_draws_of_each_k():
  jobs = tables.get_table("mpt_fewshot").jobs()
  targets = [j for j in jobs if j.kind == "mpt_target"]
  assert len(targets) == 3 * 3 * 10 and {j.needs for j in targets} == {("seed0/source",)}
  job = {j.folder: j for j in targets}["fewshot/16shot/SciTail/draw7"]
  assert job.task == "scitail_v100" and job.option("shots") == 16 and job.option("draw") == 7
  assert "TrainConfig.seed = 7" in job.bindings


def test_fewshot_gather_means_the_draws():
  table = tables.get_table("mpt_fewshot")
  records = {mpt_tables.few_shot_folder(k, c, d): _target(c, float(k + d)) for k in mpt_tables.SHOTS
             for c in table.columns() for d in mpt_tables.DRAWS}
  rows = dict(table.gather(records, "base").rows)
  assert rows["k = 4"][0] == "8.5" and rows["k = 32"][-2:] == ["36.5", "26.5"]  # mean of k + 0..9
  del records["fewshot/4shot/CB/draw3"]
  assert dict(table.gather(records, "base").rows)["k = 4"][1] == "—"
