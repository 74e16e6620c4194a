"""Linear probes of frozen backbones: is a task's label linearly readable from the bag of input embeddings, the
encoder, the decoder's first output position, and the frozen model's own scores of the label words? Tells "the
backbone lacks the information" from "prompt tuning cannot steer the decoder to say it" when prompt tuning sits at
the majority class (`xprompt_jax.evaluation.probe`).

    python bench/probe_backbone.py --gin_file=pretrain/t5_1_1_mini.gin \
      --checkpoint=/tmp/t5_mini_lm/export/checkpoint_300,/tmp/t5_mini_lm_medium/export/checkpoint_1200 \
      --tasks=glue_sst2_v002,super_glue_cb_v102

Prints one line per (checkpoint, task): the validation accuracy of the majority class; of a logistic regression on
the mean input embedding, on the mean encoder output and on the decoder's hidden state at its first position; of
rank classification by the frozen model without a prompt ("zero-shot"); and of a logistic regression on its label
scores ("label scores"). About two minutes per checkpoint and task for the 24 M-parameter mini T5 on 2 CPU cores.

With --reliance and a pretraining stage config as --gin_file, it also prints per checkpoint how much the decoder
listens to the encoder (`probe.encoder_reliance`) on that stage's held-out batches: the cross entropy with each
row's own encoder input and with the next row's, over all target tokens and over each row's first one:
    python bench/probe_backbone.py --gin_file=pretrain/lm_adaptation_medium.gin --reliance \
      --checkpoint=/tmp/t5_mini_lm_medium/export/checkpoint_1200 --tasks=glue_sst2_v002
    reliance: /tmp/t5_mini_lm_medium/export/checkpoint_1200  pretrain_prefix_lm  all tokens 5.33 -> 5.67 nats  first
      token 6.73 -> 6.89 nats  (640 rows, 20584 target tokens)
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
flags.DEFINE_bool("reliance", False, "Also measure the decoder's reliance on the encoder on the held-out batches of "
                  "the pretraining task that --gin_file's DataConfig binds (a gin/pretrain stage config).")
flags.DEFINE_integer("reliance_batches", 20, "Held-out batches (PretrainConfig.eval_batches' default).")


def reliance_batches() -> tuple[str, list]:
  """(task, the first --reliance_batches batches of its validation split), as the pretraining run evaluates them:
  lengths and batch size from the gin-bound DataConfig."""
  import dataclasses
  from xprompt_jax.pretraining import tasks  # noqa: F401  (registers the pretraining tasks)
  from xprompt_jax.training import data as data_lib
  try:
    cfg = data_lib.DataConfig()
  except RuntimeError as e:  # gin's "Required bindings ... not provided": mixture_or_task_name is gin.REQUIRED.
    raise app.UsageError(f"--reliance needs a pretraining stage config (e.g. --gin_file=pretrain/"
                         f"lm_adaptation_medium.gin) that binds DataConfig: {e}") from e
  cfg = dataclasses.replace(cfg, split="validation", shuffle=False)
  return cfg.mixture_or_task_name, list(data_lib.dataset(cfg, num_epochs=1).take(
      flags.FLAGS.reliance_batches).as_numpy_iterator())


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
  task, batches = reliance_batches() if f.reliance else (None, [])
  for path in f.checkpoint:
    params, config = checkpoints.load_params(path, T5Config())
    if batches:
      r = probe.encoder_reliance(T5(config), params, batches)
      rows.append({"checkpoint": path, "task": task, **r})
      print(f"reliance: {path}  {task}  all tokens {r['matched']:.2f} -> {r['swapped']:.2f} nats  "
            f"first token {r['matched_first']:.2f} -> {r['swapped_first']:.2f} nats  ({int(r['rows'])} rows, "
            f"{int(r['tokens'])} target tokens)", flush=True)
    for name in f.tasks:
      r = probe.probe_task(T5(config), params, data_lib.get_task(name),
                           {"inputs": f.inputs_length, "targets": 8}, f.train_examples, c=f.c)
      rows.append({"checkpoint": path, **r})
      print(f"probe: {path}  {name}  majority {r['majority']:.1f}  embeddings {r['embeddings']:.1f}  "
            f"encoder {r['encoder']:.1f}  decoder {r['decoder']:.1f}  zero-shot {r['zero_shot']:.1f}  "
            f"label scores {r['label_scores']:.1f}  ({r['train_rows']} train rows, {r['val_rows']} validation rows)",
            flush=True)
  return rows


if __name__ == "__main__":
  app.run(main)
