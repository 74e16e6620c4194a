"""XPrompt end to end (pipelines.xprompt): the pure pieces (rewinding, counting, ratio choice, bad input) and the
whole procedure on a tiny RANDOM-weight T5 and real CB data from ../shared, interrupted between stages and resumed.
"""
import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xprompt_jax.evaluation.evaluator import EvalConfig
from xprompt_jax.methods.xprompt import (MASKS_KEY, XPrompt, XPromptMasks, active_pieces, apply_masks, ones_masks,
                                       prune_to_ratio)
from xprompt_jax.models.config import T5Config
from xprompt_jax.models.t5 import T5, init_params
from xprompt_jax.pipelines import xprompt as px
from xprompt_jax.pipelines import xprompt_config
from xprompt_jax.pipelines import xprompt_parts
from xprompt_jax.training import data as data_lib
from xprompt_jax.training import loop, optim, partitioning
from xprompt_jax.training import step as step_lib

TINY = T5Config(vocab_size=32128, emb_dim=32, num_heads=2, head_dim=8, mlp_dim=32, num_encoder_layers=1,
                num_decoder_layers=1, dropout_rate=0.0, name="tiny_random_test")


def _masks(token, piece):
  return XPromptMasks(token=jnp.asarray(token, jnp.float32), piece=jnp.asarray(piece, jnp.float32))


def test_rewind_restores_surviving_entries_bit_exactly_and_zeroes_the_rest():
  prompt = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
  masks = _masks([1, 0, 1], [[1, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]])
  out = px.rewind(prompt, masks)
  keep = np.repeat(np.array([[1, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 1]], bool), 2, axis=1)
  assert out.dtype == prompt.dtype
  np.testing.assert_array_equal(out[keep].view(np.uint32), prompt[keep].view(np.uint32))  # Bit-exact.
  assert not out[~keep].any()
  np.testing.assert_array_equal(out, np.asarray(apply_masks(jnp.asarray(prompt), masks)))
  assert px.kept_counts(masks) == {"kept_tokens": 2, "kept_pieces": 4, "total_tokens": 3, "total_pieces": 12}
  with pytest.raises(ValueError, match="do not fit a prompt of shape"):
    px.rewind(np.zeros((3, 6), np.float32), masks)


def test_ratio_choice_steps_and_bad_config():
  assert px.choose_ratios({0.1: 50.0, 0.5: 60.0, 0.7: 60.0, 0.9: 40.0}, 2) == [0.7, 0.5]  # Ties: larger ratio.
  rows = [{"variant": "xprompt", "ratio": 0.3, "metric": 70.0}, {"variant": "xprompt", "ratio": 0.6, "metric": 70.0},
          {"variant": "pruned_only", "ratio": 0.9, "metric": 99.0}, {"variant": "reversed", "ratio": 0.6, "metric": 50.0},
          {"variant": "reversed", "ratio": 0.3, "metric": 55.0}]
  best = xprompt_parts.best_per_variant(rows)  # The table job and the method comparison both choose this way.
  assert {v: r["ratio"] for v, r in best.items()} == {"xprompt": 0.6, "reversed": 0.3}
  assert px.stage_steps(100, 250, 16, default=7) == 1563 and px.stage_steps(None, 250, 16, default=7) == 7
  for bad in ((0.0,), (0.5, 1.0), (1.5,), (-0.1,)):
    with pytest.raises(ValueError, match="must be in the open interval"):
      px.XPromptPipelineConfig(ratios=bad)
  with pytest.raises(ValueError, match=r"rewind_ratios \[0.4\] are not among ratios"):
    px.XPromptPipelineConfig(ratios=(0.3,), rewind_ratios=(0.4,))
  with pytest.raises(ValueError, match="repeat a ratio"):
    px.XPromptPipelineConfig(ratios=(0.3, 0.301))
  with pytest.raises(ValueError, match="stop_after='prune' is not one of"):
    px.XPromptPipelineConfig(stop_after="prune")
  with pytest.raises(ValueError, match="granularity='tokens' is not one of"):
    px.XPromptPipelineConfig(granularity="tokens")


def test_pieces_not_dividing_the_embedding_is_refused_before_any_work(tmp_path):
  with pytest.raises(ValueError, match="D=32 is not divisible into k=5 equal pieces"):
    px.run_xprompt(str(tmp_path / "run"), pipeline_cfg=px.XPromptPipelineConfig(), config=TINY,
                   method=XPrompt(length=4, pieces=5))
  assert not (tmp_path / "run").exists()


def test_transfer_prompt_of_another_length_is_refused(tmp_path):
  report = tmp_path / "source" / "report"
  report.mkdir(parents=True)
  np.save(report / "final_prompt.npy", np.zeros((6, 32), np.float32))
  px.save_masks(str(report / "final_masks.npz"), ones_masks(6, 4))
  with pytest.raises(ValueError, match=r"has shape \(6, 32\), but this run's prompt is \[8, 32\]"):
    px.load_transfer(str(tmp_path / "source"), 8, 32, 4)
  prompt, masks = px.load_transfer(str(tmp_path / "source"), 6, 32, 4)
  assert prompt.shape == (6, 32) and masks.piece.shape == (6, 4)
  with pytest.raises(ValueError, match=r"piece shape \(6, 4\); this run needs \(6, 8\)"):
    px.load_transfer(str(tmp_path / "source"), 6, 32, 8)
  with pytest.raises(FileNotFoundError, match="transfer_from must be the model_dir of a finished xprompt run"):
    px.load_transfer(str(tmp_path / "nowhere"), 6, 32, 4)


def test_masked_entries_get_zero_gradients():
  small = dataclasses.replace(TINY, vocab_size=128)
  frozen = jax.jit(init_params, static_argnums=0)(small, jax.random.PRNGKey(0))
  method = XPrompt(length=3, pieces=4)
  prompt = jax.random.normal(jax.random.PRNGKey(1), (3, 32))
  masks = _masks([1, 0, 1], [[1, 0, 1, 1], [1, 1, 1, 1], [0, 1, 1, 0]])
  rng = np.random.default_rng(0)
  batch = {"encoder_input_tokens": jnp.asarray(rng.integers(2, 100, (2, 6)), jnp.int32),
           "decoder_input_tokens": jnp.asarray(rng.integers(2, 100, (2, 3)), jnp.int32),
           "decoder_target_tokens": jnp.asarray(rng.integers(2, 100, (2, 3)), jnp.int32)}

  def loss(p):
    logits = step_lib.forward(T5(small), method, small, frozen, {"prompt": p}, batch, {MASKS_KEY: masks})
    return step_lib.token_loss(logits, batch, step_lib.LossConfig())[0]

  grads = np.asarray(jax.jit(jax.grad(loss))(prompt))
  keep = np.repeat(active_pieces(masks), 8, axis=1)
  assert not grads[~keep].any() and np.abs(grads[keep]).min() > 0


def tiny_run_kwargs(ratios=(0.3, 0.6), steps=4, **pipeline):
  """A CB run on the tiny random model that takes seconds per stage."""
  return dict(
      pipeline_cfg=px.XPromptPipelineConfig(ratios=ratios, importance_max_examples=16, **pipeline),
      config=TINY, method=XPrompt(length=8, pieces=4, prompt_init="sampled_vocab"),
      data_cfg=data_lib.DataConfig(mixture_or_task_name="super_glue_cb_v102", inputs_length=48, targets_length=4,
                                   batch_size=8, shuffle_buffer_size=256),
      opt_cfg=optim.OptimizerConfig(), mesh_cfg=partitioning.MeshConfig(),
      train_cfg=loop.TrainConfig(num_train_steps=steps, log_period=steps, eval_period=steps // 2,
                                 initial_checkpoint=None, seed=0, progress_bar=False, async_checkpointing=False),
      loss_cfg=step_lib.LossConfig(),
      eval_cfg=EvalConfig(mode="rank", batch_size=8, max_examples=8, feature_lengths={"inputs": 48, "targets": 4}))


class _Reached(Exception):
  """Raised by a stand-in for the first real work (loading the frozen model): the configuration was accepted."""


def _stop_at_load(*args, **kwargs):
  raise _Reached()


def _with(kwargs, task=None, mode=None, **pipeline):
  out = dict(kwargs)
  if task:
    out["data_cfg"] = dataclasses.replace(kwargs["data_cfg"], mixture_or_task_name=task)
  if mode:
    out["eval_cfg"] = dataclasses.replace(kwargs["eval_cfg"], mode=mode)
  out["pipeline_cfg"] = dataclasses.replace(kwargs["pipeline_cfg"], **pipeline)
  return out


def test_select_metric_is_checked_before_any_work(tmp_path, monkeypatch):
  """A select_metric the evaluation does not report fails at once, naming the keys that exist, with nothing written;
  one it reports gets through to the first real work (here stopped by a stand-in for loading the frozen model)."""
  monkeypatch.setattr(px.loop, "load_frozen", _stop_at_load)
  kwargs = tiny_run_kwargs()
  bad = [(dict(task="super_glue_multirc_v102", select_metric="f1_score"),
          r"^XPromptPipelineConfig.select_metric='f1_score': super_glue_multirc_v102 \(EvalConfig.mode='rank'\) "
          r"reports f1, exact_match; bind one of them"),
         (dict(task="super_glue_multirc_v102", mode="both", select_metric="f1a"),
          r"reports rank/f1, rank/exact_match"),
         (dict(select_metric="f1"), r"super_glue_cb_v102 .* reports accuracy, mean_3class_f1;"),
         (dict(task="super_glue_wsc_v102_simple_train"),
          r"super_glue_wsc_v102_simple_eval' cannot be rank-classified.*; use EvalConfig.mode='decode'")]
  for i, (change, message) in enumerate(bad):
    with pytest.raises(ValueError, match=message):
      px.run_xprompt(str(tmp_path / f"bad{i}"), **_with(kwargs, **change))
    assert not (tmp_path / f"bad{i}").exists()
  good = [dict(task="super_glue_multirc_v102", select_metric="f1"),
          dict(task="super_glue_multirc_v102", select_metric="f1a"),  # The old name: mapped to f1 with a warning.
          dict(task="super_glue_multirc_v102", mode="both", select_metric="rank/exact_match"),
          dict(task="super_glue_wsc_v102_simple_train", mode="decode", select_metric="accuracy"),
          dict(task="super_glue_wsc_v102_simple_train", mode="auto")]
  for i, change in enumerate(good):
    with pytest.raises(_Reached):
      px.run_xprompt(str(tmp_path / f"good{i}"), **_with(kwargs, **change))


def test_wsc_stages_evaluate_and_select_on_simple_eval():
  """WSC trains on simple_train and is evaluated (and early-stopped) on simple_eval, in every stage's loop too."""
  kwargs = _with(tiny_run_kwargs(), task="super_glue_wsc_v102_simple_train", mode="decode")
  run = px._Run(model_dir="unused", cfg=kwargs["pipeline_cfg"], config=kwargs["config"], method=kwargs["method"],
                data_cfg=kwargs["data_cfg"], opt_cfg=kwargs["opt_cfg"], mesh_cfg=kwargs["mesh_cfg"],
                train_cfg=kwargs["train_cfg"], loss_cfg=kwargs["loss_cfg"], eval_cfg=kwargs["eval_cfg"])
  assert run.eval_tasks == ("super_glue_wsc_v102_simple_eval",)
  assert run.metric_key == "super_glue_wsc_v102_simple_eval/accuracy"
  stage = run.stage_train_cfg()
  assert stage.eval_tasks == run.eval_tasks and stage.best_metric == run.metric_key


def test_recipe_hints_name_keys_the_tasks_report():
  from xprompt_jax import paths
  from xprompt_jax.evaluation import metric_keys
  text = (paths.gin_dir() / "recipes" / "xprompt_paper.gin").read_text()
  assert "MultiRC selects by another\n# metric: --gin.XPromptPipelineConfig.select_metric=\"'decode/f1'\"" in text
  assert "EvalConfig.mode = 'both'" in text and "XPromptPipelineConfig.select_metric = 'decode/accuracy'" in text
  both = EvalConfig(mode="both")
  assert "decode/f1" in metric_keys.evaluator_keys("super_glue_multirc_v102", both)
  assert "decode/f1" in metric_keys.evaluator_keys("super_glue_record_v102", both)
  assert "decode/accuracy" in metric_keys.evaluator_keys("super_glue_wsc_v102_simple_eval", both)
  assert "decode/accuracy" in metric_keys.evaluator_keys("super_glue_cb_v102", both)


def check_saved_masks(model_dir, policies, ratio, length=8, pieces=4):
  """The masks each stage saved are what its policy gives from the saved importance scores (exact counts)."""
  importance = px.load_masks(os.path.join(model_dir, "importance", "importance.npz"))
  for subdir, policy in policies.items():
    saved = px.load_masks(os.path.join(model_dir, subdir, "masks.npz"))
    expected = prune_to_ratio(ones_masks(length, pieces), importance, ratio, policy=policy, seed=0)
    np.testing.assert_array_equal(saved.token, expected.token)
    np.testing.assert_array_equal(saved.piece, expected.piece)
    assert px.kept_counts(saved)["kept_pieces"] == round((1 - ratio) * length * pieces), subdir


def _lines(path):
  with open(path, encoding="utf-8") as f:
    return f.read().splitlines()


def test_whole_procedure_on_cb_resumes_between_stages(shared, tmp_path):
  del shared
  model_dir = str(tmp_path / "cb")
  kwargs = tiny_run_kwargs()
  stopped = px.run_xprompt(model_dir, **{**kwargs, "pipeline_cfg": dataclasses.replace(
      kwargs["pipeline_cfg"], stop_after="importance")})
  assert "stopped after stage 'importance'" in stopped["stopped"]
  assert os.path.exists(os.path.join(model_dir, "importance", "importance.npz"))
  assert not os.path.exists(os.path.join(model_dir, "sweep"))
  pt_log = _lines(os.path.join(model_dir, "pt", "metrics.jsonl"))
  importance_time = os.path.getmtime(os.path.join(model_dir, "importance", "importance.npz"))

  result = px.run_xprompt(model_dir, **kwargs)  # Resumes: PT and importance are not redone.
  assert _lines(os.path.join(model_dir, "pt", "metrics.jsonl")) == pt_log
  assert os.path.getmtime(os.path.join(model_dir, "importance", "importance.npz")) == importance_time
  rows = result["rows"]
  # The paper's search: every pruned prompt rewound and retrained; XPrompt's result is the best retrained one.
  assert [r["variant"] for r in rows] == ["prompt_tuning", "pruned_only", "pruned_only", "xprompt", "xprompt"]
  assert sorted(r["ratio"] for r in rows if r["variant"] == "xprompt") == [0.3, 0.6]
  assert all("RANDOM-weight" in r["backbone"] for r in rows)
  chosen = json.load(open(os.path.join(model_dir, "sweep", "chosen.json")))
  assert chosen["search"] == "retrain_every_ratio" and sorted(chosen["ratios"]) == [0.3, 0.6]
  chosen = chosen["ratios"]
  tag = px.ratio_tag(chosen[0])

  check_saved_masks(model_dir, {f"sweep/{tag}": "lowest"}, chosen[0])

  # Rewinding: the retrain started from the post-PT values on the surviving entries, bit-exactly, and the pruned
  # entries stayed zero through retraining while the surviving ones moved.
  pt_prompt = np.load(os.path.join(model_dir, "pt", "prompt.npy"))
  stage = os.path.join(model_dir, f"rewind_{tag}")
  masks = px.load_masks(os.path.join(stage, "masks.npz"))
  keep = np.repeat(active_pieces(masks), 8, axis=1)
  initial = np.load(os.path.join(stage, "initial_prompt.npy"))
  np.testing.assert_array_equal(initial[keep].view(np.uint32), pt_prompt[keep].view(np.uint32))
  from xprompt_jax.training import checkpointing
  ckpt = checkpointing.TrainCheckpointer(stage, read_only=True)
  first = np.asarray(ckpt.restore(ckpt.all_steps()[0])[0]["trainable"]["prompt"])
  ckpt.close()
  retrained = np.load(os.path.join(stage, "prompt.npy"))
  for prompt in (initial, first, retrained):
    assert not prompt[~keep].any()
  assert not np.array_equal(first[keep], initial[keep])

  report = os.path.join(model_dir, "report")
  for name in ("results.md", "results.jsonl", "pruning_curve.png", "importance_heatmap.png", "nearest_words.json",
               "final_prompt.npy", "final_masks.npz"):
    assert os.path.exists(os.path.join(report, name)), name
  assert "RANDOM-weight backbone" in open(os.path.join(report, "results.md")).read()
  assert len(_lines(os.path.join(report, "results.jsonl"))) == len(rows)
  words = json.load(open(os.path.join(report, "nearest_words.json")))["tokens"]
  final = max((r for r in rows if r["variant"] == "xprompt"), key=lambda r: (r["metric"], r["ratio"]))["ratio"]
  final_masks = px.load_masks(os.path.join(model_dir, f"rewind_{px.ratio_tag(final)}", "masks.npz"))
  assert [w["token"] for w in words] == np.flatnonzero(active_pieces(final_masks).any(axis=1)).tolist()

  # A finished run resumes to the same table without training anything.
  again = px.run_xprompt(model_dir, **kwargs)
  assert again["rows"] == rows


def test_shipped_gin_configs_bind_the_paper_recipe_and_the_smoke_run():
  import gin
  from xprompt_jax.commands import common
  from xprompt_jax.methods import get_method
  try:
    common.parse_gin(["models/t5_1_1_base.gin", "recipes/xprompt_paper.gin"],
                     ["MIXTURE_OR_TASK_NAME = 'super_glue_cb_v102'"], finalize=False)
    method, opt, data = get_method(), optim.OptimizerConfig(), data_lib.DataConfig()
    assert (method.name, method.length, method.pieces, method.prompt_init) == ("xprompt", 20, 16, "sampled_vocab")
    assert (opt.optimizer, opt.learning_rate, opt.weight_decay_rate, data.batch_size) == ("adafactor", 0.3, 1e-5, 16)
    cfg = px.XPromptPipelineConfig()
    assert cfg.num_epochs == 100 and cfg.ratios == xprompt_config.PAPER_RATIOS and cfg.search == "retrain_every_ratio"
    with pytest.raises(ValueError, match=r"search='fast' must be one of retrain_every_ratio, pruned_dev"):
      px.XPromptPipelineConfig(search="fast")
    gin.clear_config()
    common.parse_gin(["runs/xprompt_smoke_cpu.gin"], [], finalize=False)
    cfg = px.XPromptPipelineConfig()
    assert cfg.reversed_control and cfg.random_control and cfg.length_control and cfg.token_only and cfg.piece_only
    assert cfg.search == "pruned_dev"
    assert loop.TrainConfig().initial_checkpoint is None and get_method().pieces == 4
  finally:
    gin.clear_config()
