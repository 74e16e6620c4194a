"""Issue 9 item 4: achieved FLOP/s of the prompt-tuning train step ÷ XLA's measured matmul peak on this CPU.

In one run, interleaved: square matmuls through XLA (fp32 and bf16) and through torch (fp32 and bf16, when the
`[bench]` extra is installed) give the platform's peak, and the jitted prompt-tuning step gives its achieved rate
(XLA's compiled FLOP count ÷ the median step time). The peak is the fastest of the interleaved matmul calls
(each runs several n x n matmuls), which makes the utilisation ratio conservative. The step must compile exactly
once for its shape; the script fails otherwise. Torch's numbers are there to tell a platform limit (e.g. XLA's bf16 dot on a CPU without native
bf16 matmul units) from our code's.

    python bench/utilisation.py --size small
    python bench/utilisation.py --quick
"""
import sys

import jax
import jax.numpy as jnp
import numpy as np

import bench_common
from flops import compiled_flops, prompt_step_args
from step_vs_peft import LOSS, SIZES, OurStep, random_batch
from xprompt_jax.methods.prompt import PromptTuning
from xprompt_jax.models.t5 import T5, init_params
from xprompt_jax.training import step as step_lib
from xprompt_jax.training.optim import OptimizerConfig, make_optimizer

QUICK = dict(size="tiny", batch=2, inputs=16, targets=4, prompt=4, matmul=256, repeats=1)


MATMULS_PER_CALL = 5  # One timed call of a matmul contender runs several, so a call is not a 0.05 s blip.


def xla_matmul(n: int, dtype):
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype)
  f = jax.jit(lambda x, y: x @ y)
  jax.block_until_ready(f(a, a))

  def call():
    for _ in range(MATMULS_PER_CALL):
      jax.block_until_ready(f(a, a))
  return call


def torch_matmul(n: int, dtype_name: str):
  import torch
  a = torch.randn(n, n, dtype=getattr(torch, dtype_name))

  def call():
    for _ in range(MATMULS_PER_CALL):
      a @ a  # pylint: disable=pointless-statement
  return call


def run(size="small", batch=8, inputs=256, targets=8, prompt=100, matmul=2048, repeats=5,
        bf16_step=False) -> dict:
  config = SIZES[size]
  frozen = init_params(config, jax.random.PRNGKey(0))
  data = random_batch(0, batch, inputs, targets, config.vocab_size)
  method = PromptTuning(length=prompt, prompt_init="random_uniform")
  step = OurStep(config, frozen, method, data)
  optimizer = make_optimizer(OptimizerConfig())
  step_flops, _ = compiled_flops(step_lib.make_train_step(T5(config), method, config, optimizer, LOSS),
                                 *prompt_step_args(config, method, data, frozen, optimizer))
  step()  # Compile.
  contenders = {"train_step": step, "xla_fp32": xla_matmul(matmul, jnp.float32),
                "xla_bf16": xla_matmul(matmul, jnp.bfloat16)}
  if bench_common.bench_deps_available() is None:
    contenders.update(torch_fp32=torch_matmul(matmul, "float32"), torch_bf16=torch_matmul(matmul, "bfloat16"))
  step_flops_of = {"train_step": step_flops}
  if bf16_step:  # The same step with bf16 activations (parameters stay fp32), as on TPU.
    config16 = config.replace(dtype="bfloat16")
    step16 = OurStep(config16, frozen, method, data)
    step16()
    contenders["train_step_bf16"] = step16
    step_flops_of["train_step_bf16"], _ = compiled_flops(
        step_lib.make_train_step(T5(config16), method, config16, optimizer, LOSS),
        *prompt_step_args(config16, method, data, frozen, optimizer))
  timing = bench_common.interleaved(contenders, repeats)
  for name in ("train_step", "train_step_bf16"):
    if name in contenders and contenders[name].compilations() != 1:
      raise RuntimeError(f"{name} compiled {contenders[name].compilations()} times for one batch shape")
  mm_flops = 2.0 * matmul ** 3 * MATMULS_PER_CALL
  out = {"size": size, "batch": batch, "inputs": inputs, "targets": targets, "prompt": prompt, "matmul_n": matmul,
         "step_flops": step_flops, "step_median_s": timing["train_step"]["median_s"], "compilations": 1,
         "load_avg": timing["train_step"]["load_avg"], "gflops": {}}
  for name in contenders:  # Steps: median time. Matmuls: the peak is the fastest call.
    if name in step_flops_of:
      out["gflops"][name] = step_flops_of[name] / timing[name]["median_s"] / 1e9
    else:
      out["gflops"][name] = mm_flops / min(timing[name]["seconds"]) / 1e9
  out["step_over_xla_fp32_peak"] = out["gflops"]["train_step"] / out["gflops"]["xla_fp32"]
  return out


def print_targets(out: dict) -> None:
  g = out["gflops"]
  bench_common.target_line("prompt-tuning step GFLOP/s / XLA fp32 matmul peak", out["step_over_xla_fp32_peak"], 0.60,
                           why_missed="see docs/benchmarks.md: attention softmax/bias, layer norms and the "
                                      "vocabulary log-softmax are memory-bound on CPU")
  line = ", ".join(f"{k} {v:.1f}" for k, v in g.items())
  print(f"  GFLOP/s: {line}")
  if "torch_bf16" in g:
    print(f"  bf16 / fp32 matmul speed: XLA {g['xla_bf16'] / g['xla_fp32']:.2f}, torch "
          f"{g['torch_bf16'] / g['torch_fp32']:.2f} (a CPU limit when both are < 1)")


def main(argv=None):
  parser = bench_common.step_shape_parser(__doc__.split("\n")[0], SIZES)
  parser.add_argument("--matmul", type=int, default=2048, help="n of the n x n matmul micro-benchmark")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--bf16_step", action="store_true", help="also time the step with bf16 activations")
  args = parser.parse_args(argv)
  kw = dict(bench_common.step_shape_kwargs(args), matmul=args.matmul, repeats=args.repeats,
            bf16_step=args.bf16_step)
  if args.quick:
    kw.update(QUICK)
  out = run(**kw)
  bench_common.emit({"bench": "utilisation", **out}, args.out)
  print_targets(out)
  return out


if __name__ == "__main__":
  main(sys.argv[1:])
