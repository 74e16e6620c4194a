"""The human-readable table of one `aot.compile_train_step` report: what `xprompt-jax compile` prints."""


def _gib(n) -> str:
  return "-" if n is None else f"{n / (1 << 30):.2f}"


def format_report(report: dict) -> str:
  """A small human-readable table of one `compile_train_step` report (what `xprompt-jax compile` prints)."""
  slices = f"{report['num_slices']} x " if report.get("num_slices", 1) > 1 else ""
  head = (f"{report['model']} {report['method']} on {slices}{report['topology']} ({report['num_devices']} x "
          f"{report['device_kind']}, {_gib(report['hbm_bytes_per_device'])} GiB HBM each), mesh data="
          f"{report['mesh']['data']} x model={report['mesh']['model']}, rules={report['rules']}, scan_layers="
          f"{report['scan_layers']}, remat={report['remat_policy']}, batch {report['batch_size']} x "
          f"{report['encoder_length']} (+{report['targets_length']} targets)  [AOT compile estimate]")
  cols = ("step", "args GiB", "temp GiB", "total GiB", "peak GiB", "fits", "XLA TFLOP/dev", "matmul TFLOP/dev",
          "collectives", "compile s")
  rows = []
  for name in ("train", "eval"):
    if name not in report:
      continue
    r = report[name]
    mem = r["memory"]
    tflop = lambda key: "-" if r.get(key) is None else f"{r[key] / 1e12:.3f}"
    coll = " ".join(f"{k}={v}" for k, v in r.get("collectives", {}).items() if v) or "none"
    rows.append((name, _gib(mem.get("arguments")), _gib(mem.get("temporaries")), _gib(mem.get("total")),
                 _gib(mem.get("peak")), "yes" if r["fits"] else "NO",
                 tflop("flops_per_device"), tflop("matmul_flops_per_device"),
                 coll if "error" not in r else "(out of HBM: compile refused)",
                 f"{r.get('compile_seconds', 0):.0f}"))
  widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
  line = lambda cells: "  ".join(f"{c:<{w}}" for c, w in zip(cells, widths))
  note = ("XLA TFLOP/dev counts the scanned layer loop once; matmul TFLOP/dev is the analytic count of the whole "
          "step" if report["scan_layers"] else "")
  return "\n".join([head, line(cols), *map(line, rows)] + ([note] if note else []))
