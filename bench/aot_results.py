"""Regenerates bench/aot_results.jsonl and docs/aot_results.md: AOT compile estimates of T5 1.1 XL/XXL prompt tuning.

    python bench/aot_results.py                 # compile every configuration (~1-3 min each on 2 CPU cores)
    python bench/aot_results.py --only xxl_v4   # configurations whose id contains the text
    python bench/aot_results.py --markdown_only # rewrite the markdown from the existing jsonl

Every configuration is the Lester et al. recipe (recipes/lester.gin: batch 32, 512 input tokens + a 100-token
prompt, 8 target tokens, bf16 activations, dropout 0.1, Adafactor) compiled by `xprompt_jax.training.aot` for a
TPU slice described by libtpu on a CPU-only machine. Nothing runs on a TPU: every number is the XLA TPU
compiler's estimate. Needs `pip install 'xprompt_jax[aot]'`.
"""
import argparse
from concurrent import futures
import datetime
import importlib.metadata
import json
import os
import pathlib
import re
import subprocess
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # Compile-only: never claim a local accelerator.

from xprompt_jax.methods import get_method  # pylint: disable=g-import-not-at-top
from xprompt_jax.models.config import PRESETS
from xprompt_jax.training import aot
from xprompt_jax.training import optim
from xprompt_jax.training import partitioning

ROOT = pathlib.Path(__file__).resolve().parent.parent
JSONL = ROOT / "bench" / "aot_results.jsonl"
MARKDOWN = ROOT / "docs" / "aot_results.md"

BATCH, INPUTS, TARGETS, PROMPT = 32, 512, 8, 100

# (id, model preset, topology, mesh model size, rules, T5Config overrides, compile the eval step too).
# In execution order (the most informative first, so a partial run is still useful); the markdown groups rows by
# model and slice.
CONFIGS = (
    ("xxl_v4-128_model8", "t5_1_1_xxl", "v4-128", 8, "default", {}, True),
    ("xxl_v5e-16_model8_fsdp", "t5_1_1_xxl", "v5e-16", 8, "fsdp", {}, False),
    ("xl_v4-8_data", "t5_1_1_xl", "v4-8", 1, "default", {}, False),
    ("xl_v5e-16_model4", "t5_1_1_xl", "v5e-16", 4, "default", {}, False),
    ("xxl_v5e-16_model16", "t5_1_1_xxl", "v5e-16", 16, "default", {}, False),
    ("xxl_v4-8_data", "t5_1_1_xxl", "v4-8", 1, "default", {}, False),
    ("xl_v5e-16_data", "t5_1_1_xl", "v5e-16", 1, "default", {}, False),
    ("xxl_v4-128_model8_fsdp", "t5_1_1_xxl", "v4-128", 8, "fsdp", {}, False),
    ("xxl_v4-128_model8_xxl", "t5_1_1_xxl", "v4-128", 8, "xxl", {}, False),
    ("xxl_v4-128_model4", "t5_1_1_xxl", "v4-128", 4, "default", {}, False),
    ("xxl_v4-128_model16", "t5_1_1_xxl", "v4-128", 16, "default", {}, False),
    ("xxl_v5e-16_model16_remat", "t5_1_1_xxl", "v5e-16", 16, "default", {"remat_policy": "full"}, False),
    ("xxl_v5e-16_model16_bf16params", "t5_1_1_xxl", "v5e-16", 16, "default", {"param_dtype": "bfloat16"}, False),
    ("xxl_v5e-256_model8", "t5_1_1_xxl", "v5e-256", 8, "default", {}, False),
    # Full rematerialisation of each layer in the backward pass (activations of one layer live at a time).
    ("xl_v4-8_data_remat", "t5_1_1_xl", "v4-8", 1, "default", {"remat_policy": "full"}, False),
    ("xl_v5e-16_model4_remat", "t5_1_1_xl", "v5e-16", 4, "default", {"remat_policy": "full"}, False),
    ("xl_v4-8_model4_remat", "t5_1_1_xl", "v4-8", 4, "default", {"remat_policy": "full"}, False),
    ("xxl_v5e-16_model8_fsdp_remat", "t5_1_1_xxl", "v5e-16", 8, "fsdp", {"remat_policy": "full"}, True),
    # Unscanned, so XLA's FLOP count covers every layer: a check of the analytic matmul count.
    ("small_v4-8_data_unscanned", "t5_1_1_small", "v4-8", 1, "default", {"scan_layers": False}, True),
)


def run_config(config_id, preset, topology, model, rules, overrides, with_eval) -> dict:
  """One compile; the layer stacks are scanned (one layer body compiled, as for any large model) unless overridden."""
  config = PRESETS[preset].replace(**{"dtype": "bfloat16", "dropout_rate": 0.1, "scan_layers": True, **overrides})
  method = get_method("prompt", length=PROMPT)
  report = aot.compile_train_step(config, method, optim.OptimizerConfig(),
                                  partitioning.MeshConfig(model=model, rules=rules), BATCH, INPUTS, TARGETS,
                                  topology, include_eval=with_eval)
  report["id"] = config_id
  return report


def _gib(n) -> str:
  return "—" if n is None else f"{n / (1 << 30):.2f}"


def _tflop(n) -> str:
  return "—" if n is None else f"{n / 1e12:.2f}"


def _row(r: dict, step: str) -> str:
  s = r[step]
  mem = s["memory"]
  coll = ", ".join(f"{k} {v}" for k, v in s.get("collectives", {}).items() if v) or "—"
  if "error" in s:
    coll = "compile refused: out of HBM"
  overrides = [f"remat={r['remat_policy']}"] if r["remat_policy"] != "none" else []
  overrides += [f"params {r['param_dtype']}"] if r["param_dtype"] != "float32" else []
  return (f"| {r['model'].replace('t5_1_1_', '').upper()} | {step} | {r['topology']} | {r['mesh']['data']}×"
          f"{r['mesh']['model']} | {r['rules']}{' (' + ', '.join(overrides) + ')' if overrides else ''} | "
          f"{_gib(mem.get('arguments'))} | {_gib(mem.get('temporaries'))} | "
          f"{('≥ ' if 'error' in s else '') + _gib(mem.get('total'))} | "
          f"{_gib(mem.get('peak'))} | {_gib(r['hbm_bytes_per_device'])} | {'**yes**' if s['fits'] else 'no'} | "
          f"{_tflop(s.get('flops_per_device'))} | {_tflop(s.get('matmul_flops_per_device'))} | {coll} | "
          f"{s['lower_seconds'] + s['compile_seconds']:.0f} |")


def _error_text(error: str) -> str:
  """A failed configuration's error; a compiler process killed by SIGSEGV is named as such (its stderr only
  holds libtpu's start-up noise before the crash)."""
  if error.startswith("compile process exited with status -11"):
    where = re.search(r"xla::[\w:]+", error)
    return ("the TPU compiler crashed while compiling the train step (SIGSEGV"
            + (", stack overflow" if "STACK OVERFLOW" in error else "")
            + (f" in `{where.group(0)}`" if where else "") + "; exit status -11)")
  return error


def markdown(reports: list[dict]) -> str:
  """docs/aot_results.md from the reports (generated: never edit the numbers by hand)."""
  done = [r for r in reports if "error" not in r]
  versions = sorted({r["jax_version"] for r in done})
  libtpu = sorted({r.get("libtpu_version") or importlib.metadata.version("libtpu") for r in done})
  lines = [
      "# AOT compile estimates: T5 1.1 XL / XXL prompt tuning on TPU slices",
      "",
      "**These are ahead-of-time compile estimates, not measurements: no TPU was run.** Generated by "
      "`python bench/aot_results.py` (raw reports in `bench/aot_results.jsonl`); do not edit by hand.",
      "",
      f"Each row lowers and compiles the real `make_train_step` (or `make_eval_loss`) of xprompt_jax with the XLA "
      f"TPU compiler of libtpu {', '.join(libtpu)} (jax {', '.join(versions)}) for a slice described by "
      "`jax.experimental.topologies.get_topology_desc` on a CPU-only machine; inputs are `ShapeDtypeStruct`s "
      "with their `NamedSharding`s, so nothing is allocated.",
      "",
      f"Setup (the Lester et al. recipe, `recipes/lester.gin`): prompt tuning with L = {PROMPT}, batch {BATCH} × "
      f"{INPUTS} input tokens (+{PROMPT} prompt positions = {INPUTS + PROMPT} encoder positions), {TARGETS} target "
      "tokens, bf16 activations, float32 frozen parameters (unless noted), dropout 0.1, Adafactor; "
      "`scan_layers=True` (one encoder and one decoder layer body compiled). The train state is donated and "
      "replicated, the frozen parameters are sharded by the rule set (`default`: tensor parallelism on 'model'; "
      "`xxl`: also `embed` on 'model'; `fsdp`: also `embed` on 'data'), the batch is split over 'data'.",
      "",
      "Columns: per-device bytes from `compiled.memory_analysis()` — arguments (frozen shard + state + batch), "
      "temporaries, total = arguments + outputs − aliased + temporaries + generated code (a plain sum), and XLA's "
      "peak of live buffers; a configuration *fits* when the TPU compiler accepted it (it refuses programs that "
      "exceed HBM) and the peak ≤ the chip's HBM (v4 32 GiB, v5e 16 GiB, v5p 95 GiB). When the "
      "TPU compiler itself refuses the program (out of HBM), total shows what its message says was needed (a "
      "lower bound: usually the temporaries alone; the compiler also reserves some HBM, e.g. it offers 15.75 of "
      "v5e's 16 GiB). "
      "XLA TFLOP/dev is `compiled.cost_analysis()['flops']` for one device and one step; **with scan_layers XLA "
      "counts the layer loop body once**, so it is far below the real work — the analytic matmul TFLOP/dev "
      "(`aot.matmul_flops`: all projection and attention matmuls of the step, backward through the frozen model "
      "without weight gradients, divided by the device count) is the number to plan with. Collectives are static "
      "instruction counts in the compiled HLO (an op inside the layer loop counts once). Time = lower + compile "
      "seconds on 2 shared CPU cores.",
      "",
      "| model | step | slice | mesh data×model | rules | args GiB | temp GiB | total GiB | peak GiB | HBM GiB | "
      "fits | XLA TFLOP/dev | matmul TFLOP/dev | collectives | time s |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in sorted(reports, key=lambda r: (r.get("model", ""), r.get("topology", ""))):
    if "error" in r:
      continue
    lines.append(_row(r, "train"))
    if "eval" in r:
      lines.append(_row(r, "eval"))
  failed = [r for r in reports if "error" in r]
  if failed:
    lines += ["", "Configurations that could not be compiled:", ""]
    lines += [f"* `{r['id']}`: {_error_text(r['error'])}" for r in failed]
  check = next((r for r in reports if "error" not in r and not r["scan_layers"] and "error" not in r["train"]), None)
  if check:
    ratios = ", ".join(f"{step} {check[step]['flops_per_device'] / check[step]['matmul_flops_per_device']:.3f}"
                       for step in ("train", "eval") if step in check)
    lines += ["", f"FLOP check: in the unscanned {check['model']} row XLA counts every layer; XLA / analytic "
              f"matmul FLOPs = {ratios} (XLA also counts element-wise work: softmax, GELU, dropout, the "
              "optimizer)."]
  lines += ["", _conclusions(reports), "", "## Reproduce", "",
            "One configuration from the command line (prints a table, appends the report to the jsonl):", "",
            "    pip install 'xprompt_jax[aot]'", "    xprompt-jax compile --gin_file=models/t5_1_1_xxl.gin "
            "--gin_file=methods/prompt.gin --gin_file=recipes/lester.gin \\",
            "      --gin.T5Config.scan_layers=True --gin.MeshConfig.model=8 --topology=v4-128 --output=aot.jsonl", "",
            "All rows: `python bench/aot_results.py --workers 3`.", ""]
  return "\n".join(lines)


def _conclusions(reports: list[dict]) -> str:
  """Which mesh makes XXL fit per slice, read off the reports (the cheapest fitting train step per slice)."""
  out = ["## What fits", ""]
  ok = [r for r in reports if "error" not in r]
  for model in sorted({r["model"] for r in ok}):
    for topology in sorted({r["topology"] for r in ok if r["model"] == model}):
      rows = [r for r in ok if r["model"] == model and r["topology"] == topology]
      fitting = [r for r in rows if r["train"]["fits"]]
      name = model.replace("t5_1_1_", "T5 1.1 ").upper().replace("T5 1.1 ", "T5 1.1 ")
      if not fitting:
        out.append(f"* {name} on {topology}: no tried configuration fits.")
        continue
      used_of = lambda r: r["train"]["memory"].get("peak") or r["train"]["memory"]["total"]
      best = min(fitting, key=used_of)
      used = used_of(best)
      others = sorted(r["id"] for r in rows if not r["train"]["fits"])
      out.append(f"* {name} on {topology}: lowest train-step memory with mesh {best['mesh']['data']}×"
                 f"{best['mesh']['model']}, rules `{best['rules']}`, remat `{best['remat_policy']}`, params "
                 f"{best['param_dtype']}: peak {_gib(used)} of {_gib(best['hbm_bytes_per_device'])} GiB per device"
                 + (f"; does not fit: {', '.join(others)}" if others else "") + ".")
  return "\n".join(out)


def _run_one(config) -> dict:
  """One configuration in this process: its report, or its error when the mesh does not suit the slice."""
  start = time.time()
  try:
    report = run_config(*config)
  except ValueError as e:  # A mesh the slice or the model cannot take: recorded, not fatal.
    report = {"id": config[0], "error": str(e)}
  report["generated"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  report["wall_seconds"] = round(time.time() - start, 1)
  return report


def _run_in_subprocess(config) -> dict:
  """One configuration in a fresh process (`--one ID`), so a crash of the TPU compiler is recorded, not fatal."""
  start = time.time()
  proc = subprocess.run([sys.executable, __file__, "--one", config[0]], capture_output=True, text=True, check=False)
  lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
  if proc.returncode == 0 and lines:
    return json.loads(lines[-1])
  stderr = proc.stderr.splitlines()
  crash = ([line.strip() for line in stderr if "SIGSEGV" in line or line.startswith("PC: ")]
           or [line.strip() for line in stderr if "Error" in line and "TPU_WORKER_HOSTNAMES" not in line])
  crash = [" ".join(crash[:2])] if crash else []
  return {"id": config[0], "error": f"compile process exited with status {proc.returncode}"
          + (f": {crash[0][:300]}" if crash else ""), "wall_seconds": round(time.time() - start, 1),
          "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--only", default="", help="Run only configurations whose id contains this text (the "
                      "others keep their previous jsonl lines).")
  parser.add_argument("--missing", action="store_true", help="Run only configurations not yet in the jsonl.")
  parser.add_argument("--workers", type=int, default=1, help="Compile this many configurations at once (one "
                      "process each, so a compiler crash only fails its row; an XXL compile takes ~2 GB of host "
                      "memory).")
  parser.add_argument("--markdown_only", action="store_true", help="Only rewrite the markdown from the jsonl.")
  parser.add_argument("--jsonl", type=pathlib.Path, default=JSONL, help="Reports file to read and write.")
  parser.add_argument("--markdown", type=pathlib.Path, default=MARKDOWN, help="Markdown file to write.")
  parser.add_argument("--merge", type=pathlib.Path, nargs="*", default=(), help="Also take the reports of these "
                      "jsonl files (e.g. of a parallel run with another --jsonl); they replace same-id reports.")
  parser.add_argument("--one", help=argparse.SUPPRESS)  # Internal: compile one configuration, print its report.
  args = parser.parse_args()
  if not aot.libtpu_available():
    sys.exit("libtpu is not installed: pip install 'xprompt_jax[aot]'")
  if args.one:
    print(json.dumps(_run_one(next(c for c in CONFIGS if c[0] == args.one)), sort_keys=True))
    return
  previous = {}
  for path in (args.jsonl, *args.merge):
    if path.exists():
      for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
          report = json.loads(line)
          if "error" in report and report["id"] in previous and "error" not in previous[report["id"]]:
            continue  # A failed (e.g. interrupted) rerun does not replace a good report.
          previous[report["id"]] = report
  write = lambda: _write(previous, args.jsonl, args.markdown)
  if not args.markdown_only:
    todo = [c for c in CONFIGS if args.only in c[0] and not (args.missing and c[0] in previous)]
    with futures.ThreadPoolExecutor(max_workers=args.workers) as pool:
      for report in (f.result() for f in futures.as_completed([pool.submit(_run_in_subprocess, c) for c in todo])):
        previous[report["id"]] = report
        print(f"{report['id']}: {report['wall_seconds']:.0f} s", file=sys.stderr, flush=True)
        write()
  write()


def _write(by_id: dict, jsonl: pathlib.Path, markdown_path: pathlib.Path) -> None:
  order = [c[0] for c in CONFIGS]
  reports = [by_id[i] for i in order if i in by_id]
  for r in reports:  # One verdict rule for every row, whichever aot version produced it.
    for step in ("train", "eval"):
      if step in r and "error" not in r[step]:
        r[step].update(aot.hbm_verdict(r[step]["memory"], r["hbm_bytes_per_device"]))
  jsonl.parent.mkdir(parents=True, exist_ok=True)
  jsonl.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in reports), encoding="utf-8")
  markdown_path.parent.mkdir(parents=True, exist_ok=True)
  markdown_path.write_text(markdown(reports), encoding="utf-8")


if __name__ == "__main__":
  main()
