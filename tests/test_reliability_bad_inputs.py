"""Bad input through the real CLI (`xprompt_jax.cli.run`, in-process for speed): each case gives one clear error
naming the offending thing, exits with status 1, and leaves an existing run's checkpoints and outputs untouched."""
import contextlib
import errno
import hashlib
import io
import os
import pathlib
import shutil

from absl import flags
import gin
import numpy as np
import pytest

from xprompt_jax import cli

TINY = ["--gin_file=runs/smoke_cpu.gin", "--gin.TrainConfig.num_train_steps=2", "--gin.TrainConfig.log_period=1",
        "--gin.TrainConfig.eval_period=0", "--gin.TrainConfig.checkpoint_period=1000",
        "--gin.TrainConfig.progress_bar=False", "--gin.PromptTuning.length=4", "--gin.DataConfig.inputs_length=32",
        "--gin.DataConfig.batch_size=8", "--gin.TrainConfig.encoder_length=36", "--gin.EvalConfig.max_examples=8",
        "--gin.EvalConfig.batch_size=8", "--gin.T5Config.emb_dim=16", "--gin.T5Config.mlp_dim=16",
        "--gin.T5Config.num_heads=2", "--gin.T5Config.head_dim=4"]


def run_cli(*args):
  """(exit status, stdout + stderr) of `xprompt-jax *args` run in this process."""
  flags.FLAGS.unparse_flags()
  gin.clear_config()
  buffer = io.StringIO()
  try:
    with contextlib.redirect_stderr(buffer), contextlib.redirect_stdout(buffer):
      try:
        rc = cli.run(["xprompt-jax", *args])
      except SystemExit as e:
        rc = e.code
  finally:
    gin.clear_config()
  return rc, buffer.getvalue()


def snapshot(folder):
  """{relative path: (size, mtime, sha256)} of every file (the lock file holds the last holder's pid: skipped)."""
  out = {}
  for path in sorted(pathlib.Path(folder).rglob("*")):
    if path.is_file() and path.name != ".lock":
      out[str(path.relative_to(folder))] = (path.stat().st_size, path.stat().st_mtime_ns,
                                            hashlib.sha256(path.read_bytes()).hexdigest())
  return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared):
  """A finished 2-step run (checkpoint 2, metrics.jsonl, TensorBoard) that every failing command must leave alone."""
  del shared
  model_dir = tmp_path_factory.mktemp("bad_inputs") / "run"
  rc, log = run_cli("train", *TINY, f"--model_dir={model_dir}")
  assert rc in (0, None), log[-3000:]
  return model_dir


def fails(model_dir, *args, expect):
  before = snapshot(model_dir)
  rc, log = run_cli(*args)
  assert rc == 1, log[-3000:]
  for text in expect:
    assert text in log, log[-3000:]
  assert "Traceback" not in log, log[-3000:]
  after = snapshot(model_dir)
  assert {k: after.get(k) for k in before} == before  # Every existing file unchanged...
  assert all(k.startswith("tb/") for k in set(after) - set(before))  # ...at most a new (empty) TensorBoard log.
  return log


def fake_shared(tmp_path, files):
  """A shared folder whose data files are `files` ({relative path: text}); the real vocabulary is linked in."""
  root = tmp_path / "shared"
  (root / "vocab").mkdir(parents=True)
  real = pathlib.Path(os.environ.get("XPROMPT_SHARED") or pathlib.Path(__file__).resolve().parents[2] / "shared")
  (root / "vocab" / "t5_spm_32000.model").symlink_to(real / "vocab" / "t5_spm_32000.model")
  files = {"data/superglue/RTE/val.jsonl": RTE_ROW % 0, **files}  # Evaluation data, so nothing goes to TFDS.
  for rel, text in files.items():
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(text)
  return root


RTE_ROW = '{"premise": "A cat sat.", "hypothesis": "A cat.", "label": "entailment", "idx": %d}\n'


# --- gin ----------------------------------------------------------------------------------------------------------
def test_unknown_gin_binding(trained):
  fails(trained, "train", *TINY, "--gin.TrainConfig.num_train_stepz=3", f"--model_dir={trained}",
        expect=["gin configuration error", "num_train_stepz"])


def test_unknown_gin_file(trained):
  fails(trained, "train", "--gin_file=runs/no_such.gin", f"--model_dir={trained}",
        expect=["gin file 'runs/no_such.gin' not found", "runs/smoke_cpu.gin"])


def test_wrong_type_in_binding(trained):
  fails(trained, "train", *TINY, "--gin.TrainConfig.num_train_steps='ten'", f"--model_dir={trained}",
        expect=["TrainConfig.num_train_steps='ten' must be an int"])


def test_wrong_value_in_binding(trained):
  fails(trained, "train", *TINY, "--gin.TrainConfig.nonfinite='ignore'", f"--model_dir={trained}",
        expect=["TrainConfig.nonfinite='ignore' must be 'stop' or 'skip'"])


# --- metric keys (checked as the config is read, before any training) ---------------------------------------------
def error_line(log):
  """The one line the CLI printed for the error: the last line of its output, and the only one about it."""
  lines = [line for line in log.splitlines() if line.strip()]
  assert ": error: " in lines[-1] and sum("error" in line for line in lines) == 1, log[-3000:]
  return lines[-1]


@pytest.mark.parametrize("command, recipe", [("xprompt", "recipes/xprompt_paper.gin"),
                                             ("mpt", "recipes/mpt_paper.gin")])
def test_t5x_train_steps_where_the_stages_count_their_own_steps(trained, tmp_path, command, recipe):
  """A T5X user's --gin.TRAIN_STEPS would be silently ignored by the XPrompt and MPT pipelines: one line instead."""
  fresh = tmp_path / command
  log = fails(trained, command, f"--gin_file={recipe}", "--gin.MIXTURE_OR_TASK_NAME='super_glue_cb_v102'",
              "--gin.TRAIN_STEPS=1130000", f"--model_dir={fresh}", expect=[])
  assert f"error: --gin.TRAIN_STEPS=1130000 has no effect on `xprompt-jax {command}`: its stages count" in \
      error_line(log), log[-2000:]
  assert not fresh.exists()


def test_xprompt_select_metric_multirc_unknown_key(trained, tmp_path):
  """A select_metric MultiRC does not report (once, the recipe's hint named one) used to train the whole PT stage
  and then fail at the first best-checkpoint save; now nothing starts and nothing is written."""
  fresh = tmp_path / "xprompt_multirc"
  log = fails(trained, "xprompt", "--gin_file=recipes/xprompt_paper.gin",
              "--gin.MIXTURE_OR_TASK_NAME='super_glue_multirc_v102'",
              "--gin.XPromptPipelineConfig.select_metric='f1_score'", f"--model_dir={fresh}", expect=[])
  assert error_line(log).endswith(
      "error: XPromptPipelineConfig.select_metric='f1_score': super_glue_multirc_v102 (EvalConfig.mode='both') "
      "reports rank/f1, rank/exact_match, decode/f1, decode/exact_match; bind one of them"), log[-3000:]
  assert not fresh.exists()


def test_train_unknown_best_metric(trained, tmp_path):
  log = fails(trained, "train", *TINY, "--gin.TrainConfig.best_metric='super_glue_rte_v102/acc'",
              f"--model_dir={trained}", expect=[])
  assert error_line(log).endswith(
      "error: TrainConfig.best_metric='super_glue_rte_v102/acc': the evaluation on super_glue_rte_v102 "
      "(EvalConfig.mode='rank') reports super_glue_rte_v102/accuracy; bind one of them"), log[-3000:]
  fresh = tmp_path / "fresh"
  log = fails(trained, "train", *TINY, "--gin.EvalConfig.mode='both'",
              "--gin.TrainConfig.best_metric='super_glue_rte_v102/accuracy'", f"--model_dir={fresh}", expect=[])
  assert error_line(log).endswith("reports super_glue_rte_v102/rank/accuracy, super_glue_rte_v102/decode/accuracy; "
                                  "bind one of them"), log[-3000:]
  assert not fresh.exists()


def test_train_valid_best_metric_passes_the_check(trained, tmp_path):
  """A key the evaluation reports gets through the check; the run then trains (and keeps its best checkpoint)."""
  del trained
  model_dir = tmp_path / "best"
  rc, log = run_cli("train", *TINY, "--gin.TrainConfig.best_metric='super_glue_rte_v102/accuracy'",
                    f"--model_dir={model_dir}")
  assert rc in (0, None), log[-3000:]
  assert "done: step 2" in log


# --- checkpoints --------------------------------------------------------------------------------------------------
def test_checkpoint_shape_mismatch(trained):
  fails(trained, "eval", *TINY, "--gin.PromptTuning.length=5", "--gin.TrainConfig.encoder_length=40",
        f"--model_dir={trained}", expect=["leaf trainable.prompt: saved shape (4, 16), abstract state shape (5, 16)"])


def test_checkpoint_missing_parameter(trained):
  log = fails(trained, "eval", *TINY, "--gin.get_method.name='prefix'", f"--model_dir={trained}",
              expect=["the abstract state does not match checkpoint 2", "lacks"])
  assert "trainable.prompt" in log


def test_unknown_checkpoint_step(trained):
  fails(trained, "eval", *TINY, "--step=7", f"--model_dir={trained}",
        expect=["--step=7:", "has no checkpoint 7; its steps are [2]"])


def test_partial_checkpoint(trained, tmp_path):
  copy = tmp_path / "run"
  shutil.copytree(trained, copy)
  data_files = [p for p in (copy / "checkpoints" / "2" / "state").rglob("*") if p.is_file() and "d" in p.parts]
  assert data_files
  for path in data_files:  # Truncated outside orbax's atomic rename (a bad copy, a full disk on another tool).
    path.write_bytes(path.read_bytes()[:7])
  fails(copy, "eval", *TINY, f"--model_dir={copy}", expect=[f"checkpoint 2 in {copy} is unreadable"])
  # Resuming from it names the folder to move aside (nothing is deleted for the user).
  fails(copy, "train", *TINY, "--gin.TrainConfig.num_train_steps=3", f"--model_dir={copy}",
        expect=[f"checkpoint 2 in {copy} is unreadable",
                f"move {copy / 'checkpoints' / '2'} aside to start again from step 0"])


def test_frozen_model_mismatch(trained):
  meta = next((trained / "checkpoints" / "2" / "meta").rglob("*"))
  assert meta.exists()
  fails(trained, "eval", *TINY, "--gin.TrainConfig.seed=1", f"--model_dir={trained}",
        expect=["was trained against the frozen model at random-init:seed=0:t5_1_1_smoke_random",
                "the frozen model now given is random-init:seed=1:t5_1_1_smoke_random"])
  fails(trained, "train", *TINY, "--gin.TrainConfig.seed=1", "--gin.TrainConfig.num_train_steps=3",
        f"--model_dir={trained}", expect=["random-init:seed=0", "random-init:seed=1"])


def test_vocab_mismatch(trained):
  fails(trained, "train", *TINY, "--gin.T5Config.vocab_size=1000", f"--model_dir={trained}",
        expect=["the 'inputs' vocabulary has 32100 ids", "T5Config.vocab_size=1000"])


def test_frozen_checkpoint_does_not_fit_config(trained, shared):
  ckpt = shared / "checkpoints" / "t5x_t5_1_1_tiny_random" / "checkpoint_3"
  fails(trained, "train", *TINY, f"--gin.TrainConfig.initial_checkpoint='{ckpt}'", f"--model_dir={trained}",
        expect=[str(ckpt), "shape"])


# --- data ---------------------------------------------------------------------------------------------------------
def test_unknown_task_suggests_names(trained):
  fails(trained, "train", *TINY, "--gin.DataConfig.mixture_or_task_name='super_glue_rte_v12'",
        f"--model_dir={trained}", expect=["'super_glue_rte_v12'", "super_glue_rte_v102"])


def test_unknown_mixture_suggests_names(trained):
  fails(trained, "eval", *TINY, "--tasks=glue_mixtur", f"--model_dir={trained}", expect=["'glue_mixtur'", "glue"])


def test_missing_data_file(trained, tmp_path, monkeypatch):
  monkeypatch.setenv("XPROMPT_SHARED", str(fake_shared(tmp_path, {})))
  fails(trained, "train", *TINY, "--gin.data_source.mode='local'", f"--model_dir={trained}",
        expect=["super_glue_rte_v102", "'train'"])


def test_malformed_jsonl_row(trained, tmp_path, monkeypatch):
  rows = RTE_ROW % 0 + RTE_ROW % 1 + '{"premise": "broken",\n'
  root = fake_shared(tmp_path, {"data/superglue/RTE/train.jsonl": rows})
  monkeypatch.setenv("XPROMPT_SHARED", str(root))
  fails(trained, "train", *TINY, "--gin.data_source.mode='local'", f"--model_dir={trained}",
        expect=[f"{root}/data/superglue/RTE/train.jsonl:3: invalid JSON"])


def test_malformed_tsv_row(trained, tmp_path, monkeypatch):
  tsv = "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tonly two\n"
  root = fake_shared(tmp_path, {"data/glue/RTE/dev.tsv": tsv})
  monkeypatch.setenv("XPROMPT_SHARED", str(root))
  fails(trained, "train", *TINY, "--gin.DataConfig.mixture_or_task_name='glue_rte_v002'",
        "--gin.DataConfig.split='validation'", "--gin.data_source.mode='local'",
        f"--model_dir={tmp_path / 'glue_run'}",  # Another task: resuming `trained` on it is refused before the data.
        expect=[f"{root}/data/glue/RTE/dev.tsv:3: expected 4 tab-separated fields"])


def test_label_not_in_label_set(trained, tmp_path, monkeypatch):
  rows = RTE_ROW % 0 + RTE_ROW.replace('"entailment"', '"maybe"') % 1
  root = fake_shared(tmp_path, {"data/superglue/RTE/train.jsonl": rows})
  monkeypatch.setenv("XPROMPT_SHARED", str(root))
  fails(trained, "train", *TINY, "--gin.data_source.mode='local'", f"--model_dir={trained}",
        expect=[f"{root}/data/superglue/RTE/train.jsonl:2: label 'maybe' is not one of"])


def test_empty_split(trained, tmp_path, monkeypatch):
  root = fake_shared(tmp_path, {"data/superglue/RTE/train.jsonl": ""})
  monkeypatch.setenv("XPROMPT_SHARED", str(root))
  fails(trained, "train", *TINY, "--gin.data_source.mode='local'", f"--model_dir={trained}",
        expect=["super_glue_rte_v102[train]", "empty"])


def test_prompt_longer_than_encoder(trained):
  fails(trained, "train", *TINY, "--gin.PromptTuning.length=10", f"--model_dir={trained}",
        expect=["prompt length 10 + inputs length 32 = 42 exceeds the encoder length 36"])


# --- mesh ---------------------------------------------------------------------------------------------------------
def test_batch_not_divisible_by_data_axis(trained):
  fails(trained, "train", *TINY, "--gin.DataConfig.batch_size=6", f"--model_dir={trained}",
        expect=["DataConfig.batch_size=6 is not divisible by the 'data' mesh axis size 8"])


def test_mesh_larger_than_devices(trained):
  fails(trained, "train", *TINY, "--gin.MeshConfig.data=16", f"--model_dir={trained}",
        expect=["mesh data=16 x model=1 needs 16 devices but only 8 exist"])


# --- method inputs ------------------------------------------------------------------------------------------------
def test_task_id_out_of_range():
  from xprompt_jax.methods import mpt
  with pytest.raises(ValueError, match=r"out-of-range task ids \[3, -1\] at positions \[1, 2\]; valid ids are 0..2"):
    mpt.check_task_ids({"task_id": np.array([0, 3, -1])}, 3)


def test_pruning_ratio_out_of_range():
  from xprompt_jax.methods import xprompt
  masks = xprompt.XPromptMasks(token=np.ones(4, np.float32), piece=np.ones((4, 2), np.float32))
  with pytest.raises(ValueError, match=r"prune_masks: token_fraction=1.5 must be in \[0, 1\]"):
    xprompt.prune_masks(masks, masks, token_fraction=1.5)


# --- outputs ------------------------------------------------------------------------------------------------------
def test_model_dir_not_writable(trained, tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a folder")
  fails(trained, "train", *TINY, f"--model_dir={blocker}/run", expect=[f"{blocker}/run"])


@pytest.mark.slow
def test_disk_full_while_writing_metrics(trained, tmp_path, monkeypatch):
  copy = tmp_path / "run"
  shutil.copytree(trained, copy)
  real_open = open

  def full_disk(path, *args, **kwargs):
    if str(path).endswith("metrics.jsonl") and args and "a" in args[0]:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return real_open(path, *args, **kwargs)

  monkeypatch.setattr("builtins.open", full_disk)
  fails(copy, "train", *TINY, "--gin.TrainConfig.num_train_steps=3", f"--model_dir={copy}",
        expect=["No space left on device", f"{copy}/metrics.jsonl"])
  from xprompt_jax.training import checkpointing
  with checkpointing.TrainCheckpointer(copy, read_only=True) as ckpt:
    assert ckpt.all_steps() == [2]
