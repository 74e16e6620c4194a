"""What a paper table is: the runs it needs (jobs, each its own model_dir) and how their records make the table.

A `PaperTable` names the per-run paper configs it reads (`gin_pattern`, e.g. `paper/prompt_tuning_{size}.gin`), the
jobs of one table (`jobs()`: every task x seed x stage, each a `Job` with its own folder under the results dir and
the gin bindings that make it that run) and `gather(records, size)`, which turns the finished jobs' records into a
`Grid` printed next to the paper's numbers (`quotes`, quoted from ../shared/seeds and labelled as quotes). The
`xprompt-jax table` command runs the jobs (`tables.runner`) and writes the grid (`tables.render`).
"""
import dataclasses
import re
from typing import Any, Mapping, Optional, Sequence

import numpy as np

SIZES = ("small", "base", "large", "xl", "xxl")
MISSING = "—"
NA = "n/a"  # A cell that has no number by construction (rank classification of free-text answers).


@dataclasses.dataclass(frozen=True)
class Job:
  """One run of a table: its folder (its model_dir, relative to the results dir), what runs there (`kind`: one of
  `tables.runner.KINDS`), the gin bindings added to the paper config for it, and the folders it reads (`needs`)."""
  folder: str
  kind: str
  bindings: tuple[str, ...] = ()
  needs: tuple[str, ...] = ()
  task: Optional[str] = None
  seed: int = 0
  options: tuple[tuple[str, Any], ...] = ()

  def option(self, name: str, default: Any = None) -> Any:
    return dict(self.options).get(name, default)


@dataclasses.dataclass
class Grid:
  """A table: `columns` headers, `rows` of (label, cells) measured here, the paper's numbers for the same rows
  (`quotes`: {row label: cells under `quote_columns`}, printed beside ours and labelled as quotes) and notes
  (protocol, choices where a seed is silent)."""
  title: str
  columns: list[str]
  rows: list[tuple[str, list[str]]]
  quote_columns: list[str] = dataclasses.field(default_factory=list)
  quotes: dict[str, Sequence[str]] = dataclasses.field(default_factory=dict)
  notes: list[str] = dataclasses.field(default_factory=list)
  # A figure of the table (`tables.render.plot`): {"x_label", "y_label", "series": {name: [(x label, mean, std or
  # None), ...]}}; a point without a number has mean None. None: the table has no figure.
  plot: Optional[dict] = None

  def empty_cells(self) -> list[str]:
    """`row / column` of every measured cell without a number (a job not finished)."""
    return [f"{label} / {col}" for label, cells in self.rows for col, cell in zip(self.columns, cells)
            if MISSING in cell.split("/") or not cell]


class PaperTable:
  """One paper table (subclasses set the class attributes and implement `jobs` and `gather`)."""
  name: str = ""
  title: str = ""
  gin_pattern: str = ""  # The per-run paper config the table reads, with {size}.
  sizes: Sequence[str] = SIZES
  seed_file: str = ""  # ../shared/seeds file the quoted numbers come from.
  dry_run_batch_size: int = 2  # The batch of `--dry_run` (the smallest every stage of the table accepts).

  def jobs(self) -> list[Job]:
    raise NotImplementedError

  def gather(self, records: Mapping[str, Any], size: str) -> Grid:
    raise NotImplementedError

  def size_of(self, gin_file: str) -> str:
    """The model size of a paper config this table reads; a one-line error naming the configs it reads."""
    pattern = re.escape(self.gin_pattern).replace(re.escape("{size}"), "(?P<size>[a-z]+)")
    m = re.search(pattern + "$", gin_file.replace("\\", "/"))
    if not m or m.group("size") not in self.sizes:
      accepted = ", ".join(self.gin_pattern.format(size=s) for s in self.sizes)
      raise ValueError(f"--table={self.name} reads the paper configs {accepted}; got --gin_file={gin_file!r}")
    return m.group("size")


def fmt(value: Optional[float]) -> str:
  """One cell: MISSING for no run, "nan" for a metric that is undefined on the predictions (a correlation of
  constant predictions, as T5 reports it), else one decimal."""
  if value is None:
    return MISSING
  return f"{value:.1f}" if np.isfinite(value) else "nan"


def fmt_pair(values: Sequence[Optional[float]]) -> str:
  """'a/b' for a task reported with two metrics (CB acc/F1, MultiRC EM/F1a), as the papers write them."""
  return "/".join(fmt(v) for v in values)


def fmt_mean_std(per_seed: Sequence[Optional[Sequence[float]]]) -> str:
  """'mean ± std' over seeds of each reported metric ('a ± s / b ± t' for two), MISSING when a seed is missing."""
  if not per_seed or any(v is None for v in per_seed):
    return MISSING
  arr = np.asarray(per_seed, dtype=float)
  return " / ".join(f"{fmt(m)} ± {fmt(s)}" for m, s in zip(arr.mean(axis=0), arr.std(axis=0)))


def metric_means(per_seed: Sequence[Optional[Sequence[float]]]) -> Optional[list[float]]:
  """Each reported metric's mean over seeds (or draws); None when one of them is missing."""
  if not per_seed or any(v is None for v in per_seed):
    return None
  return [float(x) for x in np.mean(np.asarray(per_seed, dtype=float), axis=0)]


def mean_or_none(values: Sequence[Optional[float]]) -> Optional[float]:
  values = [v for v in values]
  if not values or any(v is None for v in values):
    return None
  return float(np.mean(values))


def metric_values(metrics: Optional[Mapping[str, float]], keys: Sequence[str]) -> list[Optional[float]]:
  """The named metrics of one evaluation (None where the evaluation is missing)."""
  if metrics is None:
    return [None] * len(keys)
  missing = [k for k in keys if k not in metrics]
  if missing:
    raise KeyError(f"the evaluation reports {sorted(metrics)}, not {missing}")
  return [float(metrics[k]) for k in keys]
