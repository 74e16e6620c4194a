"""Issue 9 item 3: XLA's cost analysis of the compiled steps, as ratios.

* prompt-tuning step ÷ full fine-tuning step of the same model and batch. The full step here keeps the prompt in
  the input (same encoder length) and adds the weight gradients and their optimizer update, so the ratio isolates
  what freezing saves: no weight gradients, i.e. about 2/3 of a full step's matmul FLOPs.
* prefix-tuning, MPT-distillation and XPrompt-importance steps ÷ the prompt-tuning step.

Each step is lowered and compiled for this CPU and `compiled.cost_analysis()["flops"]` is read: the counts are
those of the program XLA will run (unscanned layers; a scanned stack would be counted once).

    python bench/flops.py --size small          # the issue's shapes (batch 8 x 256, 8 targets, P = 100)
    python bench/flops.py --quick
"""
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import bench_common
from step_vs_peft import LOSS, SIZES, random_batch
from xprompt_jax.methods.mpt import MPT
from xprompt_jax.methods.prefix import PrefixTuning
from xprompt_jax.methods.prompt import PromptTuning
from xprompt_jax.methods.xprompt import XPrompt
from xprompt_jax.models.t5 import T5, abstract_params
from xprompt_jax.pipelines.importance import make_importance_step
from xprompt_jax.training import step as step_lib
from xprompt_jax.training.distill import TEACHERS_KEY, DistillConfig, make_distill_loss
from xprompt_jax.training.optim import OptimizerConfig, make_optimizer

QUICK = dict(size="tiny", batch=2, inputs=16, targets=4, prompt=4)


def compiled_flops(fn, *args) -> tuple[float, float]:
  """(FLOPs of the compiled `fn` on these abstract or concrete args, compile seconds)."""
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"]), time.perf_counter() - start


def _abstract(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x)), tree)


def prompt_step_args(config, method, batch, frozen, optimizer, aux=None):
  state = jax.eval_shape(lambda: step_lib.init_state(method, frozen, config, optimizer, jax.random.PRNGKey(0), aux))
  return state, _abstract(batch), frozen


def full_finetuning_step(model, method, config, optimizer):
  """Gradients of the frozen weights too (and of the prompt), the optimizer over all of them."""

  def step(params, trainable, opt_state, batch):
    def loss(p, t):
      logits = step_lib.forward(model, method, config, p, t, batch, {})
      return step_lib.token_loss(logits, batch, LOSS)[0]
    value, grads = jax.value_and_grad(loss, argnums=(0, 1))(params, trainable)
    updates, opt_state = optimizer.update(grads, opt_state, (params, trainable))
    params, trainable = optax.apply_updates((params, trainable), updates)
    return params, trainable, opt_state, value

  return step


def run(size="small", batch=8, inputs=256, targets=8, prompt=100) -> dict:
  config = SIZES[size]
  model = T5(config)
  frozen = abstract_params(config)
  data = random_batch(0, batch, inputs, targets, config.vocab_size)
  optimizer = make_optimizer(OptimizerConfig())
  out = {"size": size, "batch": batch, "inputs": inputs, "targets": targets, "prompt": prompt, "compile_s": {}}

  flops = out["flops"] = {}

  def record(name, fn, *args):
    flops[name], out["compile_s"][name] = compiled_flops(fn, *args)

  pt = PromptTuning(length=prompt, prompt_init="random_uniform")
  record("prompt", step_lib.make_train_step(model, pt, config, optimizer, LOSS),
         *prompt_step_args(config, pt, data, frozen, optimizer))
  trainable = jax.eval_shape(lambda: pt.init(jax.random.PRNGKey(0), frozen, config))
  full_opt = jax.eval_shape(lambda: optimizer.init((frozen, trainable)))
  record("full_finetuning", full_finetuning_step(model, pt, config, optimizer), frozen, trainable, full_opt,
         _abstract(data))
  pre = PrefixTuning(length=prompt, hidden_dim=512)
  record("prefix", step_lib.make_train_step(model, pre, config, optimizer, LOSS),
         *prompt_step_args(config, pre, data, frozen, optimizer))
  mpt = MPT(length=prompt, num_tasks=2, prompt_init="random_uniform")
  teachers = jax.ShapeDtypeStruct((2, prompt, config.emb_dim), jnp.float32)
  mpt_batch = {**data, "task_id": np.arange(batch, dtype=np.int32) % 2}
  record("mpt_distillation", step_lib.make_train_step(
      model, mpt, config, optimizer, LOSS, loss_fn=make_distill_loss(model, mpt, config, LOSS, DistillConfig())),
         *prompt_step_args(config, mpt, mpt_batch, frozen, optimizer, {TEACHERS_KEY: teachers}))
  xp = XPrompt(length=prompt, prompt_init="random_uniform", pieces=16 if config.emb_dim % 16 == 0 else 4)
  record("xprompt_importance", make_importance_step(model, xp, config, LOSS), frozen,
         jax.ShapeDtypeStruct((prompt, config.emb_dim), jnp.float32), _abstract(xp.ones_masks()), _abstract(data),
         jax.ShapeDtypeStruct((), jnp.int32))
  out["ratios"] = {"prompt_over_full": flops["prompt"] / flops["full_finetuning"],
                   "prefix_over_prompt": flops["prefix"] / flops["prompt"],
                   "mpt_distillation_over_prompt": flops["mpt_distillation"] / flops["prompt"],
                   "xprompt_importance_over_prompt": flops["xprompt_importance"] / flops["prompt"]}
  return out


def print_targets(out: dict) -> None:
  r = out["ratios"]
  bench_common.target_line("compiled FLOPs, prompt-tuning step / full fine-tuning step", r["prompt_over_full"], 0.70,
                           higher_is_better=False)
  bench_common.target_line("compiled FLOPs, XPrompt importance step / prompt-tuning step",
                           r["xprompt_importance_over_prompt"], 1.10, higher_is_better=False,
                           why_missed="per-example gradients: the importance step is a vmap of batch-1 backward "
                                      "passes, which XLA batches but still counts the mask-gradient reductions")
  bench_common.target_line("compiled FLOPs, MPT distillation step / prompt-tuning step",
                           r["mpt_distillation_over_prompt"], 2.2, higher_is_better=False)
  print(f"  compiled FLOPs, prefix-tuning step / prompt-tuning step: {r['prefix_over_prompt']:.3g} (no target)")


def main(argv=None):
  args = bench_common.step_shape_parser(__doc__.split("\n")[0], SIZES).parse_args(argv)
  kw = bench_common.step_shape_kwargs(args)
  if args.quick:
    kw.update(QUICK)
  out = run(**kw)
  bench_common.emit({"bench": "flops", **out}, args.out)
  print_targets(out)
  return out


if __name__ == "__main__":
  main(sys.argv[1:])
