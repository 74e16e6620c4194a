"""Issue 9 item 7: trainable parameters, optimizer-state bytes and checkpoint bytes per method (and PEFT's).

Each method's training state is built on the same frozen model and saved with the real `TrainCheckpointer` (Orbax);
the checkpoint's bytes on disk are compared with trainable + optimizer-state bytes. A prompt checkpoint must not
contain the frozen model: the ratio shows it does not. PEFT's prompt tuning of a seq2seq T5 allocates
`num_transformer_submodules` (2 by default: encoder and decoder) x L x d; its adapter file is measured too.

    python bench/memory.py --size small
    python bench/memory.py --quick
"""
import argparse
import os
import sys
import tempfile

import jax
import numpy as np

import bench_common
from step_vs_peft import SIZES
from xprompt_jax.methods.base import count_params
from xprompt_jax.methods.mpt import MPT
from xprompt_jax.methods.prefix import PrefixTuning
from xprompt_jax.methods.prompt import PromptTuning
from xprompt_jax.methods.xprompt import XPrompt
from xprompt_jax.models.t5 import init_params
from xprompt_jax.training.checkpointing import TrainCheckpointer
from xprompt_jax.training.optim import OptimizerConfig, make_optimizer
from xprompt_jax.training.step import init_state

QUICK = dict(size="tiny", prompt=4)


def tree_bytes(tree) -> int:
  return int(sum(np.asarray(x).nbytes for x in jax.tree.leaves(tree) if hasattr(x, "shape")))


def dir_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def methods(prompt: int, config) -> dict:
  return {"prompt": PromptTuning(length=prompt, prompt_init="random_uniform"),
          "prefix": PrefixTuning(length=prompt, hidden_dim=512),
          "mpt_2_tasks": MPT(length=prompt, num_tasks=2, prompt_init="random_uniform"),
          "xprompt": XPrompt(length=prompt, prompt_init="random_uniform",
                             pieces=16 if config.emb_dim % 16 == 0 else 4)}


def run(size="small", prompt=100) -> dict:
  config = SIZES[size]
  frozen = init_params(config, jax.random.PRNGKey(0))
  optimizer = make_optimizer(OptimizerConfig())
  out = {"size": size, "prompt": prompt, "frozen_params": count_params(frozen), "frozen_bytes": tree_bytes(frozen),
         "methods": {}}
  for name, method in methods(prompt, config).items():
    state = init_state(method, frozen, config, optimizer, jax.random.PRNGKey(0))
    with tempfile.TemporaryDirectory() as tmp:
      ckpt = TrainCheckpointer(tmp, async_save=False)
      ckpt.save(0, state, data_position=0)
      ckpt.close()
      disk = dir_bytes(tmp)
    trainable_b, opt_b = tree_bytes(state["trainable"]), tree_bytes(state["opt_state"])
    out["methods"][name] = {"trainable_params": count_params(state["trainable"]), "trainable_bytes": trainable_b,
                            "optimizer_state_bytes": opt_b, "checkpoint_bytes": disk,
                            "checkpoint_over_state": disk / (trainable_b + opt_b)}
  if bench_common.bench_deps_available() is None:
    out["peft"] = peft_sizes(frozen, config, prompt)
  return out


def peft_sizes(frozen, config, prompt: int) -> dict:
  import hf_bridge
  from peft import PromptTuningConfig, TaskType, get_peft_model
  model = get_peft_model(hf_bridge.hf_model(frozen, config),
                         PromptTuningConfig(task_type=TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=prompt))
  with tempfile.TemporaryDirectory() as tmp:
    model.save_pretrained(tmp)
    disk = dir_bytes(tmp)
  return {"trainable_params_default": hf_bridge.trainable_numel(model), "L_times_d": prompt * config.emb_dim,
          "adapter_bytes": disk}


def print_targets(out: dict) -> None:
  for name, m in out["methods"].items():
    bench_common.target_line(f"{name}: checkpoint bytes / (trainable + optimizer state)", m["checkpoint_over_state"],
                             1.2, higher_is_better=False,
                             why_missed="Orbax metadata (~tens of KB) dominates a tiny state")
  if "peft" in out:
    p = out["peft"]
    print(f"  PEFT prompt tuning (default seq2seq config): {p['trainable_params_default']} trainable = "
          f"{p['trainable_params_default'] / p['L_times_d']:.0f} x L x d; ours stores L x d = {p['L_times_d']}")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", default="small", choices=sorted(SIZES))
  parser.add_argument("--prompt", type=int, default=100)
  parser.add_argument("--out", default=None)
  parser.add_argument("--quick", action="store_true")
  args = parser.parse_args(argv)
  kw = dict(size=args.size, prompt=args.prompt)
  if args.quick:
    kw.update(QUICK)
  out = run(**kw)
  bench_common.emit({"bench": "memory", **out}, args.out)
  print_targets(out)
  return out


if __name__ == "__main__":
  main(sys.argv[1:])
