"""`xprompt-jax pretrain`: pretrain every parameter of a T5 (span corruption, LM adaptation) from a gin config.

    xprompt-jax pretrain --gin_file=pretrain/span_corruption_small.gin --model_dir=/tmp/t5_small_sc
    xprompt-jax pretrain --gin_file=pretrain/lm_adaptation_small.gin --model_dir=/tmp/t5_small_lm \
      --gin.PretrainConfig.initial_checkpoint="'/tmp/t5_small_sc'"

Rerunning the same command resumes from the latest checkpoint in --model_dir. The run ends by exporting a T5X
checkpoint (`<model_dir>/export/checkpoint_<step>`) that `TrainConfig.initial_checkpoint` loads like a public T5.
"""
from absl import flags

from xprompt_jax.commands import common

common.define_gin_flags()
common.define_run_flags()


def main(argv):
  common.init_run(argv)
  from xprompt_jax.pretraining import train
  from xprompt_jax.training import checkpointing
  try:
    train.pretrain(flags.FLAGS.model_dir)
  except (checkpointing.CheckpointingError, OSError) as e:
    raise ValueError(str(e)) from e
