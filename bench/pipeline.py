"""Issue 9 item 6: input pipeline throughput vs what the train step consumes, on the tiny model.

Measured in one run on real RTE train (Lester lengths: inputs 512, targets 8):

* `seqio_batches`: the training input (`xprompt_jax.training.data.batches`: SeqIO task -> T5X feature converter ->
  tf.data batch + prefetch), examples/s over `num_batches` batches;
* `tokenize_epoch`: one pass of `bucketing.tokenized_examples` (SeqIO preprocessing + SentencePiece) into memory —
  the cost paid once when the tokenised examples are cached;
* `bucket_cached` / `pack_cached`: re-batching the cached examples (bucketing / prompt-aware packing), numpy only;
* `train_step`: the jitted prompt-tuning step of the tiny model at the padded shape (examples/s).

The pipeline must never be the bottleneck: each producer's examples/s ÷ the step's is printed (≥ 1 is fine).

    python bench/pipeline.py
    python bench/pipeline.py --quick
"""
import argparse
import itertools
import sys
import time

import jax

import bench_common
from step_vs_peft import OurStep, SIZES
from xprompt_jax.methods.prompt import PromptTuning
from xprompt_jax.models.t5 import init_params
from xprompt_jax.training import bucketing, packing
from xprompt_jax.training.data import DataConfig, batches

TASK = "super_glue_rte_v102"
QUICK = dict(num_batches=4, max_examples=64, prompt=4, step_repeats=2)


def _rate(n: int, seconds: float) -> float:
  return n / seconds if seconds > 0 else float("inf")


def run(num_batches=50, max_examples=0, batch=8, inputs=512, targets=8, prompt=100, step_repeats=5) -> dict:
  cfg = DataConfig(mixture_or_task_name=TASK, inputs_length=inputs, targets_length=targets, batch_size=batch)
  start = time.perf_counter()
  stream = batches(cfg)
  first = next(stream)
  first_batch_s = time.perf_counter() - start
  start = time.perf_counter()
  for _ in itertools.islice(stream, num_batches):
    pass
  seqio_rate = _rate(num_batches * batch, time.perf_counter() - start)

  start = time.perf_counter()
  examples = list(itertools.islice(bucketing.tokenized_examples(TASK, "train", inputs, targets, shuffle=True),
                                   max_examples or None))
  tokenize_rate = _rate(len(examples), time.perf_counter() - start)
  start = time.perf_counter()
  n_bucketed = sum(bucketing.num_examples(b) for b in bucketing.bucketed_batches(examples, (64, 128, 256, 512),
                                                                                 batch, targets))
  bucket_rate = _rate(n_bucketed, time.perf_counter() - start)
  start = time.perf_counter()
  n_packed = sum(packing.num_segments(b) for b in packing.packed_batches(examples, 2, prompt + inputs, 6 * targets,
                                                                         prompt, max_segments=6))
  pack_rate = _rate(n_packed, time.perf_counter() - start)

  config = SIZES["tiny"]
  step = OurStep(config, init_params(config, jax.random.PRNGKey(0)), PromptTuning(length=prompt,
                                                                                   prompt_init="random_uniform"),
                 first)
  step()
  timing = bench_common.interleaved({"train_step": step}, step_repeats)["train_step"]
  step_rate = batch / timing["median_s"]
  rates = {"seqio_batches": seqio_rate, "tokenize_epoch": tokenize_rate, "bucket_cached": bucket_rate,
           "pack_cached": pack_rate, "train_step_tiny": step_rate}
  return {"batch": batch, "inputs": inputs, "targets": targets, "prompt": prompt, "first_batch_s": first_batch_s,
          "examples_per_s": rates, "over_step": {k: v / step_rate for k, v in rates.items() if k != "train_step_tiny"},
          "load_avg": timing["load_avg"]}


def print_targets(out: dict) -> None:
  for name, ratio in out["over_step"].items():
    bench_common.target_line(f"{name} examples/s / tiny train step examples/s", ratio, 1.0)
  print(f"  first batch after {out['first_batch_s']:.1f}s (task loading, tf.data start-up)")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num_batches", type=int, default=50)
  parser.add_argument("--max_examples", type=int, default=0, help="0: the whole train split")
  parser.add_argument("--prompt", type=int, default=100)
  parser.add_argument("--out", default=None)
  parser.add_argument("--quick", action="store_true")
  args = parser.parse_args(argv)
  kw = dict(num_batches=args.num_batches, max_examples=args.max_examples, prompt=args.prompt)
  if args.quick:
    kw.update(QUICK)
  out = run(**kw)
  bench_common.emit({"bench": "pipeline", **out}, args.out)
  print_targets(out)
  return out


if __name__ == "__main__":
  main(sys.argv[1:])
