"""`xprompt-jax inspect`: nearest vocabulary tokens of each prompt vector, and prompt-prompt similarity.

    xprompt-jax inspect --gin_file=runs/smoke_cpu.gin --prompts=rte=/runs/rte,cb=/runs/cb --k=5
    xprompt-jax inspect --gin_file=runs/smoke_cpu.gin --model_dir=/tmp/xprompt_smoke

Prompts are runs (model_dirs trained with the gin config), PEFT prompt-tuning adapters or prompt-tuning files
(.npy / numpy or T5X checkpoints). The embedding table is the gin-configured frozen model's.
"""
from absl import flags

from xprompt_jax.commands import common

common.define_gin_flags()
common.define_run_flags()
common.define_once(flags.DEFINE_list, "prompts", None, "NAME=SOURCE (or SOURCE) prompts to inspect.")
common.define_once(flags.DEFINE_string, "step", "latest", "Checkpoint of run sources: latest, best or a step number.")
common.define_once(flags.DEFINE_integer, "k", 5, "Nearest tokens per prompt position.")
common.define_once(flags.DEFINE_enum, "similarity", "mean",
                   "Prompt-prompt similarity: cosine of the mean-pooled prompts, or of the flattened prompts (equal "
                   "lengths).", enum_values=("mean", "flat"))


def main(argv):
  if len(argv) > 1:
    raise ValueError(f"unexpected positional arguments: {argv[1:]}")
  specs = list(flags.FLAGS.prompts or []) + ([flags.FLAGS.model_dir] if flags.FLAGS.model_dir else [])
  if not specs:
    raise ValueError("give --prompts=NAME=SOURCE,... or --model_dir")
  common.parse_gin_from_flags()
  import numpy as np
  from xprompt_jax.evaluation import inspection
  from xprompt_jax.interop import run_prompts
  from xprompt_jax.methods.base import embedding_table
  from xprompt_jax.models.config import T5Config
  from xprompt_jax.tasks import vocab as vocab_lib
  from xprompt_jax.training import loop
  from xprompt_jax.training import partitioning
  config, mesh_cfg = T5Config(), partitioning.MeshConfig()
  prompts = {name: run_prompts.load_prompt(src, flags.FLAGS.step)[0]
             for name, src in run_prompts.parse_named_sources(specs).items()}
  frozen, frozen_ref = loop.load_frozen(loop.TrainConfig(), config, partitioning.make_mesh(mesh_cfg), mesh_cfg.rules)
  embedding = np.asarray(embedding_table(frozen))
  vocab = vocab_lib.get_default_vocabulary()
  print(f"frozen model: {frozen_ref['path']}")
  for name, prompt in prompts.items():
    hits = inspection.nearest_tokens(prompt, embedding, flags.FLAGS.k,
                                     num_ids=min(vocab.vocab_size, embedding.shape[0]))
    print(inspection.format_nearest(hits, vocab, f"prompt {name} ({prompt.shape[0]}x{prompt.shape[1]}): nearest "
                                    f"tokens (cosine)"))
  if len(prompts) > 1:
    names, sim = inspection.prompt_similarity(prompts, flags.FLAGS.similarity)
    print(f"prompt similarity ({flags.FLAGS.similarity}, cosine):\n" + inspection.format_similarity(names, sim))
