"""Tests for xprompt_jax.training.checkpointing: round trips, retention, resume, sharded restores and the guards
(frozen-model fingerprint, NaN, lock, crash atomicity, clear errors)."""
import os
import pathlib
import random
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import xla_env

from xprompt_jax.training import checkpointing as ckpt_lib
from xprompt_jax.training.checkpointing import TrainCheckpointer


def _state(step=3, seed=0, typed_key=False, prompt_shape=(10, 8)):
  """A trainer state with a non-trivial Adafactor state (two updates) and XPrompt-like aux masks."""
  rng = np.random.default_rng(seed)
  params = {"prompt": jnp.asarray(rng.normal(size=prompt_shape), jnp.float32),
            "mlp": {"kernel": jnp.asarray(rng.normal(size=(4, 3)), jnp.bfloat16)}}
  opt = optax.adafactor(0.3, min_dim_size_to_factor=4)
  opt_state = opt.init(params)
  for _ in range(2):
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
    updates, opt_state = opt.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
  key = jax.random.key(seed) if typed_key else jax.random.PRNGKey(seed)
  return {"step": jnp.int32(step), "trainable": params, "opt_state": opt_state,
          "aux": {"token_mask": jnp.asarray(rng.integers(0, 2, size=prompt_shape[0]), jnp.float32)},
          "rng": key}


def _assert_same(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    assert x.dtype == y.dtype, path
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))


def _abstract(state):
  return jax.eval_shape(lambda: state)


@pytest.mark.parametrize("async_save", [False, True])
@pytest.mark.parametrize("typed_key", [False, True])
def test_round_trip_is_bit_exact(tmp_path, async_save, typed_key):
  state = _state(typed_key=typed_key)
  assert isinstance(state["opt_state"][0], optax.FactoredState)
  with TrainCheckpointer(tmp_path, async_save=async_save) as ckpt:
    assert ckpt.save(3, state, data_position=30, extra_meta={"method": "prompt", "gin_config": "a = 1"})
    ckpt.wait()
    restored, meta = ckpt.restore(abstract_state=_abstract(state))
  _assert_same(state, restored)
  assert meta["step"] == 3 and meta["data_position"] == 30
  assert meta["method"] == "prompt" and meta["gin_config"] == "a = 1"
  assert meta["frozen"] == {"path": None, "fingerprint": None}


def test_restore_without_abstract_state_gives_plain_trees(tmp_path):
  state = _state()
  with TrainCheckpointer(tmp_path, async_save=False) as ckpt:
    ckpt.save(3, state, data_position=0)
    restored, _ = ckpt.restore()
  np.testing.assert_array_equal(restored["trainable"]["prompt"], state["trainable"]["prompt"])
  np.testing.assert_array_equal(restored["opt_state"][0]["v_row"]["prompt"], state["opt_state"][0].v_row["prompt"])


def test_keep_n_latest_and_keep_period(tmp_path):
  with TrainCheckpointer(tmp_path, keep=2, keep_period=4, async_save=False) as ckpt:
    for step in range(1, 8):
      ckpt.save(step, _state(step), data_position=step)
    assert ckpt.all_steps() == [4, 6, 7]
    assert ckpt.best_step() is None
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["4", "6", "7"]
  with TrainCheckpointer(tmp_path / "all", keep=None, async_save=False) as ckpt:
    for step in range(1, 5):
      ckpt.save(step, _state(step), data_position=step)
    assert ckpt.all_steps() == [1, 2, 3, 4]
  with pytest.raises(ValueError, match="keep must be >= 1"):
    TrainCheckpointer(tmp_path / "none", keep=0)


@pytest.mark.parametrize("mode,expected_best,expected_kept", [("max", 2, [2, 4, 5]), ("min", 3, [1, 3, 5])])
def test_best_metric_keeps_the_best_and_the_latest(tmp_path, mode, expected_best, expected_kept):
  losses = {1: 0.5, 2: 0.9, 3: 0.1, 4: 0.8, 5: 0.6}
  with TrainCheckpointer(tmp_path, keep=2, best_metric="score", best_mode=mode, async_save=False) as ckpt:
    for step, value in losses.items():
      ckpt.save(step, _state(step), data_position=step, metrics={"score": np.float32(value), "other": 1})
    assert ckpt.best_step() == expected_best
    assert ckpt.all_steps() == expected_kept
    assert ckpt.latest_step() == 5
  with TrainCheckpointer(tmp_path, keep=2, best_metric="score", best_mode=mode) as reopened:
    assert reopened.best_step() == expected_best
    assert reopened.read_meta(expected_best)["metrics"]["score"] == float(np.float32(losses[expected_best]))  # Exact.


def test_checkpoints_saved_under_a_metrics_old_name_are_ranked_by_it(tmp_path):
  """Runs saved before the metrics took T5's names (CB's macro_f1 is now mean_3class_f1): `best` still finds the
  best checkpoint, rather than every checkpoint tying and the latest winning."""
  old, new = "super_glue_cb_v102/macro_f1", "super_glue_cb_v102/mean_3class_f1"
  with TrainCheckpointer(tmp_path, keep=3, best_metric=old, async_save=False) as ckpt:
    for step, value in {10: 90.0, 20: 50.0, 30: 40.0}.items():
      ckpt.save(step, _state(step), data_position=step, metrics={old: value})
  with TrainCheckpointer(tmp_path, keep=3, best_metric=new, read_only=True) as reopened:
    assert reopened.best_step() == 10


def test_best_metric_must_be_in_the_metrics(tmp_path):
  with TrainCheckpointer(tmp_path, best_metric="accuracy", async_save=False) as ckpt:
    with pytest.raises(KeyError, match=r"lack best_metric 'accuracy'.*\['loss'\]"):
      ckpt.save(1, _state(1), data_position=1, metrics={"loss": 1.0})
    with pytest.raises(TypeError, match="metric 'accuracy' is not a number"):
      ckpt.save(1, _state(1), data_position=1, metrics={"accuracy": "high"})
    assert ckpt.save(1, _state(1), data_position=1)  # no eval this step: saved without metrics
    assert ckpt.best_step() is None


def test_resume_picks_the_latest_with_its_data_position(tmp_path):
  with TrainCheckpointer(tmp_path, keep=5) as ckpt:
    for step in (10, 20, 30):
      ckpt.save(step, _state(step, seed=step), data_position=step * 4)
  with TrainCheckpointer(tmp_path, keep=5) as ckpt:
    assert ckpt.latest_step() == 30 and ckpt.all_steps() == [10, 20, 30]
    state, meta = ckpt.restore(abstract_state=_abstract(_state()))
    assert meta["data_position"] == 120 and int(state["step"]) == 30
    _assert_same(_state(30, seed=30), state)
    older, meta = ckpt.restore(10, abstract_state=_abstract(_state()))
    assert meta["data_position"] == 40
    _assert_same(_state(10, seed=10), older)


def test_async_save_then_wait(tmp_path):
  state = _state(1, prompt_shape=(512, 512))
  with TrainCheckpointer(tmp_path, async_save=True) as ckpt:
    assert ckpt.save(1, state, data_position=1)
    ckpt.wait()
    assert ckpt.all_steps() == [1]
    assert (tmp_path / "checkpoints" / "1" / "commit_success.txt").exists()
    assert ckpt.save(2, _state(2, prompt_shape=(512, 512)), data_position=2)
  with TrainCheckpointer(tmp_path) as ckpt:  # close() finished the pending save
    assert ckpt.all_steps() == [1, 2]
    _assert_same(state, ckpt.restore(1, abstract_state=_abstract(state))[0])


def test_async_save_has_copied_the_state_when_it_returns(tmp_path):
  """The trainer may donate (free) the state's buffers right after `save` returns, before the write ends."""
  state = _state(1, prompt_shape=(512, 512))
  expected = jax.tree.map(np.asarray, jax.tree.map(lambda x: jax.random.key_data(x) if jnp.issubdtype(
      x.dtype, jax.dtypes.prng_key) else x, state))
  with TrainCheckpointer(tmp_path, async_save=True) as ckpt:
    assert ckpt.save(1, state, data_position=1)
    for leaf in jax.tree.leaves(state):
      leaf.delete()
    ckpt.wait()
    restored, _ = ckpt.restore(abstract_state=_abstract(_state(1, prompt_shape=(512, 512))))
  _assert_same(expected, jax.tree.map(np.asarray, restored))


def test_read_only_checkpointer_restores_while_a_run_holds_the_lock(tmp_path):
  with pytest.raises(FileNotFoundError, match="read-only"):
    TrainCheckpointer(tmp_path / "nothing", read_only=True)
  with TrainCheckpointer(tmp_path, keep=1, best_metric="acc", async_save=False) as run:
    run.save(1, _state(1), data_position=1, metrics={"acc": 0.5})
    run.save(2, _state(2), data_position=2, metrics={"acc": 0.2})
    with TrainCheckpointer(tmp_path, read_only=True, best_metric="acc") as reader:
      assert reader.all_steps() == [1, 2] and reader.best_step() == 1
      _assert_same(_state(1), reader.restore(1, abstract_state=_abstract(_state()))[0])
      with pytest.raises(ckpt_lib.CheckpointingError, match="read-only"):
        reader.save(3, _state(3), data_position=3)
    assert run.all_steps() == [1, 2]


def test_restore_into_named_shardings_over_8_devices(tmp_path):
  devices = jax.devices()
  assert len(devices) == 8, "tests/conftest.py should give 8 simulated CPU devices"
  mesh = jax.sharding.Mesh(np.array(devices).reshape(4, 2), ("data", "model"))
  state = _state(prompt_shape=(16, 8))
  named = lambda *spec: jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec))
  shardings = jax.tree.map(lambda _: named(), state)
  shardings["trainable"]["prompt"] = named("data", "model")
  with TrainCheckpointer(tmp_path, async_save=False) as ckpt:
    ckpt.save(3, state, data_position=0)
    restored, _ = ckpt.restore(abstract_state=_abstract(state), shardings=shardings)
    prompt = restored["trainable"]["prompt"]
    assert prompt.sharding == named("data", "model")
    assert {tuple(s.data.shape) for s in prompt.addressable_shards} == {(4, 4)}
    assert restored["opt_state"][0].v_row["prompt"].sharding == named()
    _assert_same(state, restored)
    # one Sharding for every leaf, and shardings carried by the abstract leaves themselves
    replicated, _ = ckpt.restore(abstract_state=_abstract(state), shardings=named())
    assert replicated["trainable"]["prompt"].sharding == named()
    carried = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                           _abstract(state), shardings)
    restored, _ = ckpt.restore(abstract_state=carried)
    assert restored["trainable"]["prompt"].sharding == named("data", "model")


def _frozen_dir(root: pathlib.Path, name: str, content: bytes) -> str:
  folder = root / name
  folder.mkdir()
  (folder / "checkpoint").write_bytes(content)
  return str(folder)


def test_frozen_fingerprint_mismatch_is_refused_naming_both(tmp_path):
  base = _frozen_dir(tmp_path, "base_a", b"weights of model A")
  other = _frozen_dir(tmp_path, "base_b", b"weights of model B")
  copy = _frozen_dir(tmp_path, "copy_of_a", b"weights of model A")
  model_dir = tmp_path / "run"
  with TrainCheckpointer(model_dir, frozen_path=base, async_save=False) as ckpt:
    fp_base = ckpt.frozen_fingerprint
    assert fp_base == ckpt_lib.fingerprint_checkpoint(base)
    ckpt.save(1, _state(1), data_position=1)
    assert ckpt.read_meta()["frozen"] == {"path": base, "fingerprint": fp_base}
  fp_other = ckpt_lib.fingerprint_checkpoint(other)
  with TrainCheckpointer(model_dir, frozen_path=other) as ckpt:
    with pytest.raises(ckpt_lib.FrozenModelMismatchError) as err:
      ckpt.restore(abstract_state=_abstract(_state()))
    for part in (base, other, fp_base, fp_other):
      assert part in str(err.value)
    with pytest.raises(ckpt_lib.FrozenModelMismatchError):
      ckpt.check_frozen()
    state, _ = ckpt.restore(abstract_state=_abstract(_state()), allow_frozen_mismatch=True)
    _assert_same(_state(1), state)
    assert ckpt.check_frozen(base, fp_base)
  with TrainCheckpointer(model_dir, frozen_path=copy) as ckpt:  # same bytes elsewhere: accepted
    ckpt.restore(abstract_state=_abstract(_state()))
    assert ckpt.check_frozen()


def test_check_frozen_without_fingerprints():
  assert not ckpt_lib.check_frozen(None, None, None)
  assert not ckpt_lib.check_frozen({"path": "a", "fingerprint": None}, "b", "sha256:1")
  assert ckpt_lib.check_frozen({"path": "a", "fingerprint": "sha256:1"}, "b", "sha256:1")
  with pytest.raises(ckpt_lib.FrozenModelMismatchError, match="at a .*sha256:1.* is b .*sha256:2"):
    ckpt_lib.check_frozen({"path": "a", "fingerprint": "sha256:1"}, "b", "sha256:2")


def test_nonfinite_state_is_refused_with_leaf_paths(tmp_path):
  state = _state()
  state["trainable"]["prompt"] = state["trainable"]["prompt"].at[2, 3].set(jnp.nan)
  v = state["opt_state"][0].v
  state["opt_state"] = (state["opt_state"][0]._replace(v={**v, "mlp": {"kernel": v["mlp"]["kernel"] + jnp.inf}}),
                        *state["opt_state"][1:])
  with TrainCheckpointer(tmp_path, async_save=True) as ckpt:
    with pytest.raises(ckpt_lib.NonFiniteStateError) as err:
      ckpt.save(3, state, data_position=0)
    assert "trainable.prompt" in str(err.value) and "opt_state.0.v.mlp.kernel" in str(err.value)
    assert "trainable.mlp.kernel" not in str(err.value)
    ckpt.wait()
    assert ckpt.all_steps() == []
  assert os.listdir(tmp_path / "checkpoints") == []


def test_nonfinite_leaves_handles_sharded_and_integer_leaves():
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  sharded = jax.device_put(jnp.arange(16.0).at[13].set(-jnp.inf),
                           jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
  tree = {"a": sharded, "b": np.ones(3, np.float16), "c": np.int32(4), "d": jax.random.key(0)}
  assert ckpt_lib.nonfinite_leaves(tree) == ["a"]
  assert ckpt_lib.nonfinite_leaves({"c": 1, "e": {}}) == []


def test_lock_refuses_a_second_checkpointer_naming_the_holder(tmp_path):
  first = TrainCheckpointer(tmp_path)
  try:
    with pytest.raises(ckpt_lib.CheckpointLockedError, match=f"pid {os.getpid()} on host .*started"):
      TrainCheckpointer(tmp_path)
  finally:
    first.close()
  first.close()  # idempotent
  with TrainCheckpointer(tmp_path) as again:  # released on close
    assert again.all_steps() == []
  with pytest.raises(ckpt_lib.CheckpointingError, match="closed"):
    again.latest_step()


def test_not_writable_model_dir_is_named(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a folder")
  with pytest.raises(ckpt_lib.ModelDirError, match=str(blocker / "run" / "checkpoints")):
    TrainCheckpointer(blocker / "run")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_read_only_model_dir_is_named(tmp_path):
  model_dir = tmp_path / "ro"
  model_dir.mkdir()
  model_dir.chmod(0o555)
  try:
    with pytest.raises(ckpt_lib.ModelDirError, match=str(model_dir)):
      TrainCheckpointer(model_dir)
  finally:
    model_dir.chmod(0o755)


def test_clear_errors_for_missing_steps_and_mismatched_trees(tmp_path):
  with TrainCheckpointer(tmp_path, async_save=False) as ckpt:
    with pytest.raises(FileNotFoundError, match="no finished checkpoint"):
      ckpt.restore()
    ckpt.save(3, _state(3), data_position=0)
    ckpt.save(5, _state(5), data_position=0)
    with pytest.raises(FileNotFoundError, match=r"step 4 .*available steps: \[3, 5\]"):
      ckpt.restore(4)
    wrong = _abstract(_state(prompt_shape=(12, 8)))
    with pytest.raises(ckpt_lib.StateMismatchError, match=r"trainable.prompt: saved shape \(10, 8\), abstract state "
                                                          r"shape \(12, 8\)"):
      ckpt.restore(abstract_state=wrong)
    extra = _abstract(_state())
    extra["aux"] = {"gate": jax.ShapeDtypeStruct((3,), jnp.float32)}
    with pytest.raises(ckpt_lib.StateMismatchError, match=r"(?s)lacks: \['aux.gate'\].*abstract state lacks: "
                                                          r"\['aux.token_mask'\]"):
      ckpt.restore(abstract_state=extra)
    with pytest.raises(ckpt_lib.StateMismatchError, match="tree structure"):
      ckpt.restore(abstract_state=_abstract(_state()), shardings={"step": None})
    with pytest.raises(ValueError, match="needs abstract_state"):
      ckpt.restore(shardings=jax.sharding.SingleDeviceSharding(jax.devices()[0]))


def test_save_guards(tmp_path):
  with TrainCheckpointer(tmp_path, async_save=False) as ckpt:
    with_frozen = {**_state(1), "params": {"encoder": jnp.zeros(3)}}
    with pytest.raises(ValueError, match=r"\['params'\].*frozen model is never saved"):
      ckpt.save(1, with_frozen, data_position=0)
    with pytest.raises(ValueError, match=r"state\['step'\] is 1"):
      ckpt.save(2, _state(1), data_position=0)
    with pytest.raises(ValueError, match="reserved keys"):
      ckpt.save(1, _state(1), data_position=0, extra_meta={"step": 4})
    with pytest.raises(TypeError, match="JSON"):
      ckpt.save(1, _state(1), data_position=0, extra_meta={"method": object()})
    assert ckpt.save(2, _state(2, seed=1), data_position=8)
    assert not ckpt.save(2, _state(2, seed=2), data_position=9)  # already saved: unchanged
    _assert_same(_state(2, seed=1), ckpt.restore(abstract_state=_abstract(_state()))[0])
    assert ckpt.save(2, _state(2, seed=2), data_position=9, force=True)  # replaced
    state, meta = ckpt.restore(abstract_state=_abstract(_state()))
    _assert_same(_state(2, seed=2), state)
    assert meta["data_position"] == 9
    with pytest.raises(ValueError, match=r"later steps \[2\]"):
      ckpt.save(1, _state(1), data_position=0)


def _dir_bytes(folder: pathlib.Path) -> int:
  return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_checkpoint_holds_only_the_trainable_state(tmp_path):
  """Bytes on disk <= 1.2 x (trainable + optimizer state) + 64 KiB of orbax/json metadata."""
  params = {"prompt": jnp.asarray(np.random.default_rng(0).normal(size=(100, 64)), jnp.float32)}
  opt = optax.adafactor(0.3)
  grads = jax.tree.map(lambda p: p * 0.5 + 0.1, params)
  _, opt_state = opt.update(grads, opt.init(params), params)  # non-zero second moments (do not compress)
  state = {"step": jnp.int32(7), "trainable": params, "opt_state": opt_state, "aux": {},
           "rng": jax.random.PRNGKey(0)}
  payload = sum(x.nbytes for x in jax.tree.leaves((params, opt_state)))
  with TrainCheckpointer(tmp_path, async_save=False) as ckpt:
    ckpt.save(7, state, data_position=70, extra_meta={"method": "prompt", "gin_config": "x" * 2000})
  on_disk = _dir_bytes(tmp_path / "checkpoints" / "7")
  assert payload > 50_000
  assert on_disk <= 1.2 * payload + 64 * 1024, (on_disk, payload)


_CHILD = textwrap.dedent("""
    import os, sys
    import numpy as np
    from xprompt_jax.training.checkpointing import TrainCheckpointer
    model_dir, async_save = sys.argv[1], sys.argv[2] == "1"
    ckpt = TrainCheckpointer(model_dir, keep=2, async_save=async_save)
    print("ready", os.getpid(), flush=True)
    step = ckpt.latest_step() or 0
    while True:
      step += 1
      state = {"step": np.int32(step), "trainable": {"prompt": np.full((1024, 1024), step, np.float32)},
               "rng": np.array([step, 0], np.uint32)}
      print("saving", step, flush=True)
      ckpt.save(step, state, data_position=10 * step)
      ckpt.wait()
      print("saved", step, flush=True)
""")


def _crash_once(model_dir: pathlib.Path, script: pathlib.Path, async_save: bool, delay: float) -> tuple[int, bool]:
  """Runs a saving child and kills it -9 `delay` s after a save's temporary folder appears.

  Returns the last step the child reported complete and whether a half-written folder was left behind.
  """
  env = {**xla_env.env(1), "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[1])}
  log = script.with_suffix(".stderr")
  with open(log, "w") as stderr:
    child = subprocess.Popen([sys.executable, str(script), str(model_dir), "1" if async_save else "0"],
                             stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
  try:
    first = child.stdout.readline().split()
    assert first and first[0] == "ready", log.read_text()[-3000:]
    pid = first[1]
    with pytest.raises(ckpt_lib.CheckpointLockedError, match=f"pid {pid} "):
      TrainCheckpointer(model_dir)  # the running child holds the lock
    saved = 0
    for line in child.stdout:
      kind, step = line.split()
      if kind == "saved":
        saved = int(step)
      elif saved >= 2:  # "saving" with two finished checkpoints behind it
        break
    pattern = f"{step}.orbax-checkpoint-tmp*"
    deadline = time.monotonic() + 20
    while not list((model_dir / "checkpoints").glob(pattern)) and time.monotonic() < deadline:
      time.sleep(0.0005)
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    half_written = bool(list((model_dir / "checkpoints").glob(pattern)))
    for line in child.stdout:
      kind, step = line.split()
      if kind == "saved":
        saved = int(step)
    return saved, half_written
  finally:
    if child.poll() is None:
      child.kill()
      child.wait()


def _check_after_crash(model_dir: pathlib.Path, saved: int, context: str) -> None:
  with TrainCheckpointer(model_dir, keep=2, async_save=False) as ckpt:  # the dead child's lock is gone
    latest = ckpt.latest_step()
    assert latest in (saved, saved + 1), (context, latest, saved)
    assert all(s <= latest for s in ckpt.all_steps())
    abstract = {"step": jax.ShapeDtypeStruct((), jnp.int32),
                "trainable": {"prompt": jax.ShapeDtypeStruct((1024, 1024), jnp.float32)},
                "rng": jax.ShapeDtypeStruct((2,), jnp.uint32)}
    state, meta = ckpt.restore(abstract_state=abstract)
    assert int(state["step"]) == latest and meta["data_position"] == 10 * latest, context
    assert np.all(np.asarray(state["trainable"]["prompt"]) == latest), context
  leftovers = [p.name for p in (model_dir / "checkpoints").iterdir() if "tmp" in p.name]
  with TrainCheckpointer(model_dir, keep=2, async_save=False):  # reopening removes half-written folders
    pass
  assert not [p.name for p in (model_dir / "checkpoints").iterdir() if "tmp" in p.name], leftovers


def _crash_repeatedly(tmp_path, modes):
  """Kills a saving child once per entry of `modes` (async_save flags): first at once when a save's temporary
  folder appears, then at random moments up to 60 ms later (a save here writes for roughly 30-150 ms)."""
  script = tmp_path / "child.py"
  script.write_text(_CHILD)
  model_dir = tmp_path / "run"
  rng = random.Random(1234)
  half_written = []
  for i, async_save in enumerate(modes):
    delay = 0.0 if i < 2 else rng.uniform(0.0, 0.06)
    saved, half = _crash_once(model_dir, script, async_save, delay)
    half_written.append(half)
    _check_after_crash(model_dir, saved, f"repetition {i}, async={async_save}, kill {delay:.3f}s into the write")
  assert any(half_written), "no kill landed inside a save: the test did not exercise a half-written checkpoint"


def test_kill_9_during_save_leaves_the_last_complete_checkpoint(tmp_path):
  _crash_repeatedly(tmp_path, [False, True])


@pytest.mark.slow
def test_kill_9_at_many_moments(tmp_path):
  _crash_repeatedly(tmp_path, [True, False, True, True, False, True])


_TWO_PROCESS_WORKER = textwrap.dedent(r'''
    import os, sys
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{sys.argv[2]}", num_processes=2, process_id=int(sys.argv[1]))
    import jax.numpy as jnp
    import numpy as np
    from xprompt_jax.training import checkpointing as ckpt_lib
    model_dir, frozen = sys.argv[3], sys.argv[4]
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    expected = np.arange(16 * 8, dtype=np.float32).reshape(16, 8)
    prompt = jax.make_array_from_callback((16, 8), rows, lambda index: expected[index])
    state = {"step": jax.device_put(jnp.int32(5), replicated), "trainable": {"prompt": prompt},
             "rng": jax.device_put(jax.random.PRNGKey(0), replicated)}
    with ckpt_lib.TrainCheckpointer(model_dir, frozen_path=frozen, async_save=True) as ckpt:
      print("LOCKED", ckpt._lock is not None, flush=True)
      print("FINGERPRINT", ckpt.frozen_fingerprint, flush=True)
      bad = {**state, "trainable": {"prompt": prompt.at[15, 0].set(jnp.nan)}}  # a row held by process 1
      try:
        ckpt.save(5, bad, data_position=50)
      except ckpt_lib.NonFiniteStateError as e:
        print("NAN", e, flush=True)
      ckpt.save(5, state, data_position=50)
    with ckpt_lib.TrainCheckpointer(model_dir, frozen_path=frozen) as ckpt:
      abstract = jax.eval_shape(lambda: state)
      shardings = jax.tree.map(lambda _: replicated, state)
      shardings["trainable"]["prompt"] = rows
      restored, meta = ckpt.restore(abstract_state=abstract, shardings=shardings)
      out = restored["trainable"]["prompt"]
      local_ok = all(np.array_equal(np.asarray(s.data), expected[s.index]) for s in out.addressable_shards)
      print("RESTORED", out.sharding == rows, len(out.addressable_shards), local_ok, int(restored["step"]),
            meta["data_position"], meta["frozen"]["fingerprint"] == ckpt.frozen_fingerprint, flush=True)
''')


def test_two_processes_save_and_restore_local_shards(tmp_path):
  """Two CPU processes (4 devices each): fingerprint broadcast, only process 0 locks, the NaN check sees the
  other process's shard, and each process restores only its own rows of the prompt."""
  port = str(xla_env.free_port())
  frozen = _frozen_dir(tmp_path, "frozen", b"base weights")
  script = tmp_path / "worker.py"
  script.write_text(_TWO_PROCESS_WORKER)
  env = {**xla_env.env(4), "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[1])}
  procs = [subprocess.Popen([sys.executable, str(script), str(i), port, str(tmp_path / "run"), frozen],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
  outputs = [p.communicate(timeout=180) for p in procs]
  fingerprint = ckpt_lib.fingerprint_checkpoint(frozen)
  for i, (p, (out, err)) in enumerate(zip(procs, outputs)):
    assert p.returncode == 0, err[-3000:]
    assert f"LOCKED {i == 0}" in out
    assert f"FINGERPRINT {fingerprint}" in out
    assert "NAN refusing to save step 5: NaN/Inf in state leaves ['trainable.prompt']" in out
    assert "RESTORED True 4 True 5 50 True" in out, out
