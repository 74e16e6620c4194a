"""T5X's `inference_eval/` folder: each evaluation's predictions and metrics, per task, in seqio's layout.

T5X passes `seqio.JSONLogger(output_dir=<model_dir>/inference_eval)` to its evaluator; the training loop here does
the same with the records of each evaluation (`TaskEvaluator.evaluate(..., on_records=...)`):

  <model_dir>/inference_eval/<task>-<step:06>.jsonl   one line per example:
      {"input": {"inputs_pretokenized": ..., "targets_pretokenized": ..., ...}, "target": the postprocessed target,
       "prediction": the postprocessed prediction, "score": its log-likelihood (rank classification)}
  <model_dir>/inference_eval/<task>-metrics.jsonl     {"step": N, "<metric>": value, ...}, one line per evaluation

The step is the run's own (tuning) step, as in metrics.jsonl and checkpoints/<step>; T5X counts from the initial
checkpoint's step (1100000 + N for the LM-adapted T5 1.1), so its `rte-1101000.jsonl` is `rte-001000.jsonl` here
(docs/from_t5x.md).

`EvalConfig.log_inferences` is True (every example), an int N (the first N examples: ReCoRD's 10,000-row dev set
at every evaluation adds up) or False (nothing). With `EvalConfig.mode='both'` the line holds the decoded
prediction as "prediction" and the ranked one as "rank_prediction" (with its "score"). Only process 0 writes;
`gs://` folders work (seqio writes through tf.io.gfile).
"""
import os
from typing import Any, Mapping, Optional, Sequence

import numpy as np

FOLDER = "inference_eval"


def _dataset(examples: Sequence[Mapping[str, Any]]):
  """The evaluated examples as the tf.data.Dataset seqio's logger reads its "input" field from."""
  import tensorflow as tf

  def spec(value):
    if isinstance(value, (str, bytes)):
      return tf.TensorSpec((), tf.string)
    value = np.asarray(value)
    return tf.TensorSpec((None,) * value.ndim, tf.string if value.dtype.kind in "SUO" else tf.as_dtype(value.dtype))
  signature = {k: spec(v) for k, v in examples[0].items()}
  return tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=signature)


def write(model_dir: str, step: int, evaluator: Any, records: Sequence[Mapping[str, Any]],
          metrics: Mapping[str, float], max_rows: Optional[int] = None) -> None:
  """Writes one task's evaluation at `step` (`evaluator`: the `TaskEvaluator` that made `records`); `max_rows`:
  only the first that many examples' lines (seqio's `write_n_results`; the metrics line is always written)."""
  import seqio
  task = evaluator.task
  examples = evaluator.data.examples
  def post(mode):  # What the metrics saw (`TaskEvaluator.metrics` keeps it), else the task's postprocessor now.
    return [r[f"{mode}_postprocessed"] if f"{mode}_postprocessed" in r else
            task.postprocess_fn(r[f"{mode}_prediction"], example=ex, is_target=False)
            for r, ex in zip(records, examples)]
  inferences: dict[str, list] = {}
  if records and "decode_prediction" in records[0]:
    inferences["prediction"] = post("decode")
  if records and "rank_prediction" in records[0]:
    key = "rank_prediction" if "prediction" in inferences else "prediction"
    inferences[key] = post("rank")
    inferences["score"] = [r["rank_scores"][r["rank_prediction"]] for r in records]
  elif records and "target_score" in records[0]:
    inferences["score"] = [r["target_score"] for r in records]
  import tensorflow as tf
  folder = os.path.join(model_dir, FOLDER)
  tf.io.gfile.makedirs(folder)  # Local folders and gs:// alike (as seqio writes the files).
  logger = seqio.JSONLogger(folder, write_n_results=max_rows)
  logger(task.name, step, {k: seqio.metrics.Scalar(float(v)) for k, v in metrics.items()},
         _dataset(examples), inferences, list(evaluator.targets))
