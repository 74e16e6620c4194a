"""`xprompt-jax import`: a prompt trained elsewhere becomes a run here (step-0 checkpoint), ready for eval/infer.

    xprompt-jax import --gin_file=runs/smoke_cpu.gin --model_dir=/tmp/from_peft --from=peft --path=/tmp/adapter
    xprompt-jax import --gin_file=runs/smoke_cpu.gin --model_dir=/tmp/from_pt --from=t5x \
      --path=/pt_run/numpy_checkpoints/checkpoint_1100000      # or a .npy, or a T5X checkpoint directory
    xprompt-jax eval --gin_file=runs/smoke_cpu.gin --model_dir=/tmp/from_peft

The gin config describes the model and the method as for training (a PEFT prompt-tuning adapter needs
`get_method.name='prompt'` and `PromptTuning.length` = its num_virtual_tokens; an MPT adapter `'mpt'` with
`MPT.num_tasks`/`MPT.rank`); a mismatch is reported with the binding to change. PEFT prefix-tuning adapters are
inexact here (docs/from_peft.md) and need --allow_inexact. Training from the imported prompt continues with
`xprompt-jax train` on the same model_dir.
"""
from absl import flags

from xprompt_jax.commands import common

SOURCES = ("peft", "t5x")

common.define_gin_flags()
common.define_run_flags()
_FROM = flags.DEFINE_enum("from", None, SOURCES, "peft: a PEFT adapter folder; t5x: a google-research/prompt-tuning "
                          "prompt (.npy, numpy checkpoint or T5X checkpoint).")
_PATH = flags.DEFINE_string("path", None, "The adapter folder or prompt file/checkpoint to import.")
_VARIABLE = flags.DEFINE_string("variable", "encoder/prompt/prompt/prompt", "t5x: the prompt's parameter path.")
_ALLOW_INEXACT = flags.DEFINE_bool("allow_inexact", False, "peft: accept a PREFIX_TUNING adapter although its "
                                   "scores cannot be reproduced exactly here.")


def main(argv):
  common.init_run(argv)
  if not _FROM.value or not _PATH.value:
    raise ValueError(f"--from (one of {', '.join(SOURCES)}) and --path are required")
  import gin
  import jax
  import jax.numpy as jnp
  from xprompt_jax.methods import get_method
  from xprompt_jax.models.config import T5Config
  from xprompt_jax.training import checkpointing
  from xprompt_jax.training import loop
  from xprompt_jax.training import optim
  from xprompt_jax.training import partitioning
  from xprompt_jax.training import step as step_lib
  config, method = T5Config(), get_method()
  train_cfg, mesh_cfg, opt_cfg = loop.TrainConfig(), partitioning.MeshConfig(), optim.OptimizerConfig()
  from xprompt_jax.interop import importing
  name, fields, trainable = importing.read_trainable(_FROM.value, _PATH.value, config, _VARIABLE.value,
                                                     _ALLOW_INEXACT.value)
  frozen, frozen_ref = loop.load_frozen(train_cfg, config, partitioning.make_mesh(mesh_cfg), mesh_cfg.rules)
  abstract = method.abstract_trainable(config, frozen)
  importing.check_against_method(method, name, fields, trainable, abstract)
  trainable = jax.tree.map(lambda a, s: jnp.asarray(a, s.dtype), trainable, abstract)
  labels = method.param_labels(abstract)
  label_lrs = dict(opt_cfg.label_learning_rates) if opt_cfg.label_learning_rates else None
  optimizer = optim.make_optimizer(opt_cfg, labels if label_lrs else None, label_lrs)
  state = step_lib.init_state(method, frozen, config, optimizer, jax.random.PRNGKey(train_cfg.seed))
  state = {**state, "trainable": trainable, "opt_state": optimizer.init(trainable)}
  ckpt = checkpointing.TrainCheckpointer(flags.FLAGS.model_dir, frozen_path=frozen_ref["path"],
                                         frozen_fingerprint=frozen_ref["fingerprint"], async_save=False)
  try:
    if ckpt.latest_step() is not None:
      raise FileExistsError(f"{flags.FLAGS.model_dir} already holds checkpoints (latest step {ckpt.latest_step()}); "
                            "import into a new --model_dir")
    ckpt.save(0, state, data_position=0, extra_meta={"method": method.name, "gin": gin.config_str(),
                                                     "imported_from": f"{_FROM.value}:{_PATH.value}"})
    ckpt.wait()
  finally:
    ckpt.close()
  print(f"imported {_FROM.value} {name} parameters from {_PATH.value} as step 0 of {flags.FLAGS.model_dir} "
        f"(method {method.name}, frozen {frozen_ref['path']})")
