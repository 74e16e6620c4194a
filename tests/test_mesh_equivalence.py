"""Mesh equivalence of xprompt_jax.training.loop.train(): 8x1, 2x4 and 1x1 meshes give the same run.

tests/conftest.py simulates 8 CPU devices. The real `train()` runs a few prompt-tuning steps on the real RTE task
(short lengths, batch 8) with each mesh; the frozen T5 is the same random tree placed by the logical-axis rules of
each mesh (tensor-parallel on 'model'), and the per-step losses in metrics.jsonl and the final trainable and
optimizer state must agree to rounding (tests/numerics.py: TRAJECTORY, a few optimiser steps).
"""
import json
import os

import jax
import numpy as np
import pytest

import numerics
from xprompt_jax.evaluation.evaluator import EvalConfig
from xprompt_jax.methods import PromptTuning
from xprompt_jax.models import t5
from xprompt_jax.models.config import T5Config
from xprompt_jax.training import data, loop, optim, partitioning
from xprompt_jax.training import step as step_lib

# Heads, MLP, joined kv and vocab all divisible by the 'model' axis (4).
CONFIG = T5Config(vocab_size=32128, emb_dim=16, num_heads=4, head_dim=4, mlp_dim=32, num_encoder_layers=1,
                  num_decoder_layers=1, name="mesh_tiny")
STEPS = 3


@pytest.fixture(scope="module")
def host_frozen(shared):
  del shared  # RTE comes from ../shared.
  return jax.device_get(t5.init_params(CONFIG, jax.random.PRNGKey(0)))


def run_on_mesh(model_dir, host_frozen, data_axis, model_axis):
  mesh_cfg = partitioning.MeshConfig(data=data_axis, model=model_axis)
  mesh = partitioning.make_mesh(mesh_cfg)
  shardings = partitioning.logical_to_sharding(t5.param_logical_axes(CONFIG), mesh, mesh_cfg.rules,
                                               shapes=t5.abstract_params(CONFIG))
  frozen = jax.device_put(host_frozen, shardings)
  result = loop.train(
      str(model_dir), config=CONFIG, method=PromptTuning(length=4, prompt_init="random_uniform"),
      data_cfg=data.DataConfig("super_glue_rte_v102", inputs_length=32, targets_length=4, batch_size=8,
                               shuffle_buffer_size=256),
      opt_cfg=optim.OptimizerConfig(), mesh_cfg=mesh_cfg,
      train_cfg=loop.TrainConfig(num_train_steps=STEPS, log_period=1, eval_period=0, checkpoint_period=STEPS,
                                 progress_bar=False, async_checkpointing=False, seed=0),
      loss_cfg=step_lib.LossConfig(), eval_cfg=EvalConfig(max_examples=16, batch_size=8, inputs_length=32,
                                                          targets_length=4),
      frozen=frozen, frozen_ref={"path": "random-init:test", "fingerprint": "sha256:mesh-test"})
  with open(os.path.join(model_dir, "metrics.jsonl"), encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  return {"losses": [r["loss"] for r in rows if r["kind"] == "train"],
          "eval": [r for r in rows if r["kind"] == "eval"][-1],
          "state": jax.device_get(result["state"]), "frozen": frozen}


@pytest.fixture(scope="module")
def single_device(host_frozen, tmp_path_factory):
  return run_on_mesh(tmp_path_factory.mktemp("mesh_1x1"), host_frozen, 1, 1)


def _check_same(run, reference):
  assert len(run["losses"]) == len(reference["losses"]) == STEPS
  # Sums taken in another order on each mesh (sharded contractions), fed through STEPS optimiser steps.
  numerics.assert_close(run["losses"], reference["losses"], roundings=numerics.TRAJECTORY)
  assert run["eval"] == reference["eval"]
  for part in ("trainable", "opt_state"):
    flat = jax.tree_util.tree_flatten_with_path(run["state"][part])[0]
    ref_leaves = jax.tree.leaves(reference["state"][part])
    assert len(flat) == len(ref_leaves)
    for (path, x), y in zip(flat, ref_leaves):
      msg = f"{part}{jax.tree_util.keystr(path)}"
      if not np.any(np.asarray(y)):  # Placeholders (the unused factored moments of an unfactored leaf) stay 0.
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=msg)
      else:
        numerics.assert_close(x, y, roundings=numerics.TRAJECTORY, err_msg=msg)
  assert int(run["state"]["step"]) == STEPS


@pytest.mark.parametrize("data_axis,model_axis", [(2, 4), pytest.param(8, 1, marks=pytest.mark.slow)])
def test_mesh_gives_the_same_losses_and_prompt_as_one_device(host_frozen, single_device, tmp_path, data_axis,
                                                             model_axis):
  run = run_on_mesh(tmp_path, host_frozen, data_axis, model_axis)
  # The frozen model really is spread over the mesh (the vocabulary rows over 'model' when it is > 1).
  embedding = run["frozen"]["token_embedder"]["embedding"]
  assert len(embedding.sharding.device_set) == data_axis * model_axis
  if model_axis > 1:
    assert embedding.sharding.spec[0] == "model"
  _check_same(run, single_device)
  # The run trained: the prompt moved away from its initialisation (same seed in every run).
  numerics.assert_differs(run["losses"][-1], run["losses"][0])
