"""Tests for xprompt_jax.training.loop.train(): resume equals an uninterrupted run, the frozen model is untouched,
the optimizer holds only trainable leaves, and bad inputs (gin bindings, lengths, MPT task ids, prompt files,
non-finite losses) fail with messages that name the offending thing.

Every run uses a tiny random T5 (1+1 layers, width 16) loaded once per module and passed to `train(frozen=...)`,
synthetic token batches through `batches_fn` (deterministic in the input position, so resuming is testable), and
the real RTE validation split (16 examples) for the end-of-run evaluation.
"""
import dataclasses
import json
import os

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numerics
from xprompt_jax.commands import common
from xprompt_jax.evaluation.evaluator import EvalConfig
from xprompt_jax.methods import MPT, PromptTuning, XPrompt, XPromptMasks
from xprompt_jax.methods.xprompt import MASKS_KEY
from xprompt_jax.models.config import T5Config
from xprompt_jax.training import checkpointing, data, loop, optim, partitioning
from xprompt_jax.training import step as step_lib

CONFIG = T5Config(vocab_size=32128, emb_dim=16, num_heads=4, head_dim=4, mlp_dim=32, num_encoder_layers=1,
                  num_decoder_layers=1, name="loop_tiny")
MESH = partitioning.MeshConfig(data=-1, model=1)
DATA = data.DataConfig("super_glue_rte_v102", inputs_length=32, targets_length=4, batch_size=8, shuffle=False)
EVAL = EvalConfig(max_examples=16, batch_size=8, inputs_length=32, targets_length=4)
PROMPT = PromptTuning(length=4, prompt_init="random_uniform")
# The resume runs use XPrompt with pruned masks so that the non-trained `aux` state goes through the checkpoint too.
XPROMPT = XPrompt(length=4, prompt_init="random_uniform", pieces=4)
MASKS = XPromptMasks(token=jnp.array([1.0, 0.0, 1.0, 1.0]),
                     piece=jnp.ones((4, 4)).at[0, 1].set(0.0).at[3, 3].set(0.0))


def synthetic_batches(cfg, position=0, nan_at=None, task_ids=None):
  """Endless batches, batch p a pure function of p; `nan_at`: {position: row} puts a NaN loss weight in that row."""
  while True:
    rng = np.random.default_rng(position)
    b = cfg.batch_size
    tgt = rng.integers(3, 40, size=(b, cfg.targets_length)).astype(np.int32)
    tgt[:, -1] = 1
    batch = {"encoder_input_tokens": rng.integers(3, 32000, size=(b, cfg.inputs_length)).astype(np.int32),
             "decoder_target_tokens": tgt,
             "decoder_input_tokens": np.concatenate([np.zeros((b, 1), np.int32), tgt[:, :-1]], 1),
             "decoder_loss_weights": np.ones_like(tgt, np.float32)}
    if nan_at and position in nan_at:
      batch["decoder_loss_weights"][nan_at[position], 0] = np.nan
    if task_ids is not None:
      batch["task_id"] = np.asarray(task_ids(position), np.int32)
    yield batch
    position += 1


@pytest.fixture(scope="module")
def frozen(shared):
  del shared  # The end-of-run evaluation reads RTE's validation split from ../shared.
  train_cfg = loop.TrainConfig(seed=0)
  return loop.load_frozen(train_cfg, CONFIG, partitioning.make_mesh(MESH), MESH.rules)


def run(model_dir, frozen, *, steps, method=PROMPT, batches_fn=synthetic_batches, **kw):
  params, ref = frozen
  train_kw = dict(num_train_steps=steps, log_period=1, eval_period=0, checkpoint_period=steps, progress_bar=False,
                  async_checkpointing=False, seed=0)
  train_kw.update(kw.pop("train_kw", {}))
  return loop.train(str(model_dir), config=CONFIG, method=method, data_cfg=kw.pop("data_cfg", DATA),
                    opt_cfg=kw.pop("opt_cfg", optim.OptimizerConfig()), mesh_cfg=MESH,
                    train_cfg=loop.TrainConfig(**train_kw), loss_cfg=step_lib.LossConfig(),
                    eval_cfg=kw.pop("eval_cfg", EVAL),
                    batches_fn=batches_fn, frozen=params, frozen_ref=ref, **kw)


def train_losses(model_dir):
  with open(os.path.join(model_dir, "metrics.jsonl"), encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  return {r["step"]: r["loss"] for r in rows if r["kind"] == "train"}


def host(tree):
  return jax.tree.map(lambda x: np.array(jax.device_get(x)), tree)


@pytest.fixture(scope="module")
def full_run(frozen, tmp_path_factory):
  """4 uninterrupted steps; also records the frozen params before training."""
  before = host(frozen[0])
  model_dir = tmp_path_factory.mktemp("full")
  result = run(model_dir, frozen, steps=4, method=XPROMPT, aux={MASKS_KEY: MASKS})
  return {"dir": model_dir, "result": result, "frozen_before": before}


def test_resume_gives_the_same_losses_and_state_as_an_uninterrupted_run(frozen, full_run, tmp_path):
  first = run(tmp_path, frozen, steps=2, method=XPROMPT, aux={MASKS_KEY: MASKS})
  assert first["step"] == 2
  assert checkpointing.TrainCheckpointer(str(tmp_path), read_only=True).latest_step() == 2
  resumed = run(tmp_path, frozen, steps=4, method=XPROMPT, aux={MASKS_KEY: MASKS})  # The same call, more steps.
  assert resumed["step"] == 4
  full = train_losses(full_run["dir"])
  assert sorted(full) == [1, 2, 3, 4]
  assert train_losses(tmp_path) == full  # Bit-identical per-step losses (CPU, deterministic).
  a, b = host(full_run["result"]["state"]), host(resumed["state"])
  np.testing.assert_array_equal(b["aux"][MASKS_KEY].token, np.asarray(MASKS.token))
  np.testing.assert_array_equal(b["aux"][MASKS_KEY].piece, np.asarray(MASKS.piece))
  # The masked-out prompt token received no gradient: over 4 steps only the (1 - 1e-5) weight decay moved it.
  initial = step_lib.init_state(XPROMPT, frozen[0], CONFIG, optim.make_optimizer(), jax.random.PRNGKey(0))
  # FEW: four decayed-weight updates (each a product and a subtraction), far below the 4e-5 (671 roundings) that the
  # decay itself moves the token, so a missing or doubled decay fails.
  numerics.assert_close(b["trainable"]["prompt"][1], np.asarray(initial["trainable"]["prompt"][1]) * (1 - 1e-5)**4,
                        roundings=numerics.FEW)
  # The unmasked token trained: it moved beyond what four steps' rounding (or the decay alone) could move it.
  numerics.assert_differs(b["trainable"]["prompt"][0], np.asarray(initial["trainable"]["prompt"][0]),
                          roundings=numerics.TRAJECTORY)
  for part in ("trainable", "opt_state", "step", "rng", "aux"):
    leaves_a, leaves_b = jax.tree.leaves(a[part]), jax.tree.leaves(b[part])
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
      assert np.array_equal(x, y), part


def test_each_evaluation_is_written_to_inference_eval_as_t5x_does(full_run):
  """<model_dir>/inference_eval/<task>-<step:06>.jsonl (seqio's JSONLogger layout) and <task>-metrics.jsonl."""
  folder = full_run["dir"] / "inference_eval"
  rows = [json.loads(line) for line in (folder / "super_glue_rte_v102-000004.jsonl").read_text().splitlines()]
  assert len(rows) == EVAL.max_examples
  for row in rows:
    assert set(row) == {"input", "target", "prediction", "score"}
    assert row["input"]["inputs_pretokenized"].startswith("rte hypothesis: ")  # T5's text for RTE.
    assert row["input"]["targets_pretokenized"] in ("entailment", "not_entailment")
    assert row["target"] in (0, 1) and row["prediction"] in (0, 1) and row["score"] < 0  # Postprocessed labels.
  [logged] = [json.loads(line) for line in (folder / "super_glue_rte_v102-metrics.jsonl").read_text().splitlines()]
  accuracy = 100.0 * np.mean([r["target"] == r["prediction"] for r in rows])
  assert logged == {"step": 4, "accuracy": pytest.approx(accuracy)}
  evals = [json.loads(line) for line in (full_run["dir"] / "metrics.jsonl").read_text().splitlines()
           if json.loads(line)["kind"] == "eval"]
  assert evals[-1]["super_glue_rte_v102/accuracy"] == pytest.approx(accuracy)


def test_frozen_params_are_bit_identical_after_training(frozen, full_run):
  after = host(frozen[0])
  flat_before = jax.tree_util.tree_flatten_with_path(full_run["frozen_before"])[0]
  flat_after = jax.tree.leaves(after)
  assert len(flat_before) == len(flat_after)
  for (path, x), y in zip(flat_before, flat_after):
    assert np.array_equal(x, y), jax.tree_util.keystr(path)
  # ... while the prompt did move.
  assert full_run["result"]["state"]["trainable"]["prompt"].shape == (4, 16)


def test_optimizer_state_holds_only_trainable_leaves(frozen, full_run):
  state = full_run["result"]["state"]
  expected = optim.make_optimizer(optim.OptimizerConfig()).init(state["trainable"])
  got = [np.shape(x) for x in jax.tree.leaves(state["opt_state"])]
  assert got == [np.shape(x) for x in jax.tree.leaves(expected)]
  frozen_shapes = {np.shape(x) for x in jax.tree.leaves(frozen[0]) if np.ndim(x) > 1}
  assert not frozen_shapes & set(got)
  assert set(host(state)) == {"step", "trainable", "opt_state", "aux", "rng"}
  assert int(state["step"]) == 4


def test_unknown_gin_binding_is_named():
  gin.clear_config()
  try:
    with pytest.raises(ValueError, match="num_train_stepz"):
      common.parse_gin(["runs/smoke_cpu.gin"], ["TrainConfig.num_train_stepz = 3"])
  finally:
    gin.clear_config()


def test_prompt_longer_than_encoder_length(frozen, tmp_path):
  with pytest.raises(ValueError, match=r"prompt length 4 \+ inputs length 32 = 36 exceeds the encoder length 30"):
    run(tmp_path, frozen, steps=1, train_kw={"encoder_length": 30})
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints")) or not os.listdir(
      os.path.join(tmp_path, "checkpoints"))


def test_from_file_prompt_of_the_wrong_shape(frozen, tmp_path):
  path = os.path.join(tmp_path, "prompt.npy")
  np.save(path, np.zeros((3, 16), np.float32))
  method = PromptTuning(length=4, prompt_init="from_file", path=path)
  with pytest.raises(ValueError, match=r"prompt\.npy.*shape \(3, 16\).*\[4, 16\]"):
    run(os.path.join(tmp_path, "run"), frozen, steps=1, method=method)


def test_mpt_task_id_out_of_range(frozen, tmp_path):
  method = MPT(length=4, prompt_init="random_uniform", num_tasks=2)
  batches = lambda cfg, position: synthetic_batches(cfg, position, task_ids=lambda p: [0, 1, 0, 5, 1, 0, 1, 0])
  with pytest.raises(ValueError, match=r"task ids \[5\] at positions \[3\].*0\.\.1"):
    run(tmp_path, frozen, steps=2, method=method, batches_fn=batches)


def test_nonfinite_loss_stops_naming_step_and_examples_and_saves_nothing_nonfinite(frozen, tmp_path):
  batches = lambda cfg, position: synthetic_batches(cfg, position, nan_at={2: 3})
  with pytest.raises(loop.NonFiniteError, match=r"step 3 \(input batch 2, example indices \[19\]\)"):
    run(tmp_path, frozen, steps=4, batches_fn=batches, train_kw={"checkpoint_period": 1})
  ckpt = checkpointing.TrainCheckpointer(str(tmp_path), read_only=True)
  assert ckpt.all_steps() == [1, 2]
  state, _ = ckpt.restore(2)
  for leaf in jax.tree.leaves(state):
    if np.issubdtype(np.asarray(leaf).dtype, np.floating):
      assert np.all(np.isfinite(np.asarray(leaf)))


def test_nonfinite_prompt_from_initial_trainable_stops(frozen, tmp_path):
  prompt = np.random.default_rng(0).uniform(-0.5, 0.5, (4, 16)).astype(np.float32)
  prompt[1, 2] = np.nan
  with pytest.raises(loop.NonFiniteError, match=r"step 1 \(input batch 0, example indices \[0, 1, 2, 3, 4, 5, 6, 7\]"):
    run(tmp_path, frozen, steps=2, initial_trainable={"prompt": prompt})
  assert checkpointing.TrainCheckpointer(str(tmp_path), read_only=True).latest_step() is None


def test_nonfinite_skip_skips_the_step(frozen, tmp_path):
  batches = lambda cfg, position: synthetic_batches(cfg, position, nan_at={1: 0})
  result = run(tmp_path, frozen, steps=3, batches_fn=batches, train_kw={"nonfinite": "skip"})
  assert result["step"] == 3
  losses = train_losses(tmp_path)
  assert np.isnan(losses[2]) and np.isfinite(losses[1]) and np.isfinite(losses[3])
  for leaf in jax.tree.leaves(host(result["state"]["trainable"])):
    assert np.all(np.isfinite(leaf))


def test_default_eval_tasks_are_the_training_tasks_evaluation_tasks():
  """MNLI is evaluated on its matched and mismatched sets (on its own local re-split dev when asked for that split),
  WSC simple_train on simple_eval; TrainConfig.eval_tasks wins."""
  def default(task, split="validation", **train_kw):
    return loop.default_eval_tasks(loop.TrainConfig(**train_kw), data.DataConfig(task), EvalConfig(split=split))

  assert default("glue_mnli_v002") == ("glue_mnli_matched_v002", "glue_mnli_mismatched_v002")
  assert default("glue_mnli_v002", "resplit_dev") == ("glue_mnli_v002",)
  assert default("super_glue_wsc_v102_simple_train") == ("super_glue_wsc_v102_simple_eval",)
  assert default("super_glue_rte_v102") == ("super_glue_rte_v102",)
  assert default("glue_mnli_v002", eval_tasks=("glue_mnli_matched_v002",)) == ("glue_mnli_matched_v002",)


def test_a_run_on_wsc_simple_train_evaluates_simple_eval_by_decoding(frozen, tmp_path):
  """WSC `simple_train` has no validation split: the run evaluates `simple_eval`, decoded under mode 'auto'."""
  wsc = dataclasses.replace(DATA, mixture_or_task_name="super_glue_wsc_v102_simple_train")
  result = run(tmp_path, frozen, steps=1, data_cfg=wsc, eval_cfg=dataclasses.replace(EVAL, mode="auto"))
  assert set(result["eval"]) == {"super_glue_wsc_v102_simple_eval/accuracy"}
