"""Linear probes of frozen backbones: is a task's label linearly readable from the encoder (and from the bag of
input embeddings)? Tells "the backbone lacks the information" from "prompt tuning cannot steer the decoder to say
it" when prompt tuning sits at the majority class (`xprompt_jax.evaluation.probe`).

    python bench/probe_backbone.py --gin_file=pretrain/t5_1_1_mini.gin \
      --checkpoint=/tmp/t5_mini_lm/export/checkpoint_300,/tmp/t5_mini_lm_medium/export/checkpoint_1200 \
      --tasks=glue_sst2_v002,super_glue_cb_v102

Prints one line per (checkpoint, task): the validation accuracy of the majority class, of a logistic regression
on the mean input embedding, and of one on the mean encoder output. About a minute per checkpoint and task for
the 24 M-parameter mini T5 on 2 CPU cores.
"""
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from xprompt_jax.commands import common  # noqa: E402

common.define_gin_flags()
flags.DEFINE_list("checkpoint", None, "Backbone checkpoints to probe (comma-separated; any format `load_params` "
                  "reads).")
flags.DEFINE_list("tasks", ["glue_sst2_v002"], "Registered classification tasks.")
flags.DEFINE_integer("train_examples", 4000, "Rows of each train split the probe is fitted on.")
flags.DEFINE_integer("inputs_length", 64, "Input tokens (longer inputs are trimmed, as in training).")
flags.DEFINE_float("c", 1.0, "Inverse L2 strength of the logistic regression.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if not f.checkpoint:
    raise app.UsageError("--checkpoint is required")
  common.parse_gin(f.gin_file, f.gin_bindings, f.gin_search_paths)
  from xprompt_jax import checkpoints
  from xprompt_jax.evaluation import probe
  from xprompt_jax.models.config import T5Config
  from xprompt_jax.models.t5 import T5
  from xprompt_jax.training import data as data_lib
  rows = []
  for path in f.checkpoint:
    params, config = checkpoints.load_params(path, T5Config())
    for name in f.tasks:
      r = probe.probe_task(T5(config), params, data_lib.get_task(name),
                           {"inputs": f.inputs_length, "targets": 8}, f.train_examples, c=f.c)
      rows.append({"checkpoint": path, **r})
      print(f"probe: {path}  {name}  majority {r['majority']:.1f}  embeddings {r['embeddings']:.1f}  "
            f"encoder {r['encoder']:.1f}  ({r['train_rows']} train rows, {r['val_rows']} validation rows)",
            flush=True)
  return rows


if __name__ == "__main__":
  app.run(main)
