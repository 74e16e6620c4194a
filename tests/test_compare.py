"""The comparison runner: plan, labels, best evaluation, gin configs, and the --quick run end to end."""
import json
import os
import subprocess
import sys

import gin
import jax
import numpy as np
import pytest

from xprompt_jax import paths
from xprompt_jax.commands import common
from xprompt_jax.pipelines import compare
from xprompt_jax.training import stages


def test_plan_covers_every_method_task_and_seed():
  cfg = compare.CompareConfig(tasks=("a", "b"), seeds=(0, 1), xprompt_tasks=("a",))
  runs = compare.planned_runs(cfg)
  assert ("prompt_class_labels/b/seed1", "prompt_class_labels", "b", 1) in runs
  assert ("mpt/seed0", "mpt", None, 0) in runs and ("xprompt/a/seed1", "xprompt", "a", 1) in runs
  assert not any(folder.startswith("xprompt/b") for folder, *_ in runs)
  assert len(runs) == 2 * (4 * 2 + 1 + 1)
  assert len({folder for folder, *_ in runs}) == len(runs)


def test_config_errors_name_the_field():
  with pytest.raises(ValueError, match="unknown methods \\['lora'\\]"):
    compare.CompareConfig(methods=("prompt_random", "lora"))
  with pytest.raises(ValueError, match="CompareConfig.num_train_steps"):
    compare.CompareConfig(num_train_steps=0)


def test_per_task_inputs_length_reaches_the_run_settings():
  cfg = compare.CompareConfig(tasks=("a", "b"), inputs_lengths={"a": 64})
  base = compare.Settings(config=None, data=compare.data_lib.DataConfig(mixture_or_task_name="a", inputs_length=128),
                          opt=None, train=compare.loop.TrainConfig(), loss=None, eval=None, mesh=None)
  a = base.for_run("a", 3, cfg.inputs_lengths.get("a"))
  b = base.for_run("b", 3, cfg.inputs_lengths.get("b"))
  assert (a.data.inputs_length, a.data.mixture_or_task_name, a.data.seed, a.train.seed) == (64, "a", 3, 3)
  assert (b.data.inputs_length, b.data.mixture_or_task_name) == (128, "b")
  with pytest.raises(ValueError, match="inputs_lengths\\['a'\\]=0"):
    compare.CompareConfig(inputs_lengths={"a": 0})


def test_class_labels():
  assert compare.class_labels("super_glue_cb_v102") == ("entailment", "contradiction", "neutral")
  assert compare.class_labels("super_glue_boolq_v102_32shot") == ("False", "True")
  assert compare.class_labels("glue_sst2_v002") == ("negative", "positive")
  with pytest.raises(ValueError, match="squad"):
    compare.class_labels("squad_v010")


def test_best_eval_is_the_best_validation_accuracy(tmp_path):
  rows = [{"step": 2, "kind": "train", "loss": 1.0},
          {"step": 2, "kind": "eval", "t/accuracy": 60.0, "t/f1": 1.0},
          {"step": 4, "kind": "train", "loss": 0.5, "z_loss": 0.125},
          {"step": 4, "kind": "eval", "t/accuracy": 70.0, "t/f1": 2.0},
          {"step": 6, "kind": "eval", "t/accuracy": 70.0, "t/f1": 3.0}]
  (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
  assert compare.best_eval(str(tmp_path), "t") == {"accuracy": 70.0, "f1": 2.0}
  with pytest.raises(ValueError, match="no evaluation of u"):
    compare.best_eval(str(tmp_path), "u")
  record = compare.run_record(str(tmp_path), "prompt_random", "t", 3)
  assert record == {"method": "prompt_random", "task": "t", "seed": 3, "metrics": {"accuracy": 70.0, "f1": 2.0},
                    "final_metrics": {"accuracy": 70.0, "f1": 3.0}, "final_step": 6, "final_train_loss": 0.375}
  assert [step for step, _ in compare.evaluations(str(tmp_path), "t")] == [2, 4, 6]


def test_num_shots_errors_name_the_field_and_mpt_is_refused():
  for bad in (0, -3, True, 2.5):
    with pytest.raises(ValueError, match=f"CompareConfig.num_shots={bad!r} must be a positive int"):
      compare.CompareConfig(methods=("prompt_class_labels",), num_shots=bad)
  with pytest.raises(ValueError, match="MPTConfig.few_shot"):
    compare.CompareConfig(num_shots=32)  # The default methods include MPT.
  assert compare.CompareConfig(methods=("prefix", "xprompt", "model_tuning"), num_shots=32).num_shots == 32


def test_k_shot_stream_cycles_over_the_drawn_rows_only(shared, tmp_path):
  """A k-shot run trains on exactly the `num_shots` rows drawn with `shots_seed` (the same draw as XPrompt's
  low-resource setting), lists them in shots.json, and its stream is a function of the position (resumable)."""
  del shared
  from xprompt_jax.pipelines import examples as examples_lib
  data = compare.data_lib.DataConfig(mixture_or_task_name="super_glue_cb_v102", inputs_length=64, targets_length=8,
                                     batch_size=4, seed=1)
  cfg = compare.CompareConfig(tasks=("super_glue_cb_v102",), methods=("prompt_class_labels",), num_shots=6,
                              shots_seed=5)
  assert compare.shots_stream(str(tmp_path / "none"), data, compare.CompareConfig()) is None
  batches_fn = compare.shots_stream(str(tmp_path), data, cfg)
  listed = json.loads((tmp_path / "shots.json").read_text())
  expected, indices = examples_lib.draw(data, 6, 5)
  assert listed == {"task": "super_glue_cb_v102", "split": "train", "seed": 5, "indices": indices.tolist()}
  assert len(listed["indices"]) == 6 and listed["indices"] != list(range(6))
  rows = {tuple(r) for r in expected["encoder_input_tokens"]}
  stream = batches_fn(data, 0)
  seen = [next(stream)["encoder_input_tokens"] for _ in range(6)]  # 24 rows: four passes over the six shots.
  assert {tuple(r) for batch in seen for r in batch} == rows
  np.testing.assert_array_equal(next(batches_fn(data, 4))["encoder_input_tokens"], seen[4])


def test_model_tuning_is_a_known_control():
  cfg = compare.CompareConfig(tasks=("a",), seeds=(0,), methods=("prompt_class_labels", "model_tuning"))
  assert ("model_tuning/a/seed0", "model_tuning", "a", 0) in compare.planned_runs(cfg)
  assert "model_tuning" not in compare.CompareConfig().methods  # A control: only when asked for.
  with pytest.raises(ValueError, match="model_tuning_dropout"):
    compare.CompareConfig(model_tuning_dropout=1.0)


def test_model_tuning_trains_every_parameter_and_records_the_exported_models_score(shared, tmp_path):
  """Two model-tuning steps on 8 shots of CB: every parameter moves, each evaluation lands in metrics.jsonl with the
  task's official metrics, and the record's last evaluation is the exported model's own score."""
  del shared
  from xprompt_jax import checkpoints
  from xprompt_jax.evaluation import evaluator as eval_lib
  from xprompt_jax.models.config import T5Config
  from xprompt_jax.models.t5 import T5, init_params
  from xprompt_jax.training import partitioning, step as step_lib
  tiny = T5Config(vocab_size=32128, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32, num_encoder_layers=1,
                  num_decoder_layers=1, name="tiny")
  task = "super_glue_cb_v102"
  eval_cfg = eval_lib.EvalConfig(mode="rank", batch_size=8, max_examples=8,
                                 feature_lengths={"inputs": 64, "targets": 8})
  settings = compare.Settings(
      config=tiny, data=compare.data_lib.DataConfig(mixture_or_task_name=task, inputs_length=64, targets_length=8,
                                                    batch_size=8, shuffle_buffer_size=100),
      opt=None, train=compare.loop.TrainConfig(initial_checkpoint=None, log_period=1), loss=step_lib.LossConfig(),
      eval=eval_cfg, mesh=partitioning.MeshConfig())
  cfg = compare.CompareConfig(tasks=(task,), seeds=(0,), methods=("model_tuning",), num_train_steps=2,
                              eval_period=1, model_tuning_learning_rate=1e-2, num_shots=8)
  [record] = compare.run_model_tuning(str(tmp_path), settings, cfg, task, 0)
  assert record["method"] == "model_tuning" and record["final_step"] == 2
  assert len(json.loads((tmp_path / "shots.json").read_text())["indices"]) == 8  # Trained on the 8 shots.
  assert record["final_train_loss"] > 0
  assert {"accuracy", "mean_3class_f1"} <= set(record["final_metrics"])
  assert [step for step, _ in compare.evaluations(str(tmp_path), task)] == [1, 2]
  tuned, _ = checkpoints.load_params(str(tmp_path / "export" / "checkpoint_2"), tiny)
  start = init_params(tiny, jax.random.PRNGKey(0))  # The random start of seed 0 (PretrainConfig.seed).
  moved = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))), start, tuned)
  assert all(jax.tree.leaves(moved)), "model tuning must update every parameter"
  again = eval_lib.make_evaluator(task, T5(tiny), tiny, eval_cfg).evaluate(tuned)
  assert again == pytest.approx(record["final_metrics"])


@pytest.mark.parametrize("name", sorted(
    str(p.relative_to(paths.gin_dir())) for folder in ("paper", "pretrain") for p in (paths.gin_dir() / folder).glob(
        "*.gin")))
def test_shipped_gin_files_parse(name):
  common.import_configurables(extra=("xprompt_jax.pipelines.compare",))
  try:
    common.parse_gin([name], [], finalize=False)
  finally:
    gin.clear_config()


@pytest.mark.slow
def test_quick_mode_end_to_end(shared, tmp_path):
  del shared
  page = tmp_path / "results_local.md"
  cmd = [sys.executable, str(paths.PROJECT_ROOT / "bench" / "compare_methods.py"), "--quick",
         f"--results_dir={tmp_path / 'runs'}", f"--page={page}"]
  done = subprocess.run(cmd, capture_output=True, text=True, timeout=3000, check=False,
                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  assert done.returncode == 0, done.stderr[-3000:]
  assert "0 failed" in done.stdout
  text = page.read_text()
  for method in ("prompt_random", "prompt_sampled_vocab", "prompt_class_labels", "prefix", "mpt",
                 "xprompt/xprompt", "xprompt/prompt_tuning", "xprompt/reversed", "xprompt/random", "xprompt/length",
                 "xprompt/token_only", "xprompt/piece_only", "model_tuning"):
    assert f"| {method} | super_glue_cb_v102 | 0 |" in text and f"| {method} | super_glue_cb_v102 | 1 |" in text
  assert "RANDOM-weight" in text and "GENERATED FILE" in text
  assert (tmp_path / "results_local" / "methods.png").stat().st_size > 1000
  records = [json.loads(line) for line in (tmp_path / "runs" / "results.jsonl").read_text().splitlines()]
  assert {r["seed"] for r in records} == {0, 1}
  single = [r for r in records if r["method"].startswith(("prompt_", "prefix", "model_tuning"))]
  assert single and all(r["final_step"] > 0 and "accuracy" in r["final_metrics"] for r in single)
  assert all(r["final_train_loss"] > 0 for r in single)
  assert "at the last evaluation" in text and "which involve no selection at all, are tabled" in text
  assert "| the training split's label frequencies, input ignored |" in text.split("## Training loss")[1]


def test_majority_baseline_on_real_cb(shared):
  del shared
  lengths = {"inputs": 64, "targets": 8}
  # CB train: 119 contradiction, 115 entailment, 16 neutral; validation: 28 of 56 are contradiction.
  assert compare.constant_baselines("super_glue_cb_v102", lengths)["majority"] == pytest.approx(50.0)
  first = compare.constant_baselines("super_glue_cb_v102", lengths, max_examples=10)["majority"]
  assert 0.0 <= first <= 100.0 and first * 10 / 100 == pytest.approx(round(first * 10 / 100))


def test_constant_baselines_on_real_copa(shared):
  del shared
  got = compare.constant_baselines("super_glue_copa_v102", {"inputs": 64, "targets": 8})
  # The training split's most frequent answer is right on 45 of the 100 validation rows, the other one on 55.
  assert got["majority"] == pytest.approx(45.0) and got["best_constant"] == pytest.approx(55.0)
  # Input ignored, the training targets cost their frequencies' entropy, spread over their tokens (answer + EOS).
  provider = compare.data_lib.get_task("super_glue_copa_v102")
  rows = list(provider.get_dataset({"inputs": 64, "targets": 8}, split="train", shuffle=False).as_numpy_iterator())
  answers = [r["targets_pretokenized"] for r in rows]
  p = {a: answers.count(a) / len(answers) for a in set(answers)}
  entropy = -sum(np.log(p[a]) for a in answers)
  assert got["prior_loss"] == pytest.approx(entropy / sum(int(np.count_nonzero(r["targets"])) for r in rows))
  assert 0 < got["prior_loss"] <= np.log(2)


def test_page_only_reads_finished_runs_and_runs_nothing(tmp_path, monkeypatch):
  cfg = compare.CompareConfig(tasks=("a",), seeds=(0,), methods=("prompt_random", "prefix"))
  done = [{"method": "prompt_random", "task": "a", "seed": 0, "metrics": {"accuracy": 60.0}, "seconds": 1.0}]
  stages.write_result(str(tmp_path / "prompt_random" / "a" / "seed0"), done)
  monkeypatch.setattr(compare, "run_single", lambda *a, **k: pytest.fail("page_only must not train"))
  assert compare.run_all(str(tmp_path), cfg, settings=None, run_missing=False) == done
