"""A run's `metrics.jsonl` (one json object per line) and its TensorBoard copy (clu), written by process 0.

    log = MetricsLog(model_dir, resume_step=latest)   # the file cut back to what the restored checkpoint saw
    log.write(step, "train", {"loss": 0.3})

A resumed run continues from its last checkpoint, so the rows a killed run logged after that checkpoint would be
logged again: the file is cut back to the rows of steps <= `resume_step` (all rows of a fresh start are dropped)
when it is opened, written to a temporary file and renamed, so an interruption leaves the old file or the new one.
A torn last line (a full disk, a kill during a write) is dropped the same way, and `read_rows` skips one when it
reads, so `plot` and the tables read every complete row. A `gs://` model_dir gets the whole file rewritten in one
object write per row (GCS objects cannot be appended to).
"""
import json
import logging
import os
from typing import Any, Optional

import jax

NAME = "metrics.jsonl"


def parse_rows(text: str, where: str) -> list[dict[str, Any]]:
  """The json rows of a metrics file; a torn last line (unparseable, no newline after it) is skipped with a warning,
  any other bad line raises naming the file and line."""
  lines = text.splitlines()
  torn_possible = bool(text) and not text.endswith("\n")
  rows = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError as e:
      if number == len(lines) and torn_possible:
        logging.warning("%s: line %d is incomplete (a run stopped while writing it); skipped", where, number)
        continue
      raise ValueError(f"{where}:{number}: not a json row ({e.msg}); fix or delete that line") from e
  return rows


class MetricsLog:
  """metrics.jsonl + TensorBoard from process 0 (module doc)."""

  def __init__(self, model_dir: str, resume_step: Optional[int] = 0):
    from xprompt_jax.checkpoints import storage
    self.active = jax.process_index() == 0
    self.path = storage.join(model_dir, NAME)
    self.gcs = storage.is_gcs(self.path)
    self.lines: list[str] = []
    self.writer = None
    if not self.active:
      return
    if storage.is_file(self.path):
      text = storage.read_bytes(self.path).decode("utf-8", errors="replace")
      rows = parse_rows(text, self.path)
      kept = [r for r in rows if resume_step is not None and int(r.get("step", 0)) <= resume_step]
      self.lines = [json.dumps(r) + "\n" for r in kept]
      if len(kept) != len(rows) or not text.endswith("\n") and text:
        logging.info("%s: kept the %d rows up to step %s of %d", self.path, len(kept), resume_step, len(rows))
        self._rewrite()
    from clu import metric_writers
    self.writer = metric_writers.SummaryWriter(storage.join(model_dir, "tb"))

  def _rewrite(self) -> None:
    from xprompt_jax.checkpoints import storage
    data = "".join(self.lines).encode("utf-8")
    if self.gcs:
      storage.write_bytes(self.path, data)
      return
    tmp = self.path + ".tmp"
    with open(tmp, "wb") as f:
      f.write(data)
    os.replace(tmp, self.path)

  def write(self, step: int, kind: str, values: dict[str, float]) -> None:
    if not self.active:
      return
    line = json.dumps({"step": int(step), "kind": kind, **{k: float(v) for k, v in values.items()}}) + "\n"
    self.lines.append(line)
    if self.gcs:
      self._rewrite()
    else:
      with open(self.path, "a", encoding="utf-8") as f:
        f.write(line)
    self.writer.write_scalars(int(step), {f"{kind}/{k}": float(v) for k, v in values.items()})
    self.writer.flush()

  def close(self):
    if self.writer is not None:
      self.writer.close()
