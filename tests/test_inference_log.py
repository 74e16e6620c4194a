"""evaluation/inference_log.py: seqio's JSONLogger files (T5X's inference_eval/ layout) from one evaluation's
records, every row or the first N, for a ranked task. (A whole training run writing them: test_train_loop.py.)"""
import json
import types

import pytest
import seqio

from xprompt_jax.evaluation import evaluator as eval_lib
from xprompt_jax.evaluation import inference_log
from xprompt_jax.tasks import registry_utils as ru  # noqa: F401  (registers the tasks)

EXAMPLES = [{"idx": i, "inputs_pretokenized": f"rte hypothesis: h{i}. premise: p{i}.",
             "targets_pretokenized": "entailment" if i % 2 else "not_entailment"} for i in range(5)]


def _evaluator():
  task = seqio.get_mixture_or_task("super_glue_rte_v102")
  targets = [task.postprocess_fn(ex["targets_pretokenized"], example=ex, is_target=True) for ex in EXAMPLES]
  return types.SimpleNamespace(task=task, data=types.SimpleNamespace(examples=EXAMPLES), targets=targets)


RECORDS = [{"rank_prediction": "entailment", "rank_scores": {"entailment": -0.5, "not_entailment": -1.5}}] * 5


@pytest.mark.parametrize("max_rows, lines", [(None, 5), (2, 2)])
def test_rows_and_metrics_in_seqios_layout(tmp_path, max_rows, lines):
  ev = _evaluator()
  inference_log.write(str(tmp_path), 7, ev, RECORDS, {"accuracy": 40.0}, max_rows=max_rows)
  rows = [json.loads(l) for l in (tmp_path / "inference_eval" / "super_glue_rte_v102-000007.jsonl").open()]
  assert len(rows) == lines
  assert rows[0]["input"]["inputs_pretokenized"] == EXAMPLES[0]["inputs_pretokenized"]
  assert rows[0]["prediction"] == ev.task.postprocess_fn("entailment", example=EXAMPLES[0], is_target=False)
  assert rows[0]["target"] == ev.targets[0] and rows[0]["score"] == -0.5
  metrics = [json.loads(l) for l in (tmp_path / "inference_eval" / "super_glue_rte_v102-metrics.jsonl").open()]
  assert metrics == [{"step": 7, "accuracy": 40.0}]


def test_log_inferences_is_checked():
  assert eval_lib.EvalConfig(log_inferences=100).log_inferences == 100
  with pytest.raises(ValueError, match=r"EvalConfig.log_inferences must be True, False or a number of rows"):
    eval_lib.EvalConfig(log_inferences=-1)
