"""A `Grid` as markdown (printed and written to `<results_dir>/table.md`), json (`table.json`) and, for a table with a
figure, PNG (`table.png`)."""
from typing import Sequence

from xprompt_jax.tables import base


def markdown(grid: base.Grid, *, command: str = "", unfinished: Sequence[str] = ()) -> str:
  headers = ["", *grid.columns, *grid.quote_columns]
  lines = [f"# {grid.title}", ""]
  if command:
    lines += [f"Made by `{command}`.", ""]
  lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
  for label, cells in grid.rows:
    quoted = list(grid.quotes.get(label, ())) if grid.quote_columns else []
    quoted += [base.MISSING] * (len(grid.quote_columns) - len(quoted))
    lines.append("| " + " | ".join([label, *cells, *quoted]) + " |")
  lines.append("")
  if grid.quote_columns:
    lines += ["Columns marked *paper (quoted)* are the paper's numbers as the seeds quote them, not runs of this "
              "code.", ""]
  lines += [f"- {note}" for note in grid.notes]
  if unfinished:
    lines += ["", f"Not finished ({len(unfinished)} runs, cells shown as {base.MISSING}): "
              + ", ".join(unfinished[:20]) + (" ..." if len(unfinished) > 20 else "")]
  return "\n".join(lines) + "\n"


def as_json(grid: base.Grid) -> dict:
  return {"title": grid.title, "columns": grid.columns, "rows": [{"label": l, "cells": c} for l, c in grid.rows],
          "quote_columns": grid.quote_columns, "quotes": grid.quotes, "notes": grid.notes,
          **({"plot": grid.plot} if grid.plot else {})}


def plot_png(grid: base.Grid) -> bytes:
  """The table's figure (`Grid.plot`) as PNG bytes: one line per series over the rows, with ±std error bars, the
  points without a number left out (a table whose runs are not finished plots what is)."""
  import io
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  spec = grid.plot
  fig, ax = plt.subplots(figsize=(7, 4.5))
  labels = [x for x, *_ in next(iter(spec["series"].values()))]
  for name, points in spec["series"].items():
    xs = [i for i, (_, mean, _) in enumerate(points) if mean is not None]
    if xs:
      ax.errorbar(xs, [points[i][1] for i in xs], yerr=[points[i][2] or 0.0 for i in xs], marker="o", capsize=3,
                  label=name)
  ax.set_xticks(range(len(labels)), labels, fontsize=8)
  ax.set_xlabel(spec["x_label"])
  ax.set_ylabel(spec["y_label"])
  ax.set_title(grid.title, fontsize=9)
  if ax.lines:
    ax.legend(fontsize=8, loc="best")
  else:
    ax.text(0.5, 0.5, "no finished row yet", ha="center", va="center", transform=ax.transAxes)
  fig.tight_layout()
  out = io.BytesIO()
  fig.savefig(out, format="png", dpi=120)
  plt.close(fig)
  return out.getvalue()
