"""`xprompt-jax xprompt`: the whole XPrompt procedure (PT, importance, pruning sweep, rewinding, controls, report).

    xprompt-jax xprompt --gin_file=runs/xprompt_smoke_cpu.gin --model_dir=/tmp/xprompt_cb
    xprompt-jax xprompt --gin_file=models/t5_1_1_xl.gin --gin_file=recipes/xprompt_paper.gin \
      --gin.MIXTURE_OR_TASK_NAME="'super_glue_wsc_v102_simple_train'" --model_dir=gs://bucket/xprompt_wsc

Each stage writes into its own subfolder of --model_dir; rerunning the same command resumes at the first
unfinished stage (see `xprompt_jax.pipelines.xprompt`). The results table ends up in <model_dir>/report/.
"""
from absl import flags

from xprompt_jax.commands import common

common.define_gin_flags()
common.define_run_flags()


def main(argv):
  common.init_run(argv)
  from xprompt_jax.pipelines import xprompt
  result = xprompt.run_xprompt(flags.FLAGS.model_dir)
  if result["stopped"]:
    return
  print(f"done: results in {flags.FLAGS.model_dir}/report/results.md (and results.jsonl, plots, final prompt)")
