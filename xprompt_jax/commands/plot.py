"""`xprompt-jax plot`: PNG figures of a run, next to it in `<model_dir>/plots/`.

    xprompt-jax plot --model_dir=/tmp/xprompt_smoke
    xprompt-jax plot --model_dir=/tmp/xprompt_smoke --compare=prompt=/runs/pt,prefix=/runs/prefix \
      --metric=super_glue_rte_v102/accuracy

Training and evaluation curves from metrics.jsonl; with --compare, bars of each run's last evaluation of
--metric; an XPrompt pipeline model_dir also gets its pruning curve and importance heatmap.
"""
from absl import flags

from xprompt_jax.commands import common

common.define_run_flags()
common.define_once(flags.DEFINE_list, "compare", None,
                   "Runs to compare as NAME=MODEL_DIR (or MODEL_DIR): bars of --metric.")
common.define_once(flags.DEFINE_string, "metric", None,
                   "The eval metric of the comparison (default: the first one logged).")
common.define_once(flags.DEFINE_string, "out_dir", None, "Where the PNGs go (default: <model_dir>/plots).")


def main(argv):
  if len(argv) > 1:
    raise ValueError(f"unexpected positional arguments: {argv[1:]}")
  if not flags.FLAGS.model_dir:
    raise ValueError("--model_dir is required")
  import os
  from xprompt_jax import plotting
  from xprompt_jax.interop import run_prompts
  model_dir = flags.FLAGS.model_dir
  out_dir = flags.FLAGS.out_dir or os.path.join(model_dir, plotting.PLOTS_DIR)
  written = plotting.plot_run(model_dir, out_dir)
  if flags.FLAGS.compare:
    runs = run_prompts.parse_named_sources(flags.FLAGS.compare)
    metric = flags.FLAGS.metric or next(iter(plotting.final_eval(next(iter(runs.values())))))
    results = {name: plotting.final_eval(d, metric)[metric] for name, d in runs.items()}
    written.append(plotting.method_comparison(os.path.join(out_dir, "method_comparison.png"), results, metric))
  print("\n".join(f"wrote {p}" for p in written))
