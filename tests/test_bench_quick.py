"""The benchmark scripts' `--quick` modes (tiny sizes), so they cannot rot. Assertions are about correctness
(same loss from both frameworks on the same weights and batch, one compilation per shape, no example lost),
never about speed. Tests needing the `[bench]` extra (torch, transformers, peft) skip with the reason without it.
"""
import pathlib
import sys

import numpy as np
import pytest

BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import bench_common  # noqa: E402  (bench/ is a folder of scripts, put on the path above)
import numerics  # noqa: E402

MISSING = bench_common.bench_deps_available()
needs_bench_extra = pytest.mark.skipif(MISSING is not None, reason=str(MISSING))


@pytest.mark.slow
@needs_bench_extra
def test_step_vs_peft_same_loss_on_same_weights():
  import step_vs_peft
  results = {r["method"]: r for r in step_vs_peft.main(["--quick"])}
  prompt = results["prompt"]
  # One loss of one random-weight network in two fp32 implementations (XLA, PyTorch).
  numerics.assert_close(prompt["first_loss_ours"], prompt["first_loss_peft"], roundings=numerics.IMPLEMENTATIONS)
  assert prompt["compilations"] == 1 and prompt["ours_examples_per_s"] > 0 and prompt["peft_examples_per_s"] > 0
  assert results["prefix"]["compilations"] == 1


@pytest.mark.slow
def test_flops_ratios():
  import flops
  out = flops.main(["--quick"])
  r = out["ratios"]
  assert 0.3 < r["prompt_over_full"] < 1.0  # No weight gradients: strictly cheaper than full fine-tuning.
  assert r["mpt_distillation_over_prompt"] > 1.0  # The teacher forward is extra work.
  assert all(v > 0 for v in out["flops"].values())


@pytest.mark.slow
def test_utilisation_compiles_once():
  import utilisation
  out = utilisation.main(["--quick", "--bf16_step"])
  assert out["compilations"] == 1 and out["step_flops"] > 0
  assert {"train_step", "train_step_bf16", "xla_fp32", "xla_bf16"} <= set(out["gflops"])


@pytest.mark.slow
@needs_bench_extra
def test_e2e_rte_keeps_every_example(shared):
  del shared
  import e2e_rte
  out = e2e_rte.main(["--quick"])
  assert out["compilations"]["ours_packed"] == 1
  assert out["compilations"]["ours_bucketed"] <= len(out["boundaries"])
  assert set(out["examples_per_s"]) == {"ours_bucketed", "ours_packed", "peft"}
  assert out["encoder_tokens_fed"]["ours_packed"] >= out["real_input_tokens"]
  assert out["packed_examples"] == out["bucketed_examples"] == out["examples"]


def test_memory_prompt_checkpoint_holds_no_frozen_model():
  import memory
  out = memory.main(["--quick"])
  prompt = out["methods"]["prompt"]
  assert prompt["trainable_params"] == 4 * 32
  assert prompt["checkpoint_bytes"] < out["frozen_bytes"]


def test_eval_encode_once_scores_match_k_passes():
  import eval_bench
  out = eval_bench.main(["--quick"])
  # Same scores, whichever way they are computed: one network batched two ways (NETWORK), at the scores' scale
  # (a random-weight model spends ~log(vocab) nats on each of the label_len tokens it scores).
  scale = eval_bench.QUICK["label_len"] * np.log(eval_bench.SIZES[eval_bench.QUICK["size"]].vocab_size)
  assert out["rank"]["max_score_diff"] <= numerics.tolerance(0.0, roundings=numerics.NETWORK, scale=scale)
  if "peft" in out["decode"]["tokens_per_s"]:
    assert out["decode"]["identical_outputs"] == 1.0  # Same weights, same prompt: the same greedy tokens.


def test_pipeline_counts_every_cached_example(shared):
  del shared
  import pipeline
  out = pipeline.main(["--quick"])
  assert set(out["examples_per_s"]) == {"seqio_batches", "tokenize_epoch", "bucket_cached", "pack_cached",
                                        "train_step_tiny"}
  assert all(v > 0 for v in out["examples_per_s"].values())
