"""Issue 9 item 4 (TPU part): the prompt-tuning step's FLOPs on a TPU slice from an ahead-of-time compile.

Uses `xprompt_jax.training.aot.compile_train_step` (needs `libtpu`, the `[aot]` extra; nothing runs on a TPU): the
same step and shapes as `bench/utilisation.py`, activations in bf16 as on TPU. XLA's per-device FLOP count is
turned into a roofline time at the chip's published bf16 peak (v5e 197 TFLOP/s, v4 275 TFLOP/s per chip): a
lower bound on the step time, not a measurement. `aot.py` does not expose XLA's own time estimate.

    python bench/tpu_estimate.py --topologies v5e:1x1,v4:1x1x1
"""
import argparse
import json
import os
import sys
import time
from xprompt_jax.methods.prompt import PromptTuning
from xprompt_jax.models.config import PRESETS
from xprompt_jax.training import aot
from xprompt_jax.training.partitioning import MeshConfig

PEAK_BF16 = {"v5e": 197e12, "v4": 275e12, "v5p": 459e12, "v6e": 918e12}


def run(size="t5_1_1_small", topologies=("v5e:1x1", "v4:1x1x1"), batch=8, inputs=256, targets=8,
        prompt=100) -> list[dict]:
  if not aot.libtpu_available():
    raise SystemExit("libtpu is not installed (pip install -e .[aot]); no TPU estimate")
  config = PRESETS[size].replace(dtype="bfloat16")
  out = []
  for name in topologies:
    topo = aot.parse_topology(name)
    report = aot.compile_train_step(config, PromptTuning(length=prompt, prompt_init="random_uniform"), None,
                                    MeshConfig(), batch, inputs, targets, topo, include_eval=False)
    flops = report["train"]["flops_per_device"]
    peak = PEAK_BF16.get(topo.generation)
    out.append({"topology": topo.name, "device_kind": report["device_kind"], "num_devices": report["num_devices"],
                "model": size, "batch": batch, "inputs": inputs, "targets": targets, "prompt": prompt,
                "flops_per_device": flops, "matmul_flops_per_device": report["train"]["matmul_flops_per_device"],
                "roofline_step_s": flops / peak if flops and peak else None, "fits": report["train"]["fits"]})
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", default="t5_1_1_small")
  parser.add_argument("--topologies", default="v5e:1x1,v4:1x1x1")
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  rows = run(args.size, tuple(args.topologies.split(",")))
  for r in rows:  # Not bench_common.emit: importing bench_common pins JAX to the CPU platform.
    text = json.dumps({"bench": "tpu_estimate", "load_avg": round(os.getloadavg()[0], 2),
                       "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **r})
    print(text, flush=True)
    if args.out:
      with open(args.out, "a", encoding="utf-8") as f:
        f.write(text + "\n")
  return rows


if __name__ == "__main__":
  main(sys.argv[1:])
