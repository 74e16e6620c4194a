"""Shared pieces of the benchmark scripts: interleaved timing, medians, load average, target lines, JSON records.

The machine is shared (2 cores, other jobs running), so every comparison runs its contenders round-robin
(`interleaved`) and reports medians and ratios, each record stamped with the 1-minute load average at the time.
Benchmarks never assert a wall time; they print `measured / target` lines and say when a target is missed.
"""
import argparse
import json
import os
import statistics
import sys
import time
from typing import Callable, Mapping, Optional

import jax

# Benchmarks measure this CPU: keep JAX off any TPU runtime that happens to be installed (libtpu for AOT).
if not os.environ.get("JAX_PLATFORMS"):
  jax.config.update("jax_platforms", "cpu")


def load_average() -> float:
  return round(os.getloadavg()[0], 2)


def timed(fn: Callable[[], object]) -> float:
  """Seconds of one call of `fn` (which must block until its result is ready)."""
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def interleaved(contenders: Mapping[str, Callable[[], object]], repeats: int) -> dict[str, dict]:
  """Runs each contender once per round, `repeats` rounds; per name the seconds of every run and their median."""
  times = {name: [] for name in contenders}
  loads = []
  for _ in range(repeats):
    for name, fn in contenders.items():
      times[name].append(timed(fn))
    loads.append(load_average())
  return {name: {"seconds": t, "median_s": statistics.median(t), "load_avg": statistics.median(loads)}
          for name, t in times.items()}


def target_line(what: str, measured: float, target: float, higher_is_better: bool = True, unit: str = "",
                why_missed: Optional[str] = None) -> dict:
  """Prints `what: measured / target` with MET or MISSED (and the reason) and returns the record."""
  met = measured >= target if higher_is_better else measured <= target
  sign = ">=" if higher_is_better else "<="
  line = f"  {what}: {measured:.3g}{unit} / target {sign} {target:.3g}{unit}  {'MET' if met else 'MISSED'}"
  if not met and why_missed:
    line += f"  ({why_missed})"
  print(line, flush=True)
  return {"what": what, "measured": measured, "target": target, "higher_is_better": higher_is_better, "met": met}


def emit(record: dict, path: Optional[str] = None) -> None:
  """Prints one JSON record (with the load average) and appends it to `path` when given."""
  record = {"load_avg": load_average(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record}
  text = json.dumps(record, default=float)
  print(text, flush=True)
  if path:
    with open(path, "a", encoding="utf-8") as f:
      f.write(text + "\n")


def bench_deps_available() -> Optional[str]:
  """None when torch, transformers and peft import; else the reason (the `[bench]` extra is missing)."""
  try:
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
  except ImportError as e:
    return f"benchmark extra not installed ({e}); pip install -e .[bench]"
  return None


def die(message: str) -> None:
  print(message, file=sys.stderr)
  raise SystemExit(2)


def step_shape_parser(description: str, sizes) -> argparse.ArgumentParser:
  """The arguments every train-step benchmark shares: model size, batch shape, prompt length, output, --quick."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("--size", default="small", choices=sorted(sizes))
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--inputs", type=int, default=256)
  parser.add_argument("--targets", type=int, default=8)
  parser.add_argument("--prompt", type=int, default=100)
  parser.add_argument("--out", default=None, help="append JSON records to this file")
  parser.add_argument("--quick", action="store_true", help="tiny sizes (the test suite's smoke run)")
  return parser


def step_shape_kwargs(args) -> dict:
  return dict(size=args.size, batch=args.batch, inputs=args.inputs, targets=args.targets, prompt=args.prompt)
