"""`xprompt-jax convert`: end to end through the console script, plus the overwrite and no-half-write rules."""
import os
import subprocess
import sys

from absl import flags
from absl.testing import flagsaver
import jax
import numpy as np
import pytest

from xprompt_jax import checkpoints
from xprompt_jax.checkpoints import tree
from xprompt_jax.models.config import PRESETS, T5Config

SCRIPT = os.path.join(os.path.dirname(sys.executable), "xprompt-jax")
TINY_RANDOM_NAME = "t5x_tiny_random"


def _run(*args):
  if not os.path.exists(SCRIPT):
    pytest.skip(f"console script {SCRIPT} is not installed (pip install -e .)")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([SCRIPT, "convert", *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def convert():
  """The command module, imported only once tests run: command modules define absl flags on import, and other
  commands' test files (collected first) may define the same names (--checkpoint, --output) unguarded."""
  from xprompt_jax.commands import convert as module
  return module


def _random_params(config, seed=0):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), tree.expected_params(config))


def test_console_script_t5x_to_hf_to_orbax(shared, tmp_path):
  source = str(shared / "checkpoints" / "t5x_t5_1_1_tiny_random" / "checkpoint_3")
  hf_dir, orbax_dir = str(tmp_path / "hf"), str(tmp_path / "orbax")
  result = _run(f"--checkpoint={source}", "--gin_file=models/t5x_tiny_random.gin", "--to=hf", f"--output={hf_dir}")
  assert result.returncode == 0, result.stderr
  assert f"wrote hf checkpoint {hf_dir}" in result.stdout
  assert sorted(os.listdir(hf_dir)) == ["config.json", "model.safetensors"]
  assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []  # Staging folder removed.

  result = _run(f"--checkpoint={hf_dir}", "--to=orbax", f"--output={orbax_dir}")
  assert result.returncode == 0, result.stderr
  config = T5Config(emb_dim=4, num_heads=2, head_dim=2, mlp_dim=8, num_encoder_layers=2, num_decoder_layers=2,
                    relpos_num_buckets=4, relpos_max_distance=8, name=TINY_RANDOM_NAME)
  original, _ = checkpoints.load_params(source, config)
  converted, converted_config = checkpoints.load_params(orbax_dir)
  assert converted_config == config
  for key, value in tree.flatten(original).items():
    assert np.array_equal(tree.flatten(converted)[key], value), key

  result = _run(f"--checkpoint={hf_dir}", "--to=orbax", f"--output={orbax_dir}")
  assert result.returncode == 1
  assert f"error: --output {orbax_dir} exists and is not empty; pass --overwrite" in result.stderr


def test_console_script_reports_bad_input(tmp_path):
  (tmp_path / "readme.txt").write_text("not a checkpoint")
  result = _run(f"--checkpoint={tmp_path}", "--to=hf", f"--output={tmp_path / 'out'}")
  assert result.returncode == 1
  assert "is not a checkpoint in any known format" in result.stderr and "config.json" in result.stderr
  assert not os.path.exists(tmp_path / "out")


@pytest.fixture
def parsed_flags(convert):
  flags.FLAGS.mark_as_parsed()
  with flagsaver.flagsaver():
    yield flags.FLAGS


def test_main_with_preset_and_flag_errors(convert, parsed_flags, shared, tmp_path):
  legacy = str(shared / "checkpoints" / "t5x_legacy_msgpack_tiny.checkpoint_0")
  out = str(tmp_path / "t5x")
  parsed_flags.checkpoint, parsed_flags.output, parsed_flags.to = legacy, out, "t5x"
  parsed_flags.model = "t5_1_1_tiny"
  assert convert.main(["convert"]) == 0
  params, _ = checkpoints.load_params(out, PRESETS["t5_1_1_tiny"])
  assert tree.flatten(params)["decoder/layers_1/self_attention/query/kernel"].shape == (8, 12)
  parsed_flags.model = "t5_1_1_nope"
  parsed_flags.overwrite = True
  with pytest.raises(ValueError, match="--model='t5_1_1_nope' is not a preset"):
    convert.main(["convert"])
  parsed_flags.model = "t5_1_1_small"  # Wrong architecture for the tiny checkpoint: shapes are named.
  with pytest.raises(checkpoints.CheckpointError, match=r"shape mismatch for token_embedder/embedding: checkpoint "
                     r"has \(32128, 8\), model expects \(32128, 512\)"):
    convert.main(["convert"])
  parsed_flags.checkpoint = None
  with pytest.raises(ValueError, match="missing required flag\(s\): --checkpoint"):
    convert.main(["convert"])
  with pytest.raises(ValueError, match="unexpected positional arguments"):
    convert.main(["convert", "stray"])


def test_overwrite_replaces_and_failures_leave_output_untouched(convert, tmp_path):
  config = T5Config(vocab_size=16, emb_dim=4, num_heads=2, head_dim=2, mlp_dim=4, num_encoder_layers=1,
                    num_decoder_layers=1)
  source = str(tmp_path / "src")
  checkpoints.save_params(_random_params(config), source, "orbax", config)
  out = tmp_path / "out"
  out.mkdir()
  (out / "keep.txt").write_text("old")
  with pytest.raises(FileExistsError, match="exists and is not empty"):
    convert.convert(source, str(out), "hf")
  with pytest.raises(checkpoints.CheckpointError):  # Source does not fit the config: nothing is written.
    convert.convert(source, str(out), "hf", config.replace(mlp_dim=8), overwrite=True)
  assert os.listdir(out) == ["keep.txt"]
  convert.convert(source, str(out), "hf", overwrite=True)
  assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]
  assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []
  empty = tmp_path / "empty"
  empty.mkdir()
  convert.convert(source, str(empty), "t5x", config)
  assert checkpoints.detect_format(str(empty)) == "t5x"
  with pytest.raises(ValueError, match="--to='t5x_legacy'"):
    convert.convert(source, str(tmp_path / "x"), "t5x_legacy")
