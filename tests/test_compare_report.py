"""The generated results page: mean ± std over seeds, majority baseline, orderings, failures, plot."""
import json
import os

import pytest

from xprompt_jax.pipelines import compare_report as cr


def _records():
  out = []
  for seed, (a, b, c) in enumerate([(60.0, 50.0, 70.0), (64.0, 52.0, 74.0)]):
    out += [{"method": "prompt_class_labels", "task": "rte", "seed": seed, "metrics": {"accuracy": a}, "seconds": 60},
            {"method": "prompt_random", "task": "rte", "seed": seed, "metrics": {"accuracy": b}, "seconds": 60},
            {"method": "xprompt/xprompt", "task": "rte", "seed": seed, "metrics": {"accuracy": c}, "seconds": 60},
            {"method": "xprompt/reversed", "task": "rte", "seed": seed, "metrics": {"accuracy": c + 1}}]
  out.append({"method": "mpt", "task": "(all targets)", "seed": 0, "metrics": {}, "error": "ValueError: boom"})
  return out


def test_summarise_mean_std_over_seeds():
  s = cr.summarise(_records())
  assert s[("prompt_class_labels", "rte")] == {"mean": 62.0, "std": pytest.approx(2.8284271), "n": 2,
                                               "seeds": [0, 1]}
  assert ("mpt", "(all targets)") not in s  # Failed runs are not averaged.


def test_orderings_report_both_outcomes():
  rows = {(o["better"], o["worse"]): o["holds"] for o in cr.orderings(cr.summarise(_records()), ["rte"])}
  assert rows[("prompt_class_labels", "prompt_random")] is True
  assert rows[("xprompt/xprompt", "xprompt/reversed")] is False
  assert ("mpt", "prompt_sampled_vocab") not in rows  # Only pairs with results on both sides.


def test_page_is_generated_with_every_method_seed_and_failure(tmp_path):
  page = str(tmp_path / "docs" / "results_local.md")
  text = cr.write_page(page, _records(), methods=["prompt_random", "prompt_class_labels", "mpt", "xprompt/xprompt",
                                                 "xprompt/reversed"],
                       tasks=["rte"], majority={"rte": 52.7}, meta={"command": "python bench/compare_methods.py x",
                                                                    "results": "/r/results.jsonl"})
  assert os.path.getsize(tmp_path / "docs" / "results_local" / "methods.png") > 1000
  copied = (tmp_path / "docs" / "results_local" / "records.jsonl").read_text().splitlines()
  copied = [json.loads(line) for line in copied]
  assert copied == [json.loads(json.dumps(r, sort_keys=True)) for r in _records()]
  assert "results_local/records.jsonl" in text
  assert "GENERATED FILE: do not edit by hand" in text and "python bench/compare_methods.py x" in text
  assert "| majority class (train split's most frequent label) | 52.7 |" in text
  assert "| prompt_class_labels | 62.0 ± 2.8 (n=2) |" in text
  assert "mpt on (all targets) seed 0 failed: ValueError: boom" in text
  assert "mpt: no result on rte" in text
  assert "| xprompt/reversed | rte | 1 |" in text  # Every seed's row.
  assert "- prompt_class_labels: rte (+9.3)" in text and "- prompt_random: (none)" in text
  assert open(page).read() == text


def _stage(tmp_path, name, task, steps, start):
  model_dir = tmp_path / name
  (model_dir / "export" / f"checkpoint_{steps}").mkdir(parents=True)
  rows = [{"step": s, "kind": "train", "loss": 9.0 - s / steps} for s in range(10, steps + 1, 10)]
  rows.append({"step": steps, "kind": "eval", "validation_loss": 7.5})
  (model_dir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
  report = {"task": task, "step": steps, "validation_loss": 7.5, "unigram_cross_entropy": 8.25, "start": start,
            "export": str(model_dir / "export" / f"checkpoint_{steps}")}
  (model_dir / "pretrain_report.json").write_text(json.dumps(report))
  return report["export"]


def test_pretraining_chain_backbone_line_and_plot(tmp_path):
  from xprompt_jax.models.config import T5Config

  sc = _stage(tmp_path, "sc", "pretrain_span_corruption", 40, "random-init:seed=0:mini")
  lm = _stage(tmp_path, "lm", "pretrain_prefix_lm", 20, sc)
  stages = cr.pretraining_chain(lm)
  assert [s["task"] for s in stages] == ["pretrain_span_corruption", "pretrain_prefix_lm"]
  line = cr.backbone_line(lm, T5Config(name="mini"), stages)
  assert "pretrain_span_corruption to step 40: held-out validation cross entropy 7.500" in line
  assert "vs the unigram baseline 8.250" in line and line.endswith(".")
  assert cr.pretraining_chain(str(tmp_path / "elsewhere" / "export" / "checkpoint_1")) == []
  page = str(tmp_path / "page.md")
  text = cr.write_page(page, _records(), methods=["prompt_random"], tasks=["rte"], majority={"rte": 52.7},
                       meta={"pretraining": stages, "backbone_line": line})
  assert os.path.getsize(tmp_path / "page" / "pretraining.png") > 1000
  assert "![pretraining loss curves](page/pretraining.png)" in text
  saved = json.loads((tmp_path / "page" / "pretraining.json").read_text())
  assert [s["task"] for s in saved] == ["pretrain_span_corruption", "pretrain_prefix_lm"]
  assert "model_dir" not in saved[0]


def test_best_constant_row_marks_runs_no_better_than_a_constant(tmp_path):
  records = [{"method": "prompt_random", "task": "copa", "seed": s, "metrics": {"accuracy": 55.0}} for s in (0, 1)]
  text = cr.write_page(str(tmp_path / "p.md"), records, methods=["prompt_random"], tasks=["copa"],
                       majority={"copa": 45.0}, best_constant={"copa": 55.0}, meta={})
  assert "| best constant label (validation split's most frequent) | 55.0 |" in text
  assert "- prompt_random: copa* (+10.0)" in text
  assert "None: no pair of methods that a paper orders ran on the same task here." in text
  assert "| paper's claim |" not in text  # No empty table.


def test_last_evaluation_table_and_column_beside_the_best(tmp_path):
  records = [{"method": "prompt_class_labels", "task": "rte", "seed": s, "metrics": {"accuracy": best},
              "final_metrics": {"accuracy": last}, "final_step": 800}
             for s, (best, last) in enumerate([(60.0, 50.0), (64.0, 54.0)])]
  records.append({"method": "mpt", "task": "rte", "seed": 0, "metrics": {"accuracy": 70.0}})  # Best only.
  text = cr.write_page(str(tmp_path / "p.md"), records, methods=["prompt_class_labels", "mpt"], tasks=["rte"],
                       majority={"rte": 52.7}, meta={})
  assert cr.summarise(records, "final_metrics")[("prompt_class_labels", "rte")]["mean"] == 52.0
  table = text.split("at the last evaluation")[1].split("###")[0]
  assert "| prompt_class_labels | 52.0 ± 2.8 (n=2) |" in table and "| mpt |" not in table
  assert "- prompt_class_labels: rte (+9.3); last: (none)" in text and "- mpt: rte (+17.3)\n" in text
  assert "| prompt_class_labels | rte | 1 | accuracy=64.00 | step 800: accuracy=54.00 |" in text
  assert "| mpt | rte | 0 | accuracy=70.00 | — |" in text


def test_training_loss_table_beside_the_label_prior(tmp_path):
  records = [{"method": "prompt_class_labels", "task": "rte", "seed": s, "metrics": {"accuracy": 50.0},
              "final_train_loss": last} for s, last in enumerate([0.05, 0.15])]
  records.append({"method": "mpt", "task": "rte", "seed": 0, "metrics": {"accuracy": 70.0}})  # No training loss.
  text = cr.write_page(str(tmp_path / "p.md"), records, methods=["prompt_class_labels", "mpt"], tasks=["rte"],
                       majority={"rte": 52.7}, prior_loss={"rte": 0.3466}, meta={})
  table = text.split("## Training loss per target token")[1].split("###")[0]
  assert "| the training split's label frequencies, input ignored | 0.347 |" in table
  assert "| prompt_class_labels | 0.100 ± 0.071 (n=2) |" in table and "| mpt |" not in table
  plain = cr.write_page(str(tmp_path / "q.md"), _records(), methods=["prompt_random"], tasks=["rte"],
                        majority={"rte": 52.7}, meta={})
  assert "Training loss" not in plain


def test_page_without_last_evaluations_has_no_such_table(tmp_path):
  text = cr.write_page(str(tmp_path / "p.md"), _records(), methods=["prompt_random"], tasks=["rte"],
                       majority={"rte": 52.7}, meta={})
  assert "at the last evaluation" not in text and "; last:" not in text
  assert "| method | task | seed | validation metrics (best evaluation) | minutes |\n|---|---|---|---|---|\n" in text
  assert "—" not in text.split("## Every run")[1]  # No column of dashes for a value no record holds.


def test_pretraining_chain_follows_the_export_a_later_stage_started_from(tmp_path):
  """A span-corruption run resumed to more steps exports again and rewrites its latest report: a backbone adapted
  from the earlier export still shows the earlier stage (its kept report), and never the later one's numbers."""

  from xprompt_jax.pretraining import train
  sc40 = _stage(tmp_path, "sc", "pretrain_span_corruption", 40, "random-init:seed=0:mini")
  early = json.loads((tmp_path / "sc" / train.REPORT_NAME).read_text())
  lm = _stage(tmp_path, "lm", "pretrain_prefix_lm", 20, sc40)
  sc60 = _stage(tmp_path, "sc", "pretrain_span_corruption", 60, "random-init:seed=0:mini")  # The resumed run.
  # Without the kept report, the chain stops at the LM stage rather than show step 60 as its start.
  assert cr.pretraining_chain(lm) == [{**train.read_report(lm), "model_dir": str(tmp_path / "lm")}]
  kept = train.report_path(str(tmp_path / "sc"), 40)
  os.makedirs(os.path.dirname(kept))
  with open(kept, "w") as f:
    json.dump(early, f)
  assert [s["step"] for s in cr.pretraining_chain(lm)] == [40, 20]
  assert [s["step"] for s in cr.pretraining_chain(sc60)] == [60]
  assert train.read_report(str(tmp_path / "nowhere" / "export" / "checkpoint_3")) is None
