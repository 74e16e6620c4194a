"""`xprompt-jax table`: one paper table, every task x seed x stage of it, written next to the paper's numbers.

    xprompt-jax table --table=lester_superglue --gin_file=paper/prompt_tuning_xxl.gin \
      --results_dir=gs://BUCKET/lester_xxl --multihost
    xprompt-jax table --table=lester_superglue --gin_file=paper/prompt_tuning_xxl.gin --results_dir=/tmp/dry \
      --dry_run                                   # the same command on a tiny random T5 and capped sizes (CPU)
    xprompt-jax table ... --runs='CB/*,RTE/*'     # only these runs (several pod jobs share one results dir)
    xprompt-jax table ... --gather_only           # run nothing; print the table of the finished runs
    xprompt-jax table ... --list                  # print the runs (folders) of the table and exit

Each run is the per-run command of the paper config (`xprompt-jax train`, `xprompt`, `mpt`, `ensemble`) with the
run's bindings, in its own folder `<results_dir>/<run>` (its model_dir); a finished run is read back, an
unfinished one resumes (`training.stages`). Prints "table: <run> (<kind>)" per run started, then the table, which
goes to <results_dir>/table.md and table.json (the sweeps' and transfer tables' figure to table.png).
`--gin.NAME=VALUE` bindings apply to every run. Exit status 1 when a run failed (the others still ran).
"""
import os
import shlex
import sys
import time

from absl import flags

from xprompt_jax import exit_status
from xprompt_jax.commands import common

common.define_gin_flags()
common.define_once(flags.DEFINE_string, "table", None, "The paper table (xprompt_jax.tables.TABLES).")
common.define_once(flags.DEFINE_string, "results_dir", None, "Where every run's folder and the table go.")
common.define_once(flags.DEFINE_list, "runs", [], "Glob patterns of the run folders to run (default: all).")
common.define_once(flags.DEFINE_bool, "gather_only", False, "Run nothing: write the table of the finished runs.")
common.define_once(flags.DEFINE_bool, "list", False, "Print the table's runs and exit.")
common.define_once(flags.DEFINE_bool, "dry_run", False, "The same runs on a tiny random T5 of the config's family "
                   "(a T5X checkpoint under <results_dir>/dry_run_backbone), capped steps/rows/batch, local ../shared "
                   "data or TFDS mock data: checks on CPU that every stage of the table runs.")
common.define_once(flags.DEFINE_bool, "multihost", False, "Call jax.distributed.initialize() first (TPU pods).")


class TableError(ValueError):
  """Some runs of the table failed (each was reported in one line); exit status 1."""


def _gin_config(gin_files, bindings):
  import gin
  # Every configurable a run may construct is registered before the config is parsed and locked (a module imported
  # later, inside a run, could not register its own).
  import importlib
  for module in ("pipelines.compare", "pipelines.mpt", "pipelines.xprompt", "pretraining.train"):
    importlib.import_module(f"xprompt_jax.{module}")
  gin.clear_config()
  common.parse_gin(gin_files, bindings, flags.FLAGS.gin_search_paths)


def main(argv):
  if len(argv) > 1:
    raise ValueError(f"unexpected positional arguments: {argv[1:]}")
  f = flags.FLAGS
  from xprompt_jax import tables
  if not f.table:
    raise ValueError(f"--table is required; the paper tables: {', '.join(tables.TABLES)}")
  table = tables.get_table(f.table)
  if len(f.gin_file) != 1:
    raise ValueError(f"--table={table.name} needs exactly one --gin_file, the paper config "
                     f"({table.gin_pattern.format(size='<size>')}); got {list(f.gin_file)}")
  size = table.size_of(f.gin_file[0])
  jobs = table.jobs()
  if f.list:
    for job in jobs:
      print(f"{job.folder}  ({job.kind}{'; needs ' + ', '.join(job.needs) if job.needs else ''})")
    return
  if not f.results_dir:
    raise ValueError("--results_dir is required")
  from xprompt_jax.tables import runner
  selected = runner.select(jobs, f.runs)
  local_only = sorted({j.kind for j in selected} & set(runner.LOCAL_FILE_KINDS))
  if local_only and not f.gather_only:
    common.refuse_gcs(f.results_dir, "--results_dir",
                      f"the {', '.join(local_only)} runs of --table={table.name}")
  if f.multihost:
    import jax
    jax.distributed.initialize()
  return _run(table, size, jobs, selected)


def _run(table, size, jobs, selected):
  f = flags.FLAGS
  from xprompt_jax.commands import table_jobs
  from xprompt_jax.tables import dry_run as dry
  from xprompt_jax.tables import render
  from xprompt_jax.tables import runner
  from xprompt_jax.training import stages
  import contextlib
  bindings, dry_bindings = list(f.gin_bindings), []
  _gin_config(f.gin_file, [*bindings, *jobs[0].bindings])  # The config is checked before any run starts.
  context = contextlib.nullcontext()
  if f.dry_run:
    from xprompt_jax.models.config import T5Config
    dry_bindings = dry.bindings(T5Config(), dry.write_backbone(f.results_dir, T5Config()), table.dry_run_batch_size)
    context = dry.data_sources()
  if not f.results_dir.startswith("gs://"):  # On a pod, JAX_COMPILATION_CACHE_DIR may name a bucket folder.
    _enable_compilation_cache(os.path.join(f.results_dir, "jax_cache"))

  def execute(job, run_dir):
    # The job's bindings make it its run; a dry run's caps and tiny backbone win over them (a job may name a
    # checkpoint); a backbone the table made itself (an lm_adapt export) comes last.
    _gin_config(f.gin_file, [*bindings, *job.bindings, *dry_bindings,
                             *table_jobs.backbone_bindings(job, f.results_dir)])
    return table_jobs.EXECUTORS[job.kind](job, run_dir, f.results_dir)

  start = time.time()
  failures, waiting = [], []
  with context:
    if f.gather_only:
      records = runner.read_records(f.results_dir, jobs)
    else:
      try:
        records, failures, waiting = runner.run_jobs(f.results_dir, jobs, selected, execute)
      except stages.Preempted as e:
        print(f"table: {e}")
        return exit_status.PREEMPTED
  grid = table.gather(records, size)
  unfinished = [j.folder for j in jobs if j.folder not in records]
  # The "Made by" line is pasted back into a shell: quoted (--runs='CB/*' is a glob otherwise).
  command = "xprompt-jax table " + shlex.join(a for a in sys.argv[2:] if not a.startswith("--verbosity"))
  text = render.markdown(grid, command=command, unfinished=unfinished)
  import json
  from xprompt_jax.checkpoints import storage
  if not storage.is_gcs(f.results_dir):
    os.makedirs(f.results_dir, exist_ok=True)
  storage.write_bytes(storage.join(f.results_dir, "table.md"), text.encode("utf-8"))
  summary = {**render.as_json(grid), "unfinished": unfinished, "failures": failures}
  storage.write_bytes(storage.join(f.results_dir, "table.json"), json.dumps(summary, indent=1).encode("utf-8"))
  if grid.plot:
    storage.write_bytes(storage.join(f.results_dir, "table.png"), render.plot_png(grid))
  print(text)
  print(f"table: {len(records)}/{len(jobs)} runs finished ({time.time() - start:.0f} s this call); "
        f"{storage.join(f.results_dir, 'table.md')}")
  if waiting:
    print(f"table: {len(waiting)} runs wait for others: {'; '.join(waiting[:5])}")
  if failures:
    raise TableError(f"{len(failures)} runs failed: {'; '.join(failures[:3])}")


def _enable_compilation_cache(folder: str) -> None:
  """The runs compile the same steps again and again; JAX's persistent cache loads them instead."""
  import jax
  jax.config.update("jax_compilation_cache_dir", folder)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
