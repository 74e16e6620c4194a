"""`xprompt-jax compile`: ahead-of-time compile the train/eval step for a TPU slice and report memory and FLOPs.

    xprompt-jax compile --gin_file=models/t5_1_1_xxl.gin --gin_file=methods/prompt.gin \
      --gin_file=recipes/lester.gin --gin.T5Config.scan_layers=True --gin.MeshConfig.model=8 \
      --topology=v4-128 --output=/tmp/aot.jsonl

Runs on a CPU-only machine with `libtpu` installed (`pip install 'xprompt_jax[aot]'`); nothing is allocated and no
TPU is used. Prints one row per compiled step (per-device memory vs the chip's HBM, FLOPs, collectives) and, with
--output, appends the full report as one JSON line. Batch size and feature lengths are the gin-bound `DataConfig`
ones (the Lester recipe: 32 x 512 inputs, 8 targets; e.g. --gin.DataConfig.batch_size=64 changes them).
"""
import json
import os
import sys

from absl import flags

from xprompt_jax.commands import common

common.define_gin_flags()


def _define(define, name, default, help_text):
  """Defines a flag unless another command module imported in the same process already did (same meaning)."""
  if name not in flags.FLAGS:
    define(name, default, help=help_text)


_define(flags.DEFINE_string, "topology", None, "TPU slice to compile for: v4-8, v4-128, v5e-16, v5litepod-256, "
        "v5p-8, ... or a raw topology such as v4:4x4x4.")
_define(flags.DEFINE_string, "method", None, "Method to compile (prompt, prefix, mpt, xprompt); default: "
        "get_method.name from gin.")
_define(flags.DEFINE_bool, "eval", True, "Also compile the eval-loss step.")
_define(flags.DEFINE_string, "output", None, "Append the report as one JSON line to this file.")


def _data_field(field: str):
  """`DataConfig.<field>` as gin binds it (macros and T5X's TASK_FEATURE_LENGTHS evaluated); the task name is
  passed, since a recipe may leave it unbound and no data is read."""
  from xprompt_jax.training import data
  return getattr(data.DataConfig(mixture_or_task_name=""), field)


def main(argv):
  if len(argv) > 1:
    raise ValueError(f"unexpected positional arguments: {argv[1:]}")
  f = flags.FLAGS
  if not f.topology:
    raise ValueError("--topology is required (e.g. --topology=v4-128)")
  if "JAX_PLATFORMS" not in os.environ:
    import jax
    jax.config.update("jax_platforms", "cpu")  # Compile-only: never claim a local accelerator.
  common.parse_gin_from_flags(finalize=False)  # The recipe's task name may stay unbound: no data is read.
  from xprompt_jax.methods import get_method
  from xprompt_jax.models.config import T5Config
  from xprompt_jax.training import aot, aot_report, optim, partitioning
  from xprompt_jax.training import step as step_lib
  method = get_method(name=f.method) if f.method else get_method()
  try:
    report = aot.compile_train_step(
        T5Config(), method, optim.OptimizerConfig(), partitioning.MeshConfig(),
        _data_field("batch_size"), _data_field("inputs_length"), _data_field("targets_length"), f.topology,
        loss_cfg=step_lib.LossConfig(), include_eval=f.eval)
  except aot.LibtpuUnavailableError as e:
    raise ValueError(str(e)) from e
  print(aot_report.format_report(report))
  if f.output:
    os.makedirs(os.path.dirname(os.path.abspath(f.output)), exist_ok=True)
    with open(f.output, "a", encoding="utf-8") as out:
      out.write(json.dumps(report, sort_keys=True) + "\n")
    print(f"report appended to {f.output}", file=sys.stderr)
