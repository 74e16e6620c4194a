"""`xprompt-jax train`: train a parametrisation of a frozen T5 from gin configs (T5X flag names).

    xprompt-jax train --gin_file=runs/smoke_cpu.gin --model_dir=/tmp/xprompt_smoke
    xprompt-jax train --gin_file=models/t5_1_1_xxl.gin --gin_file=methods/prompt.gin \
      --gin_file=recipes/lester.gin --gin.MIXTURE_OR_TASK_NAME="'super_glue_rte_v102'" \
      --model_dir=gs://bucket/rte --multihost

Rerunning the same command resumes from the latest checkpoint in --model_dir. The configuration is checked as it
is read, before anything is loaded or written: a `TrainConfig.best_metric` that the evaluation will not report is
an error naming the keys it will report (`evaluation.metric_keys`).
"""
from absl import flags

from xprompt_jax import exit_status
from xprompt_jax.commands import common

common.define_gin_flags()
common.define_run_flags()


class TrainError(ValueError):
  """A failure the user must act on (model_dir in use, non-finite loss, other base model, disk full...): the CLI
  prints it as one line and exits with status 1."""


def main(argv):
  common.init_run(argv)
  from xprompt_jax.training import checkpointing
  from xprompt_jax.training import data as data_lib
  from xprompt_jax.training import loop
  from xprompt_jax.training import run_configs
  run_configs.RunConfigs.from_gin(data_lib.DataConfig().mixture_or_task_name).check_metric_keys()
  try:
    result = loop.train(flags.FLAGS.model_dir)
  except (checkpointing.CheckpointingError, loop.NonFiniteError, OSError) as e:
    raise TrainError(str(e)) from e
  if result.get("interrupted"):
    return exit_status.INTERRUPTED  # Ctrl-C: saved; rerunning resumes.
  if result.get("preempted"):
    return exit_status.PREEMPTED  # Saved; rerunning resumes (the launcher's `supervise` does).
  print(f"done: step {result['step']}, checkpoints and metrics in {flags.FLAGS.model_dir}")
