"""Tests for xprompt_jax.pipelines.mpt (+ mpt_report): distillation on real RTE/CB, resume, stages, ablations, and
each stage's evaluation tasks (MNLI on matched + mismatched, WSC simple_train on simple_eval)."""
import json
import os

import jax
import numpy as np
import pytest

import numerics
from xprompt_jax import plotting
from xprompt_jax.evaluation.evaluator import EvalConfig
from xprompt_jax.models.config import T5Config
from xprompt_jax.pipelines import mpt
from xprompt_jax.pipelines import mpt_ablations
from xprompt_jax.pipelines import mpt_data
from xprompt_jax.pipelines import mpt_report
from xprompt_jax.training import distill
from xprompt_jax.training import loop
from xprompt_jax.training import optim
from xprompt_jax.training import partitioning
from xprompt_jax.training import stages
from xprompt_jax.training import step as step_lib
from xprompt_jax.training.data import DataConfig

RTE, CB, WIC = "super_glue_rte_v102", "super_glue_cb_v102", "super_glue_wic_v102"
MNLI, WSC_TRAIN, WSC_EVAL = "glue_mnli_v002", "super_glue_wsc_v102_simple_train", "super_glue_wsc_v102_simple_eval"
MNLI_SETS = ("glue_mnli_matched_v002", "glue_mnli_mismatched_v002")
CFG = T5Config(vocab_size=32128, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32, num_encoder_layers=1,
               num_decoder_layers=1, relpos_num_buckets=8, relpos_max_distance=32, name="tiny_mpt_test")
LENGTH = 4


def _base(**distill_kw) -> mpt.Base:
  return mpt.Base(
      config=CFG,
      data=DataConfig(mixture_or_task_name=RTE, inputs_length=32, targets_length=4, batch_size=8,
                      shuffle_buffer_size=200),
      opt=optim.OptimizerConfig(),
      train=loop.TrainConfig(num_train_steps=1, log_period=2, eval_period=0, checkpoint_period=4,
                             keep_checkpoints=2, async_checkpointing=False, progress_bar=False, seed=0),
      loss=step_lib.LossConfig(), eval=EvalConfig(max_examples=8, batch_size=8, inputs_length=32, targets_length=4),
      mesh=partitioning.MeshConfig(data=1), distill=distill.DistillConfig(**distill_kw),
      sampling=mpt_data.SamplingConfig(seed=0))


def _cfg(**kw) -> mpt.MPTConfig:
  values = dict(source_tasks=(RTE, CB), target_tasks=(WIC,), prompt_length=LENGTH, teacher_steps=2, source_steps=2,
                target_steps=2, prompt_init="random_uniform", few_shot_seeds=(0,))
  values.update(kw)
  return mpt.MPTConfig(**values)


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
  """Every stage is a fresh `train()` whose step and eval functions have the same HLO: compile each once."""
  keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
          "jax_persistent_cache_min_entry_size_bytes")
  previous = {k: getattr(jax.config, k) for k in keys}
  jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  yield
  for k, v in previous.items():
    jax.config.update(k, v)


@pytest.fixture(scope="module")
def frozen():
  return mpt.Frozen.load(_base())


def _losses(model_dir):
  return [(r["step"], r["loss"]) for r in plotting.read_metrics(str(model_dir)) if r["kind"] == "train"]


@pytest.mark.slow
def test_distillation_lowers_the_loss_and_resumes(shared, tmp_path, frozen):
  del shared
  teachers = np.random.default_rng(0).normal(0, 0.5, (2, LENGTH, CFG.emb_dim)).astype(np.float32)
  base = _base()
  mpt.train_source(str(tmp_path / "a"), _cfg(source_steps=6), base, frozen, teachers)
  # Interrupted run: stop after 6 steps (its checkpoint stays), then ask for 12: it resumes at step 6.
  os.remove(tmp_path / "a" / "source" / stages.RESULT)
  export, evals = mpt.train_source(str(tmp_path / "a"), _cfg(source_steps=12), base, frozen, teachers)
  losses = _losses(tmp_path / "a" / "source")
  assert [s for s, _ in losses] == [2, 4, 6, 8, 10, 12]  # Each logged step once: resumed, not restarted.
  assert losses[-1][1] < losses[0][1]
  assert any(k.endswith(f"{RTE}/accuracy") for k in evals) and any(k.endswith(f"{CB}/accuracy") for k in evals)
  straight, _ = mpt.train_source(str(tmp_path / "b"), _cfg(source_steps=12), base, frozen, teachers)
  for key in ("shared_prompt", "u", "v"):  # Resuming replays the same task-sampled stream and state.
    # Two equivalent runs of 12 optimizer steps, each step's rounding feeding the next.
    numerics.assert_close(export[key], straight[key], roundings=numerics.TRAJECTORY, err_msg=key)
  assert export["task_names"] == [RTE, CB]
  assert export["shared_prompt"].shape == (LENGTH, CFG.emb_dim) and export["u"].shape == (2, LENGTH, 1)


@pytest.mark.slow
def test_pipeline_and_ablation_rows(shared, tmp_path, frozen):
  del shared
  base, cfg, workdir = _base(), _cfg(), str(tmp_path)
  rows = mpt_ablations.run_ablations(workdir, cfg, base, ["full", "task_only", "shared_only"], frozen)
  assert sorted(os.listdir(tmp_path / "teachers")) == [CB, RTE]  # One set of teachers for every row.
  assert not os.path.exists(tmp_path / "source_task_only")  # Target-side rows reuse the full source prompt.
  source = mpt.load_source_export(os.path.join(workdir, "source", mpt.SOURCE_EXPORT))
  with np.load(tmp_path / "target_task_only" / WIC / mpt.TARGET_EXPORT) as t:
    np.testing.assert_array_equal(t["shared_prompt"], source["shared_prompt"])  # P* frozen.
    # u_t trained from the mean: it moved further than the rounding of the steps could move it.
    numerics.assert_differs(t["u"], source["u"].mean(0, keepdims=True), roundings=numerics.TRAJECTORY)
  with np.load(tmp_path / "target_shared_only" / WIC / mpt.TARGET_EXPORT) as t:
    np.testing.assert_array_equal(t["u"], 1.0)  # Task-specific vectors removed (fixed at ones).
    np.testing.assert_array_equal(t["v"], 1.0)
    numerics.assert_differs(t["shared_prompt"], source["shared_prompt"], roundings=numerics.TRAJECTORY)
  for name, row in rows.items():
    assert set(row["targets"]) == {WIC} and 0 <= row["average"] <= 100, (name, row)
  table = mpt_report.ablation_table(rows, frozen.ref["path"])
  assert "RANDOM-weight backbone" in table and "74.1" in table and "62.5" in table and "71.3" in table
  again = mpt_ablations.run_ablations(workdir, cfg, base, ["full"], frozen)  # Finished stages are skipped.
  assert again["full"]["targets"] == rows["full"]["targets"]
  plots = mpt_report.plot_all_stages(workdir)
  assert len(plots) == 12 and all(os.path.getsize(p) > 0 for p in plots)  # Train + eval: 2 teachers, source, 3 targets.

  group = mpt.adapt_targets(workdir, _cfg(target_tasks=(RTE, CB), target_multitask=True), base, frozen, source,
                            variant="group")
  assert set(group) == {RTE, CB} and all(group[t] for t in group)
  with np.load(tmp_path / "target_group" / "multitask" / mpt.TARGET_EXPORT) as t:
    assert t["u"].shape == (2, LENGTH, 1)  # One u_t, v_t per target, one shared P*.
  few = mpt.adapt_targets(workdir, _cfg(target_tasks=(CB,), few_shot=(2,)), base, frozen, source, variant="few")
  assert list(few) == [f"{CB}@2shot"]
  result = json.loads((tmp_path / "target_few" / "2shot" / "seed0" / CB / stages.RESULT).read_text())
  assert result["shots"] == 2


def test_parameter_counts_match_the_paper():
  counts = mpt_report.parameter_counts(768, 100, num_targets=5)
  assert counts["prompt_tuning_per_task"] == 76_800
  assert counts["mpt_per_target_task"] == 77_668
  assert counts["mpt_group_of_5"] == 76_800 + 5 * (100 + 768)
  assert "77,668" in mpt_report.parameter_table(16, 4, 2) and "76,800" in mpt_report.parameter_table(16, 4, 2)


def test_target_init_and_learning_rates():
  export = {"shared_prompt": np.full((3, 2), 2.0), "u": np.stack([np.ones((3, 1)), 3 * np.ones((3, 1))]),
            "v": np.stack([np.ones((2, 1)), np.zeros((2, 1))]), "task_names": [RTE, CB]}
  init = mpt.target_initial_trainable(export, [WIC])
  numerics.assert_close(init["u"], 2.0, roundings=numerics.FEW)  # Means of 2 source rows.
  numerics.assert_close(init["v"], 0.5, roundings=numerics.FEW)
  matching = mpt.target_initial_trainable(export, [CB, RTE], "matching_source")
  numerics.assert_close(matching["u"][:, 0, 0], [3.0, 1.0], roundings=numerics.FEW)
  with pytest.raises(ValueError, match=rf"\['{WIC}'\] have no source prompt.*{RTE}"):
    mpt.target_initial_trainable(export, [WIC], "matching_source")
  shared_only = mpt.target_initial_trainable(export, [WIC], update="shared_only")
  np.testing.assert_array_equal(shared_only["u"], 1.0)
  cfg = _cfg(shared_learning_rate=0.3, u_learning_rate=0.1, v_learning_rate=0.2)
  assert mpt.target_learning_rates(cfg, "both") == (("shared", 0.3), ("u", 0.1), ("v", 0.2))
  assert mpt.target_learning_rates(cfg, "task_only") == (("shared", 0.0), ("u", 0.1), ("v", 0.2))
  assert mpt.target_learning_rates(cfg, "shared_only") == (("shared", 0.3), ("u", 0.0), ("v", 0.0))
  with pytest.raises(ValueError, match="train nothing"):
    mpt.target_learning_rates(_cfg(shared_learning_rate=0.0), "shared_only")


def test_bad_inputs_raise_clear_errors(tmp_path):
  with pytest.raises(ValueError, match="lambda"):
    _base(weight=-1.0)
  teachers = np.zeros((2, LENGTH + 1, CFG.emb_dim), np.float32)
  with pytest.raises(ValueError, match=r"teacher prompts for tasks .*shape \(2, 5, 16\).*\(2, 4, 16\)"):
    mpt.train_source(str(tmp_path), _cfg(), _base(), mpt.Frozen(None, {}), teachers)
  with pytest.raises(FileNotFoundError, match="no MPT source export"):
    mpt.load_source_export(str(tmp_path / "missing.npz"))
  with pytest.raises(ValueError, match="target_update"):
    _cfg(target_update="neither")
  with pytest.raises(ValueError, match="exclusive"):
    _cfg(few_shot=(4,), target_multitask=True)
  with pytest.raises(ValueError, match="source_rates"):
    _cfg(source_rates=(1.0,))
  with pytest.raises(ValueError, match="'ag_news_subset'.*not usable"):
    mpt_ablations.run_ablations(str(tmp_path), _cfg(extended_source_tasks=("ag_news_subset",)), _base(), ["sources_12"],
                      mpt.Frozen(None, {"path": "x"}))
  with pytest.raises(ValueError, match="unknown MPT ablations"):
    mpt_ablations.run_ablations(str(tmp_path), _cfg(), _base(), ["fulll"], mpt.Frozen(None, {"path": "x"}))
  teacher_dir = tmp_path / "teachers" / RTE
  teacher_dir.mkdir(parents=True)
  np.save(teacher_dir / "prompt.npy", np.zeros((LENGTH + 2, CFG.emb_dim), np.float32))
  (teacher_dir / stages.RESULT).write_text(json.dumps({"eval": {}}))
  with pytest.raises(ValueError, match=r"teacher prompt .* has shape \(6, 16\)"):
    mpt.train_teachers(str(tmp_path), _cfg(), _base(), mpt.Frozen(None, {}))


def test_per_task_metrics_reads_task_and_mixture_keys():
  results = {f"mix/{RTE}/accuracy": 60.0, f"{CB}/accuracy": 50.0, f"{CB}/mean_3class_f1": 40.0,
             "mix/average/score": 1.0}
  per_task = mpt.per_task_metrics(results, [RTE, CB])
  assert per_task == {RTE: {"accuracy": 60.0}, CB: {"accuracy": 50.0, "mean_3class_f1": 40.0}}
  assert mpt.task_score(per_task[CB]) == 45.0
  assert "45.00" in mpt_report.targets_table(per_task, "random-init:seed=0:x")
  mnli = {"glue_mnli_matched_v002/accuracy": 80.0, "glue_mnli_mismatched_v002/accuracy": 78.0,
          "glue_mnli_v002/accuracy": 1.0, f"{WSC_EVAL}/accuracy": 60.0}
  assert mpt.per_task_metrics(mnli, ["glue_mnli_v002", WSC_TRAIN]) == {
      "glue_mnli_v002": {"glue_mnli_matched_v002/accuracy": 80.0, "glue_mnli_mismatched_v002/accuracy": 78.0},
      WSC_TRAIN: {"accuracy": 60.0}}
  assert mpt.per_task_metrics(mnli, ["glue_mnli_v002"], "resplit_dev") == {"glue_mnli_v002": {"accuracy": 1.0}}


def test_stage_plots_from_metrics(tmp_path):
  for stage in ("teachers/a", "source"):
    (tmp_path / stage).mkdir(parents=True)
    (tmp_path / stage / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"step": 1, "kind": "train", "loss": 3.0}, {"step": 2, "kind": "train", "loss": 2.0},
        {"step": 2, "kind": "eval", "task/accuracy": 50.0}]) + "\n")
  plots = mpt_report.plot_all_stages(str(tmp_path))
  assert sorted(os.path.basename(p) for p in plots) == ["source_eval.png", "source_train.png",
                                                         "teachers__a_eval.png", "teachers__a_train.png"]
  assert all(os.path.getsize(p) > 1000 for p in plots)


def _cli(*args):
  import subprocess
  import sys
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
  return subprocess.run([sys.executable, "-m", "xprompt_jax.cli", "mpt", *args], capture_output=True, text=True,
                        env=env, timeout=300)


@pytest.mark.slow
def test_command_parameter_table_and_gin_errors(tmp_path):
  done = _cli("--gin_file=runs/mpt_smoke_cpu.gin", f"--model_dir={tmp_path}", "--stage=params")
  assert done.returncode == 0, done.stderr[-3000:]
  assert "| 10 | 320 | 362 |" in done.stdout and "76,800 | 77,668" in done.stdout
  assert "77,668" in (tmp_path / "report.md").read_text()
  bad = _cli("--gin_file=runs/mpt_smoke_cpu.gin", f"--model_dir={tmp_path}", "--gin.DistillConfig.weight=-0.5")
  assert bad.returncode == 1 and "DistillConfig.weight (lambda) must be a finite number >= 0" in bad.stderr


@pytest.fixture
def recorded_stages(monkeypatch):
  """Replaces `loop.train` by a recorder of what each stage would train and evaluate."""
  seen = []

  def fake_train(model_dir, **kwargs):
    seen.append({"split": kwargs["eval_cfg"].split, "eval_tasks": kwargs["train_cfg"].eval_tasks,
                 "task_ids": kwargs.get("eval_task_ids"), "batches_fn": kwargs.get("batches_fn")})
    os.makedirs(model_dir, exist_ok=True)
    n = getattr(kwargs["method"], "num_tasks", 1)
    trainable = kwargs.get("initial_trainable") or {
        "prompt": np.zeros((LENGTH, CFG.emb_dim), np.float32), "shared_prompt": np.zeros((LENGTH, CFG.emb_dim)),
        "u": np.ones((n, LENGTH, 1)), "v": np.ones((n, CFG.emb_dim, 1))}
    evals = {f"{t}/accuracy": 50.0 for t in kwargs["train_cfg"].eval_tasks}
    return {"state": {"trainable": trainable}, "step": 1, "eval": evals}

  monkeypatch.setattr(mpt.loop, "train", fake_train)
  return seen


FAKE_FROZEN = mpt.Frozen(params=None, ref={"path": "none", "fingerprint": "none"})


def test_source_stages_evaluate_on_source_eval_split(tmp_path, recorded_stages):
  """Offline, MNLI/QQP have no official validation file: teachers and distillation evaluate on the chosen split
  (MNLI has the local re-split dev itself), target adaptation keeps EvalConfig's."""
  cfg = _cfg(source_tasks=(RTE, MNLI), source_eval_split="resplit_dev")
  mpt.train_teachers(str(tmp_path), cfg, _base(), FAKE_FROZEN)
  assert [(r["split"], r["eval_tasks"]) for r in recorded_stages] == [("resplit_dev", (RTE,)),
                                                                      ("resplit_dev", (MNLI,))]
  assert mpt.MPTConfig().source_eval_split == "validation"


def test_every_stage_evaluates_its_tasks_on_their_evaluation_tasks(tmp_path, recorded_stages):
  """MNLI is evaluated on its matched and mismatched sets, WSC `simple_train` (no validation split) on
  `simple_eval`, with the task prompt of the task they evaluate; the training streams hold the training tasks only."""
  cfg = _cfg(source_tasks=(RTE, MNLI), target_tasks=(WSC_TRAIN, CB))
  teachers, teacher_eval = mpt.train_teachers(str(tmp_path), cfg, _base(), FAKE_FROZEN)
  assert [r["eval_tasks"] for r in recorded_stages] == [(RTE,), MNLI_SETS]
  assert teacher_eval[MNLI] == {f"{t}/accuracy": 50.0 for t in MNLI_SETS}
  export, _ = mpt.train_source(str(tmp_path), cfg, _base(), FAKE_FROZEN, teachers)
  source = recorded_stages[-1]
  assert source["eval_tasks"] == (RTE,) + MNLI_SETS and source["split"] == "validation"
  assert source["task_ids"] == {RTE: 0, MNLI_SETS[0]: 1, MNLI_SETS[1]: 1}
  assert source["batches_fn"].args[0] == (RTE, MNLI)  # Sampled from the training tasks only.
  targets = mpt.adapt_targets(str(tmp_path), cfg, _base(), FAKE_FROZEN, export)
  assert [r["eval_tasks"] for r in recorded_stages[-2:]] == [(WSC_EVAL,), (CB,)]
  assert targets == {WSC_TRAIN: {"accuracy": 50.0}, CB: {"accuracy": 50.0}}  # Keyed by the trained task.
  group = mpt.adapt_targets(str(tmp_path), _cfg(target_tasks=(WSC_TRAIN, CB), target_multitask=True), _base(),
                            FAKE_FROZEN, export, variant="group")
  assert recorded_stages[-1]["eval_tasks"] == (WSC_EVAL, CB)
  assert recorded_stages[-1]["task_ids"] == {WSC_EVAL: 0, CB: 1}
  assert group == targets


@pytest.mark.usefixtures("shared")
def test_without_decomposition_the_source_trains_one_plain_prompt(tmp_path, frozen):
  """Table 6's 'no decomposition' rows: u, v stay exactly ones (lr 0), so every source task shares P*; P* moves."""
  cfg, base = _cfg(source_decomposition=False), _base(weight=0.0)
  teachers = np.zeros((2, LENGTH, CFG.emb_dim), np.float32)
  export, _ = mpt.source_stage(str(tmp_path / "source"), cfg, base, frozen, teachers, [RTE, CB])
  np.testing.assert_array_equal(export["u"], np.ones_like(export["u"]))
  np.testing.assert_array_equal(export["v"], np.ones_like(export["v"]))
  start = mpt.MPT(length=LENGTH, num_tasks=2, rank=1, prompt_init="random_uniform", uv_init="ones")
  assert start.uv_init == "ones" and not np.allclose(export["shared_prompt"], 0.0)
  rows = {a.name: a for a in mpt_ablations.ABLATIONS}
  assert rows["distillation_only"].config == {"source_decomposition": False} and not rows["distillation_only"].distill
  assert rows["decomposition_only"].distill == {"weight": 0.0} and rows["decomposition_only"].source_variant
