"""`xprompt-jax xprompt`: the whole XPrompt procedure (PT, importance, pruning sweep, rewinding, controls, report).

    xprompt-jax xprompt --gin_file=runs/xprompt_smoke_cpu.gin --model_dir=/tmp/xprompt_cb
    xprompt-jax xprompt --gin_file=models/t5_1_1_xl.gin --gin_file=recipes/xprompt_paper.gin \
      --gin.MIXTURE_OR_TASK_NAME="'super_glue_wsc_v102_simple_train'" --model_dir=/mnt/bucket/xprompt_wsc

WSC trains on `simple_train` (correct referents only) and is evaluated on `simple_eval` (`evaluation_tasks`),
whose predictions are free-text referents: the recipe's `EvalConfig.mode='auto'` decodes it (it cannot be
rank-classified), and its metric is `accuracy`, the default `select_metric`. Each stage writes into its own
subfolder of --model_dir; rerunning the same command resumes at the first unfinished stage (see
`xprompt_jax.pipelines.xprompt`). The results table ends up in <model_dir>/report/. The configuration is checked
before any work: an `XPromptPipelineConfig.select_metric` the evaluation does not report (MultiRC reports `f1`
and `exact_match`) or an `EvalConfig.mode` a task cannot be evaluated in is a one-line error.
"""
from absl import flags

from xprompt_jax import exit_status
from xprompt_jax.commands import common

common.define_gin_flags()
common.define_run_flags()


def main(argv):
  common.refuse_gcs(flags.FLAGS.model_dir, "--model_dir", "XPrompt")
  common.init_run(argv)
  common.refuse_unused_macro("TRAIN_STEPS", "xprompt", "its stages count epochs (XPromptPipelineConfig.num_epochs)")
  from xprompt_jax.evaluation import evaluator
  from xprompt_jax.pipelines import xprompt
  from xprompt_jax.training import data as data_lib
  from xprompt_jax.training import loop
  # As the config is read (one line, outside gin's call wrapper): a select_metric the evaluation will not report.
  xprompt.check_select_metric(xprompt.XPromptPipelineConfig(), loop.TrainConfig(), data_lib.DataConfig(),
                              evaluator.EvalConfig())
  result = xprompt.run_xprompt(flags.FLAGS.model_dir)
  if result["stopped"]:
    return exit_status.PREEMPTED if result["preempted"] else 0
  print(f"done: results in {flags.FLAGS.model_dir}/report/results.md (and results.jsonl, plots, final prompt)")
