"""Issue 9 item 2: end-to-end prompt-tuning throughput on real RTE train, ours vs PEFT (Lester setting).

Lester et al.: prompt length 100, inputs up to 512 tokens, targets up to 8. The same shuffled RTE train examples
(from ../shared through the `super_glue_rte_v102` task) go through:

* `peft`: PEFT prompt tuning, batches padded to the longest example of each batch (what HF's
  `DataCollatorForSeq2Seq` does), torch Adafactor;
* `ours_bucketed`: length bucketing (`xprompt_jax.training.bucketing`, boundaries 64/128/256/512: at most four
  compiled shapes), the prompt prepended by the model;
* `ours_packed`: prompt-aware packing (`xprompt_jax.training.packing`): rows of P + 512 encoder positions holding
  several examples, each with its own prompt copy;
* `ours_padded` (optional, `--with_padded`): every batch padded to 512, the naive baseline.

Batches are built before timing (the input pipeline is measured by `bench/pipeline.py`); each of our variants
runs one warm-up pass over its distinct shapes first, and PEFT one untimed epoch (its first-seen shapes are
slow too); warm-up times are reported apart. The contenders then run
round-robin over the whole example set `repeats` times; examples/s = real examples / median epoch seconds.

    python bench/e2e_rte.py --size small --max_examples 256
    python bench/e2e_rte.py --quick
"""
import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import bench_common
import hf_bridge
from step_vs_peft import LOSS, SIZES, PeftStep
from xprompt_jax.methods.prompt import PromptTuning
from xprompt_jax.models.t5 import T5, init_params
from xprompt_jax.training import bucketing, packing
from xprompt_jax.training.optim import OptimizerConfig, make_optimizer
from xprompt_jax.training.step import init_state, make_train_step

TASK = "super_glue_rte_v102"
MAX_SEGMENTS = 6
QUICK = dict(size="tiny", max_examples=24, prompt=4, inputs=512, targets=8, batch=4, boundaries=(64, 128, 256, 512),
             repeats=1)


class OurEpoch:
  """Our jitted step over a fixed list of batches (one state, carried across epochs)."""

  def __init__(self, config, frozen, method, batches, seed=0):
    optimizer = make_optimizer(OptimizerConfig())
    self.step = jax.jit(make_train_step(T5(config), method, config, optimizer, LOSS))
    self.state = init_state(method, frozen, config, optimizer, jax.random.PRNGKey(seed))
    self.frozen = frozen
    self.batches = [{k: jnp.asarray(v) for k, v in b.items()} for b in batches]

  def warm_up(self) -> float:
    """Compiles every distinct batch shape once; returns the seconds spent."""
    start = time.perf_counter()
    seen = set()
    for b in self.batches:
      key = tuple(sorted((k, v.shape) for k, v in b.items()))
      if key not in seen:
        seen.add(key)
        _, metrics = self.step(self.state, b, self.frozen)
        jax.block_until_ready(metrics["loss"])
    return time.perf_counter() - start

  def __call__(self):
    metrics = None
    for b in self.batches:
      self.state, metrics = self.step(self.state, b, self.frozen)
    jax.block_until_ready(metrics["loss"])

  def compilations(self) -> int:
    return self.step._cache_size()  # pylint: disable=protected-access


def pad_to_longest(examples, batch_size: int, targets_length: int):
  """Batches padded to their longest input (HF's usual seq2seq collation)."""
  out = []
  for i in range(0, len(examples), batch_size):
    chunk = examples[i:i + batch_size]
    longest = max(e["inputs"].shape[0] for e in chunk)
    out.append(bucketing.pad_batch(chunk, len(chunk), longest, targets_length))
  return out


class PeftEpoch:
  def __init__(self, peft_model, batches):
    self.step = PeftStep(peft_model, batches[0])  # The model and its optimizer.
    self.inputs = [hf_bridge.torch_batch(b) for b in batches]

  def warm_up(self) -> float:
    """One untimed epoch: torch/oneDNN prepare kernels per new input shape, as XLA compiles per shape."""
    start = time.perf_counter()
    self()
    return time.perf_counter() - start

  def __call__(self):
    for inputs in self.inputs:
      hf_bridge.torch_train_step(self.step.model, self.step.optimizer, inputs)


def run(size="small", max_examples=256, prompt=100, inputs=512, targets=8, batch=8, boundaries=(64, 128, 256, 512),
        repeats=1, with_padded=False, seed=0) -> dict:
  config = SIZES[size]
  examples = list(bucketing.tokenized_examples(TASK, "train", inputs, targets, shuffle=True, seed=seed))
  examples = examples[:max_examples] if max_examples else examples
  n = len(examples)
  frozen = init_params(config, jax.random.PRNGKey(seed))
  method = PromptTuning(length=prompt, prompt_init="sampled_vocab")
  bucketed = list(bucketing.bucketed_batches(examples, boundaries, batch, targets))
  rows_per_batch = max(1, batch // 4)  # RTE averages ~4 examples (each P + ~70 tokens) per P + 512 row.
  packed = list(packing.packed_batches(examples, rows_per_batch, prompt + inputs, MAX_SEGMENTS * targets, prompt,
                                       max_segments=MAX_SEGMENTS))
  contenders = {"ours_bucketed": OurEpoch(config, frozen, method, bucketed, seed),
                "ours_packed": OurEpoch(config, frozen, method, packed, seed)}
  if with_padded:
    contenders["ours_padded"] = OurEpoch(config, frozen, method, [
        bucketing.pad_batch(examples[i:i + batch], batch, inputs, targets) for i in range(0, n, batch)], seed)
  prompt_init = np.asarray(contenders["ours_bucketed"].state["trainable"]["prompt"])
  compile_s = {name: c.warm_up() for name, c in contenders.items()}
  if bench_common.bench_deps_available() is None:
    peft_model = hf_bridge.peft_prompt_model(hf_bridge.hf_model(frozen, config), prompt_init)
    contenders["peft"] = PeftEpoch(peft_model, pad_to_longest(examples, batch, targets))
    compile_s["peft"] = contenders["peft"].warm_up()
  timing = bench_common.interleaved(contenders, repeats)
  padded_tokens = {"ours_bucketed": sum(b["encoder_input_tokens"].size for b in bucketed),
                   "ours_packed": sum(b["encoder_input_tokens"].size for b in packed)}
  out = {"size": size, "examples": n, "prompt": prompt, "inputs": inputs, "targets": targets, "batch": batch,
         "boundaries": list(boundaries), "packed_rows_per_batch": rows_per_batch, "compile_s": compile_s,
         "real_input_tokens": int(sum(e["inputs"].shape[0] for e in examples)),
         "encoder_tokens_fed": padded_tokens, "packed_batches": len(packed), "bucketed_batches": len(bucketed),
         "packed_examples": sum(packing.num_segments(b) for b in packed),
         "bucketed_examples": sum(bucketing.num_examples(b) for b in bucketed),
         "compilations": {k: c.compilations() for k, c in contenders.items() if isinstance(c, OurEpoch)},
         "examples_per_s": {k: n / t["median_s"] for k, t in timing.items()},
         "epoch_s": {k: t["seconds"] for k, t in timing.items()}, "load_avg": timing[next(iter(timing))]["load_avg"]}
  if "peft" in out["examples_per_s"]:
    out["ratios_over_peft"] = {k: v / out["examples_per_s"]["peft"] for k, v in out["examples_per_s"].items()}
  return out


def print_targets(out: dict) -> None:
  for name, ratio in out.get("ratios_over_peft", {}).items():
    if name != "peft":
      bench_common.target_line(f"end-to-end RTE train ({out['examples']} examples), {name} / PEFT examples/s",
                               ratio, 1.5)
  print(f"  compiled shapes: {out['compilations']} (bucketing is bounded by {len(out['boundaries'])} boundaries)")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", default="small", choices=sorted(SIZES))
  parser.add_argument("--max_examples", type=int, default=256, help="0: the whole epoch (2,490 examples)")
  parser.add_argument("--prompt", type=int, default=100)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=1)
  parser.add_argument("--with_padded", action="store_true")
  parser.add_argument("--out", default=None)
  parser.add_argument("--quick", action="store_true")
  args = parser.parse_args(argv)
  kw = dict(size=args.size, max_examples=args.max_examples, prompt=args.prompt, batch=args.batch,
            repeats=args.repeats)
  if args.quick:
    kw.update(QUICK)
  out = run(**kw, with_padded=args.with_padded)
  bench_common.emit({"bench": "e2e_rte", **out}, args.out)
  print_targets(out)
  return out


if __name__ == "__main__":
  main(sys.argv[1:])
