"""The generated results page: mean ± std over seeds, majority baseline, orderings, failures, plot."""
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
  assert "GENERATED FILE: do not edit by hand" in text and "python bench/compare_methods.py x" in text
  assert "| majority class (train split's most frequent label) | 52.7 |" in text
  assert "| prompt_class_labels | 62.0 ± 2.8 (n=2) |" in text
  assert "mpt on (all targets) seed 0 failed: ValueError: boom" in text
  assert "mpt: no result on rte" in text
  assert "| xprompt/reversed | rte | 1 |" in text  # Every seed's row.
  assert "- prompt_class_labels: rte" in text and "- prompt_random: (none)" in text
  assert open(page).read() == text
