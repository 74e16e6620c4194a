"""`xprompt-jax eval`: evaluate a trained run's checkpoint on its task(s) with the official metrics.

    xprompt-jax eval --gin_file=runs/smoke_cpu.gin --model_dir=/tmp/xprompt_smoke [--step=best]

Uses the same gin configs as training (model, method, frozen checkpoint, data); `EvalConfig.*` bindings choose the
split and the mode (rank classification or decoding). Prints one line of metrics and writes
`<model_dir>/eval_<split>_step<N>.json`.
"""
import os

from absl import flags

from xprompt_jax.commands import common

common.define_gin_flags()
common.define_run_flags()
common.define_once(flags.DEFINE_string, "step", "latest", "Checkpoint to evaluate: latest, best or a step number.")
common.define_once(flags.DEFINE_list, "tasks", None, "Tasks/mixtures to evaluate (default: the training task).")


class EvalError(ValueError):
  """A failure the user must act on (another base model, unreadable checkpoint, disk full): one line, status 1."""


def main(argv):
  from xprompt_jax.training import checkpointing
  try:
    _evaluate(argv)
  except (checkpointing.CheckpointingError, OSError) as e:
    raise EvalError(str(e)) from e


def _evaluate(argv):
  common.init_run(argv)
  from xprompt_jax.evaluation import evaluator as eval_lib
  from xprompt_jax.training import data as data_lib
  from xprompt_jax.training import loop
  from xprompt_jax.training import restore
  run = restore.load_run(flags.FLAGS.model_dir, flags.FLAGS.step)
  data_cfg = data_lib.DataConfig()
  eval_cfg = loop.eval_lib_defaults(eval_lib.EvalConfig(), data_cfg)
  names = flags.FLAGS.tasks or list(loop.default_eval_tasks(loop.TrainConfig(), data_cfg, eval_cfg))  # As trained.
  inject = run.inject_fn()
  results = {}
  for name in names:
    evaluator = eval_lib.make_evaluator(name, run.model, run.config, eval_cfg)
    for k, v in evaluator.evaluate(run.frozen, run.state["trainable"], inject, run.state["aux"]).items():
      results[f"{name}/{k}"] = v
  out = os.path.join(flags.FLAGS.model_dir, f"eval_{eval_cfg.split}_step{run.step}.json")
  # The metrics first: a model_dir that cannot be written (read-only, full) still shows what was computed.
  print(f"eval step {run.step} ({eval_cfg.split}, {eval_cfg.mode}): {loop.format_metrics(results)}", flush=True)
  from xprompt_jax import jsonl_io
  jsonl_io.write_json_atomic(out, {"step": run.step, "split": eval_cfg.split, "mode": eval_cfg.mode,
                                   "metrics": results, "frozen": run.frozen_ref})
  print(f"wrote {out}")
