"""The XPrompt tables without training: their jobs (one xprompt run per task x seed x setting, with the bindings
that make it that run) and the cells gathered from synthetic job records (computed here by hand)."""
from xprompt_jax import tables
from xprompt_jax.commands import table_jobs_xprompt
from xprompt_jax.tables import benchmarks
from xprompt_jax.tables import xprompt_tables as xt


def _record(column, values):
  """A finished xprompt job evaluated in both modes: variant -> every decoded metric of every eval task = value,
  every ranked one value - 1 (none for free-text answers)."""
  names = benchmarks.eval_tasks(column)

  def metrics(x):
    out = {f"decode/{k}": x for k in column.metrics}
    if benchmarks.can_rank(column):
      out.update({f"rank/{k}": x - 1 for k in column.metrics})
    return out

  return {"variants": {v: {"eval": {n: metrics(x) for n in names}} for v, x in values.items()}}


def test_superglue_jobs_are_7_tasks_x_3_seeds_without_controls():
  jobs = tables.get_table("xprompt_superglue").jobs()
  # The seed: the 7 SuperGLUE tasks without ReCoRD.
  assert len(jobs) == 7 * 3 and {j.kind for j in jobs} == {"xprompt"}
  assert not [j for j in jobs if j.folder.startswith("ReCoRD/")]
  multirc = [j for j in jobs if j.folder == "MultiRC/seed2"][0]
  assert "XPromptPipelineConfig.select_metric = 'decode/f1'" in multirc.bindings
  assert "TrainConfig.seed = 2" in multirc.bindings and "XPromptPipelineConfig.control_seed = 2" in multirc.bindings
  assert "XPromptPipelineConfig.reversed_control = False" in multirc.bindings


def test_fewshot_and_controls_jobs():
  few = tables.get_table("xprompt_fewshot").jobs()
  assert [j.folder for j in few][:3] == ["BoolQ/seed0", "BoolQ/seed1", "BoolQ/seed2"] and len(few) == 9
  assert "XPromptPipelineConfig.num_shots = 32" in few[0].bindings
  controls = tables.get_table("xprompt_controls").jobs()
  assert [j.folder for j in controls] == ["CB/seed0", "RTE/seed0", "WiC/seed0", "WSC/seed0", "CB/random_uniform_seed0",
                                          "RTE/random_uniform_seed0", "WiC/random_uniform_seed0",
                                          "WSC/random_uniform_seed0"]
  assert "XPromptPipelineConfig.token_only = True" in controls[0].bindings
  uniform = controls[4].bindings  # The later binding wins: the initialisation runs have no controls.
  assert uniform[-1] == "XPromptPipelineConfig.piece_only = False" and "XPrompt.prompt_init = 'random_uniform'" in \
      uniform


def test_superglue_gather_means_seeds_per_variant_and_quotes_xxl():
  table = tables.get_table("xprompt_superglue")
  records = {}
  for column in benchmarks.SUPER_GLUE:
    for seed in xt.SEEDS:
      records[table.folder(column, seed)] = _record(column, {"prompt_tuning": 50.0 + seed, "xprompt": 70.0 + seed})
  grid = table.gather(records, "xxl")
  rows = dict(grid.rows)
  assert rows["XPrompt"][:2] == ["71.0", "71.0/71.0"] and rows["XPrompt"][-2:] == ["71.0", "70.0"]
  assert rows["Prompt tuning (PT stage)"][0] == "51.0" and grid.empty_cells() == []
  assert "WSC 97.11" in grid.quotes["XPrompt"][0]
  del records["CB/seed1"]
  assert "XPrompt / CB (acc/F1)" in table.gather(records, "base").empty_cells()


def test_controls_gather_reads_every_variant_and_the_initialisation_rows():
  table = tables.get_table("xprompt_controls")
  records = {}
  for column in benchmarks.by_label(benchmarks.SUPER_GLUE, xt.CONTROL_TASKS):
    records[table.folder(column, 0)] = _record(column, {v: 10.0 * i for i, v in enumerate(xt.VARIANTS)})
    records[table.folder(column, 0, "random_uniform")] = _record(column, {"prompt_tuning": 5.0, "xprompt": 6.0})
  rows = dict(table.gather(records, "xl").rows)
  assert rows["Reversed XPrompt"][1] == "20.0" and rows["piece-level pruning only"][1] == "60.0"
  # WSC (free-text referents) has no rank number: the rank mean is over CB, RTE and WiC.
  assert rows["XPrompt (random uniform init)"] == ["6.0/6.0", "6.0", "6.0", "6.0", "6.0", "5.0"]


def test_job_record_groups_checkpoint_metrics_by_eval_task():
  flat = {"super_glue_cb_v102/accuracy": 50.0, "super_glue_cb_v102/mean_3class_f1": 40.0, "other/accuracy": 1.0}
  assert table_jobs_xprompt.by_eval_task(flat, ["super_glue_cb_v102"]) == {
      "super_glue_cb_v102": {"accuracy": 50.0, "mean_3class_f1": 40.0}}
