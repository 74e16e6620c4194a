"""A `Grid` as markdown (printed and written to `<results_dir>/table.md`) and json (`table.json`)."""
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
          "quote_columns": grid.quote_columns, "quotes": grid.quotes, "notes": grid.notes}
