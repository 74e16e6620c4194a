"""Full-parameter pretraining: schedule, optimizer step lowers the loss, unigram baseline, T5X export round trip."""
import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numerics
from xprompt_jax import checkpoints
from xprompt_jax.models import t5
from xprompt_jax.models.config import T5Config
from xprompt_jax.pretraining import train
from xprompt_jax.training import data as data_lib
from xprompt_jax.training import step as step_lib

TINY = T5Config(vocab_size=128, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32, num_encoder_layers=2,
                num_decoder_layers=2, relpos_num_buckets=8, relpos_max_distance=16, name="tiny")


def _batch(seed=0, b=4, li=12, lt=6):
  rng = np.random.default_rng(seed)
  targets = rng.integers(2, 128, size=(b, lt)).astype(np.int32)
  return {"encoder_input_tokens": rng.integers(2, 128, size=(b, li)).astype(np.int32),
          "decoder_input_tokens": np.concatenate([np.zeros((b, 1), np.int32), targets[:, :-1]], 1),
          "decoder_target_tokens": targets, "decoder_loss_weights": np.ones((b, lt), np.float32)}


def test_rsqrt_schedule_is_t5s():
  # Evaluated in float32 by JAX: a cast, a division, a sqrt and a product each round once (FEW). An off-by-one step
  # (sqrt(10000 / 40001)) is already 210 roundings away.
  s = train.rsqrt_schedule(1e-2, 10_000)
  for step in (0, 5_000, 10_000):
    numerics.assert_close(float(s(step)), 1e-2, roundings=numerics.FEW, err_msg=f"step {step}")
  numerics.assert_close(float(s(40_000)), 1 / np.sqrt(40_000), roundings=numerics.FEW)
  numerics.assert_close(float(train.rsqrt_schedule(1e-2, 10_000, offset=1_000_000)(0)), 1e-3,
                        roundings=numerics.FEW)


def test_config_errors_name_the_field():
  with pytest.raises(ValueError, match="PretrainConfig.log_period"):
    train.PretrainConfig(log_period=0)
  with pytest.raises(ValueError, match="learning_rate"):
    train.PretrainConfig(learning_rate=-1.0)


def test_every_parameter_trains_and_loss_falls():
  cfg = train.PretrainConfig(learning_rate=3e-2, warmup_steps=1)
  model, optimizer = t5.T5(TINY), train.make_optimizer(cfg)
  params = t5.init_params(TINY, jax.random.PRNGKey(0))
  state = {"step": jnp.zeros((), jnp.int32), "trainable": params, "opt_state": optimizer.init(params),
           "rng": jax.random.PRNGKey(1)}
  step = jax.jit(train.make_train_step(model, optimizer, step_lib.LossConfig()))
  batch = _batch()
  losses = []
  for _ in range(8):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  assert losses[-1] < losses[0] - 0.3
  moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), params, state["trainable"])
  assert all(jax.tree.leaves(moved)), "every T5 parameter must be updated"
  assert int(state["step"]) == 8


def test_unigram_cross_entropy():
  train_ids = np.array([0, 0, 1])
  # Add-one counts over vocab 4: [3, 2, 1, 1] / 7.
  assert train.unigram_cross_entropy(train_ids, np.array([0, 1]), 4) == pytest.approx(
      -(np.log(3 / 7) + np.log(2 / 7)) / 2)
  with pytest.raises(ValueError, match="vocab_size"):
    train.unigram_cross_entropy(train_ids, np.array([7]), 4)


def test_t5x_export_loads_back_and_scores_the_same(tmp_path):
  params = t5.init_params(TINY, jax.random.PRNGKey(3))
  path = train.export_path(str(tmp_path), 7)
  checkpoints.save_params(params, path, "t5x", TINY, step=7)
  assert checkpoints.detect_format(path) == "t5x"
  loaded, _ = checkpoints.load_params(path, TINY)
  eval_step = jax.jit(train.make_eval_step(t5.T5(TINY)))
  batches = [_batch(1), _batch(2)]
  # The export stores every leaf in its own dtype: the round trip is bit-exact (this catches a lossy export, which
  # the loss below, a float32 forward pass compared at the NETWORK budget, could not resolve).
  assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(params)
  for (key, x), y in zip(jax.tree_util.tree_flatten_with_path(loaded)[0], jax.tree.leaves(params)):
    assert np.asarray(x).dtype == np.asarray(y).dtype, jax.tree_util.keystr(key)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(key))
  numerics.assert_close(train.validation_loss(eval_step, loaded, batches),
                        train.validation_loss(eval_step, params, batches), roundings=numerics.NETWORK)
  assert train.resolve_initial_checkpoint(str(tmp_path)) == path
  assert train.resolve_initial_checkpoint(path) == path


@pytest.mark.slow
def test_pretrain_end_to_end_resumes_and_exports(shared, tmp_path):
  del shared
  config = TINY.replace(vocab_size=32128, emb_dim=16)
  data_cfg = data_lib.DataConfig(mixture_or_task_name="pretrain_span_corruption", inputs_length=32,
                                 targets_length=8, batch_size=8, shuffle_buffer_size=100)
  cfg = train.PretrainConfig(num_train_steps=6, warmup_steps=2, log_period=3, eval_period=3, eval_batches=2,
                             unigram_batches=4, checkpoint_period=3, progress_bar=False)
  out = train.pretrain(str(tmp_path), config=config, data_cfg=data_cfg, cfg=cfg)
  report = json.loads((tmp_path / train.REPORT_NAME).read_text())
  assert report["step"] == 6 and report["validation_loss"] == out["validation_loss"]  # JSON keeps floats exactly.
  assert report["unigram_cross_entropy"] > 0 and os.path.isdir(report["export"])
  assert train.read_report(report["export"]) == report  # Also kept per export, for runs resumed past it.
  assert json.loads(open(train.report_path(str(tmp_path), 6)).read()) == report
  loaded, _ = checkpoints.load_params(report["export"], config)
  np.testing.assert_array_equal(loaded["token_embedder"]["embedding"],
                                np.asarray(out["state"]["trainable"]["token_embedder"]["embedding"]))
  # More steps resume from step 6; an LM-adaptation run starts from the export.
  again = train.pretrain(str(tmp_path), config=config, data_cfg=data_cfg,
                         cfg=dataclasses.replace(cfg, num_train_steps=8))
  assert again["step"] == 8
  lm_cfg = data_lib.DataConfig(mixture_or_task_name="pretrain_prefix_lm", inputs_length=16, targets_length=16,
                               batch_size=8, shuffle_buffer_size=100)
  lm = train.pretrain(str(tmp_path / "lm"), config=config, data_cfg=lm_cfg,
                      cfg=dataclasses.replace(cfg, initial_checkpoint=str(tmp_path), num_train_steps=2))
  assert lm["start"] == train.export_path(str(tmp_path), 8)


def test_initial_params_random_is_seeded_and_identified():
  from xprompt_jax.training import partitioning
  mesh = partitioning.make_mesh(partitioning.MeshConfig())
  a, ref_a = train.initial_params(None, TINY, 3, mesh, "default")
  b, ref_b = train.initial_params(None, TINY, 3, mesh, "default")
  _, ref_c = train.initial_params(None, TINY, 4, mesh, "default")
  assert ref_a == ref_b and ref_a["fingerprint"] != ref_c["fingerprint"]
  np.testing.assert_array_equal(a["token_embedder"]["embedding"], b["token_embedder"]["embedding"])
