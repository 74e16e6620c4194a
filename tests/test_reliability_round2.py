"""Reliability, round two (issue "no way to lose a run"), each fault injected through the console script: a diverging
update stops the run naming its step (or is skipped), the final save never removes the only checkpoint, a resumed
run's metrics.jsonl keeps one row per step and survives a torn last line, Ctrl-C saves and exits 130, and zero
periods are refused before anything is written."""
import json
import signal
import subprocess
import sys
import time

import pytest

from cli_helpers import one_device_env, run_cli, tiny_flags
from xprompt_jax import plotting
from xprompt_jax.training import checkpointing

pytestmark = pytest.mark.usefixtures("shared")


def _steps(model_dir):
  with checkpointing.TrainCheckpointer(str(model_dir), read_only=True) as ckpt:
    return ckpt.all_steps()


def _rows(model_dir):
  return [(r["step"], r["kind"]) for r in plotting.read_metrics(str(model_dir))]


def test_a_diverging_update_stops_the_run_naming_its_step(tmp_path):
  """At learning rate 1e30 the loss stays finite (T5's RMS norm rescales a 1e30 prompt) while the prompt is garbage:
  the updated parameters' norm is what gives it away."""
  model_dir = tmp_path / "run"
  code, out = run_cli("train", *tiny_flags(4, 1, 1), "--gin.OptimizerConfig.learning_rate=1e30",
                      f"--model_dir={model_dir}")
  assert code == 1, out[-3000:]
  assert "xprompt-jax train: error: the update of step 1 diverged: the trainable parameters' norm became" in out
  assert "lower OptimizerConfig.learning_rate" in out and "Traceback" not in out
  assert _steps(model_dir) == []  # Nothing saved: no checkpoint holds the garbage prompt.
  code, out = run_cli("train", *tiny_flags(3, 1, 1), "--gin.OptimizerConfig.learning_rate=1e30",
                      "--gin.TrainConfig.nonfinite='skip'", f"--model_dir={tmp_path / 'skip'}")
  assert code == 0 and out.count("diverged") >= 3, out[-3000:]  # Every step skipped, each one named.
  with checkpointing.TrainCheckpointer(str(tmp_path / "skip"), read_only=True) as ckpt:
    state, _ = ckpt.restore(3)
  import numpy as np
  assert float(np.linalg.norm(np.asarray(state["trainable"]["prompt"]))) < 1e3  # The kept prompt is the start.


def test_the_final_save_is_the_only_save_of_its_step_and_a_resumed_end_saves_nothing(tmp_path):
  """With keep_checkpoints=1 the final step used to be deleted and written again (force): a kill in between lost
  the run. Now its evaluation comes first and the step is written once."""
  model_dir = tmp_path / "run"
  flags = [*tiny_flags(4, 2, 2), "--gin.TrainConfig.keep_checkpoints=1", "--gin.TrainConfig.eval_period=2",
           f"--model_dir={model_dir}"]
  code, out = run_cli("train", *flags)
  assert code == 0, out[-3000:]
  assert _steps(model_dir) == [4] and out.count("eval step 4:") == 1
  saved = (model_dir / "checkpoints" / "4").stat().st_mtime_ns
  meta = json.loads((model_dir / "checkpoints" / "4" / "meta" / "metadata").read_text())
  assert meta["metrics"], meta  # The final evaluation's metrics were saved with the step (best-checkpoint ranking).
  code, out = run_cli("train", *flags)  # Finished: evaluates for its report, writes nothing.
  assert code == 0 and "eval step 4:" in out, out[-3000:]
  assert (model_dir / "checkpoints" / "4").stat().st_mtime_ns == saved and _steps(model_dir) == [4]


def test_a_resumed_run_logs_each_step_once_and_survives_a_torn_last_line(tmp_path):
  model_dir = tmp_path / "run"
  code, out = run_cli("train", *tiny_flags(2, 1, 2), f"--model_dir={model_dir}")
  assert code == 0, out[-3000:]
  log = model_dir / "metrics.jsonl"
  with open(log, "a", encoding="utf-8") as f:  # A killed run logged step 3 after the last checkpoint (2), then tore.
    f.write(json.dumps({"step": 3, "kind": "train", "loss": 1.0}) + "\n" + '{"step": 4, "kind": "tr')
  assert [s for s, k in _rows(model_dir) if k == "train"] == [1, 2, 3]  # The torn line is skipped on reading.
  code, out = run_cli("train", *tiny_flags(4, 1, 2), f"--model_dir={model_dir}")
  assert code == 0, out[-3000:]
  assert [s for s, k in _rows(model_dir) if k == "train"] == [1, 2, 3, 4]  # Step 3 once: the resumed run's.
  assert log.read_text().endswith("\n") and '"kind": "tr"' not in log.read_text()


def test_ctrl_c_saves_at_the_next_step_and_exits_130(tmp_path):
  model_dir = tmp_path / "run"
  proc = subprocess.Popen([sys.executable, "-m", "xprompt_jax.cli", "train", *tiny_flags(100000, 1, 100000),
                           "--gin.TrainConfig.progress_bar=False", f"--model_dir={model_dir}"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=one_device_env())
  deadline = time.time() + 600
  while time.time() < deadline and not ((model_dir / "metrics.jsonl").exists() and
                                        (model_dir / "metrics.jsonl").read_text().count("\n") >= 2):
    time.sleep(0.5)
  proc.send_signal(signal.SIGINT)
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 130, out[-3000:]
  assert "Ctrl-C: saving a checkpoint at the next step boundary" in out and "interrupted (Ctrl-C): saved step" in out
  assert "Traceback" not in out
  assert len(_steps(model_dir)) == 1  # The step it stopped at (the period is far away).


@pytest.mark.parametrize("binding,message", [
    ("TrainConfig.checkpoint_period=0", "TrainConfig.checkpoint_period=0 must be > 0 (a step count)"),
    ("TrainConfig.log_period=0", "TrainConfig.log_period=0 must be > 0 (a step count)"),
    ("TrainConfig.eval_period=-1", "TrainConfig.eval_period=-1 must be >= 0"),
    ("TrainConfig.keep_checkpoints=0", "TrainConfig.keep_checkpoints=0 must be None (keep all) or an int > 0"),
    ("TrainConfig.max_trainable_norm=-1.0", "TrainConfig.max_trainable_norm=-1.0 must be None or a number > 0"),
])
def test_zero_and_negative_periods_are_refused_before_anything_is_written(tmp_path, binding, message):
  model_dir = tmp_path / "run"
  code, out = run_cli("train", *tiny_flags(4, 1, 1), f"--gin.{binding}", f"--model_dir={model_dir}")
  assert code == 1 and message in out and "Traceback" not in out, out[-3000:]
  assert not model_dir.exists()


def test_a_damaged_checkpoint_is_refused_not_used(tmp_path):
  """Bytes flipped in the saved state's data chunk: before, `eval` printed an accuracy from a prompt of ~1e36."""
  model_dir = tmp_path / "run"
  code, out = run_cli("train", *tiny_flags(2, 1, 2), f"--model_dir={model_dir}")
  assert code == 0, out[-3000:]
  with checkpointing.TrainCheckpointer(str(model_dir), read_only=True) as ckpt:
    state, _ = ckpt.restore(2)
  import numpy as np
  prompt = np.asarray(state["trainable"]["prompt"], np.float32).tobytes()
  chunks = [p for p in (model_dir / "checkpoints" / "2" / "state").rglob("*") if p.is_file()
            and prompt[:16] in p.read_bytes()]
  assert chunks, "no file holds the prompt's bytes"
  for chunk in chunks:  # The prompt's own bytes, in every copy orbax keeps of them.
    data = bytearray(chunk.read_bytes())
    at = bytes(data).index(prompt[:16])
    for i in range(at + 4, at + 12):
      data[i] ^= 0xFF
    chunk.write_bytes(bytes(data))
  before = {p: p.read_bytes() for p in (model_dir / "checkpoints").rglob("*") if p.is_file()}
  code, out = run_cli("eval", *tiny_flags(2, 1, 2), f"--model_dir={model_dir}")
  assert code == 1 and "Traceback" not in out, out[-3000:]
  error = [line for line in out.splitlines() if "error:" in line][-1]
  assert "checkpoint 2" in error and ("checksum" in error or "unreadable" in error or "NaN/Inf" in error), error
  after = {p: p.read_bytes() for p in (model_dir / "checkpoints").rglob("*") if p.is_file()}
  assert set(after) == set(before)  # Nothing written or removed by the failed command.


def test_restored_values_are_checked_against_the_checksums_recorded_at_save(tmp_path):
  """Storage that returns other bytes without an error of its own (a copy, a filesystem bug, a hand edit) is caught
  by the checksum of each leaf written into the checkpoint's metadata."""
  model_dir = tmp_path / "run"
  code, out = run_cli("train", *tiny_flags(2, 1, 2), f"--model_dir={model_dir}")
  assert code == 0, out[-3000:]
  meta_path = model_dir / "checkpoints" / "2" / "meta" / "metadata"
  meta = json.loads(meta_path.read_text())
  assert set(meta["checksums"]) >= {"trainable.prompt", "step", "rng"}
  meta["checksums"]["trainable.prompt"] = "0" * 64  # As if the prompt's bytes had changed since the save.
  meta_path.write_text(json.dumps(meta))
  with checkpointing.TrainCheckpointer(str(model_dir), read_only=True) as ckpt:
    with pytest.raises(checkpointing.UnreadableCheckpointError,
                       match=r"leaf trainable.prompt does not match the checksum recorded when it was saved"):
      ckpt.restore(2)


TINY_TRAIN = tiny_flags(1, 1, 1)


@pytest.mark.parametrize("name,args,message", [
    ("unknown flag", ["train", *TINY_TRAIN, "--nope=1"], "error: Unknown command line flag 'nope'"),
    ("gin flag without value", ["train", *TINY_TRAIN, "--gin.TrainConfig.seed"],
     "error: --gin.TrainConfig.seed has no value: write --gin.TrainConfig.seed=VALUE"),
    ("unbalanced binding", ["train", *TINY_TRAIN, "--gin.TrainConfig.eval_tasks=('a',"],
     "error: --gin binding \"TrainConfig.eval_tasks = ('a',\": EOF in multi-line statement (an unbalanced"),
    ("string learning rate", ["train", *TINY_TRAIN, "--gin.OptimizerConfig.learning_rate='fast'"],
     "error: OptimizerConfig.learning_rate='fast' must be a number, got a str"),
    ("required gin binding", ["infer", "--gin_file=paper/mpt_small.gin", "--output=OUT/o.jsonl"],
     "error: Required bindings for `get_method` not provided in config: ['name'] (bind it: "
     "--gin.get_method.name=VALUE"),
    ("score output is a folder", ["score", "--inputs=IN", "--output=OUT"],
     "error: --output=OUT is a folder; give a file path"),
    ("infer output folder missing", ["infer", *TINY_TRAIN, "--output=OUT/missing/o.jsonl"],
     "error: --output folder OUT/missing does not exist; create it first"),
])
def test_ordinary_mistakes_are_one_line_and_change_nothing(tmp_path, name, args, message):
  del name
  (tmp_path / "in.jsonl").write_text('{"inputs": "a", "targets": "b"}\n')
  args = [a.replace("OUT", str(tmp_path)).replace("=IN", f"={tmp_path / 'in.jsonl'}") for a in args]
  model_dir = tmp_path / "run"
  before = sorted(p.name for p in tmp_path.iterdir())
  code, out = run_cli(*args, f"--model_dir={model_dir}")
  assert code == 1 and "Traceback" not in out, out[-3000:]
  assert message.replace("OUT", str(tmp_path)) in out, out[-2000:]
  assert sorted(p.name for p in tmp_path.iterdir()) == before  # Nothing created.


def test_a_gin_file_mistake_names_the_file_and_line(tmp_path):
  bad = tmp_path / "bad.gin"
  bad.write_text("TrainConfig.seed = 1\nTrainConfig.eval_tasks = ('a',\n")
  code, out = run_cli("train", *TINY_TRAIN, f"--gin_file={bad}", f"--model_dir={tmp_path / 'run'}")
  assert code == 1 and f"error: {bad}:3: EOF in multi-line statement" in out and "Traceback" not in out, out[-2000:]
  code, out = run_cli("train", f"--gin_file={tmp_path}", f"--model_dir={tmp_path / 'run'}")
  assert code == 1 and f"error: --gin_file={tmp_path} is a directory" in out, out[-2000:]
  latin = tmp_path / "latin.jsonl"
  latin.write_bytes(b'{"inputs": "ok", "targets": "x"}\n\xff\xfe\n')
  code, out = run_cli("score", "--checkpoint=x", f"--inputs={latin}", f"--output={tmp_path / 'o.jsonl'}")
  assert code == 1 and f"error: {latin}:2: not UTF-8 text (byte 0: invalid start byte)" in out, out[-2000:]
  assert not (tmp_path / "run").exists() and not (tmp_path / "o.jsonl").exists()


def test_step_choices_that_do_not_exist_are_named(tmp_path):
  model_dir = tmp_path / "run"
  code, out = run_cli("train", *tiny_flags(2, 1, 1), f"--model_dir={model_dir}")
  assert code == 0, out[-3000:]
  code, out = run_cli("eval", *tiny_flags(2, 1, 1), f"--model_dir={model_dir}", "--step=999")
  assert code == 1 and f"error: --step=999: {model_dir} has no checkpoint 999; its steps are [1, 2]" in out, out
  code, out = run_cli("eval", *tiny_flags(2, 1, 1), f"--model_dir={model_dir}", "--step=best")
  assert code == 1 and "error: --step=best needs TrainConfig.best_metric" in out, out[-2000:]


def test_a_resume_on_another_task_or_batch_size_is_refused(tmp_path):
  model_dir = tmp_path / "run"
  code, out = run_cli("train", *tiny_flags(2, 1, 2), f"--model_dir={model_dir}")
  assert code == 0, out[-3000:]
  meta = json.loads((model_dir / "checkpoints" / "2" / "meta" / "metadata").read_text())
  assert (meta["task"], meta["batch_size"]) == ("super_glue_rte_v102", 4)
  code, out = run_cli("train", *tiny_flags(4, 1, 2), "--gin.DataConfig.batch_size=2", f"--model_dir={model_dir}")
  assert code == 1 and "was trained with batch_size 4; this run binds 2: resume with the same task" in out, out
  code, out = run_cli("train", *tiny_flags(4, 1, 2), "--gin.DataConfig.mixture_or_task_name='super_glue_cb_v102'",
                      f"--model_dir={model_dir}")
  assert code == 1 and "was trained with task 'super_glue_rte_v102'; this run binds 'super_glue_cb_v102'" in out
  assert _steps(model_dir) == [2]


def test_score_refuses_an_unbounded_row_and_infer_says_what_it_truncated(tmp_path):
  model_dir = tmp_path / "run"
  code, out = run_cli("train", *tiny_flags(1, 1, 1), f"--model_dir={model_dir}")
  assert code == 0, out[-3000:]
  rows = tmp_path / "rows.jsonl"
  rows.write_text(json.dumps({"inputs": "word " * 5000, "targets": "entailment"}) + "\n")
  code, out = run_cli("score", *tiny_flags(1, 1, 1), f"--model_dir={model_dir}", f"--inputs={rows}",
                      f"--output={tmp_path / 'scores.jsonl'}")
  assert code == 1 and "error: row 1: inputs has 5000 tokens, more than 4096: pass --max_input_length=N" in out, out
  assert not (tmp_path / "scores.jsonl").exists()
  code, out = run_cli("infer", *tiny_flags(1, 1, 1), f"--model_dir={model_dir}", f"--inputs={rows}",
                      f"--output={tmp_path / 'preds.jsonl'}")
  assert code == 0 and "infer: 1 of 1 rows are longer than EvalConfig inputs length" in out, out[-3000:]
