"""Tests for xprompt_jax.training.aot and `xprompt-jax compile`: topology names, mesh errors, a real AOT compile."""
import json
import subprocess
import sys

import pytest

from xprompt_jax.methods import get_method
from xprompt_jax.models.config import PRESETS
from xprompt_jax.training import aot
from xprompt_jax.training import aot_report
from xprompt_jax.training import optim
from xprompt_jax.training import partitioning

needs_libtpu = pytest.mark.skipif(not aot.libtpu_available(),
                                  reason="libtpu is not installed (pip install 'xprompt_jax[aot]')")

TINY = PRESETS["t5_1_1_tiny"].replace(vocab_size=512, dtype="bfloat16", scan_layers=True)


@pytest.mark.parametrize("name, topology_name, devices, hbm_gib, config", [
    ("v4-8", "v4:2x2x1", 4, 32, "megacore"),
    ("v4-128", "v4:4x4x4", 64, 32, "megacore"),
    ("v5e-16", "v5e:4x4", 16, 16, "default"),
    ("v5litepod-256", "v5e:16x16", 256, 16, "default"),
    ("v5p-128", "v5p:4x4x4", 64, 95, "megacore"),
    ("v5e:4x8", "v5e:4x8", 32, 16, "default"),
    ("v5litepod:2x4", "v5e:2x4", 8, 16, "default"),
])
def test_parse_topology(name, topology_name, devices, hbm_gib, config):
  topo = aot.parse_topology(name)
  assert topo.generation in ("v4", "v5e", "v5p")
  assert (topo.topology_name, topo.num_devices, topo.hbm_bytes, topo.chip_config_name) == (
      topology_name, devices, hbm_gib * aot.GiB, config)


def test_wrap_and_hosts():
  assert aot.parse_topology("v4-128").wrap == (True, True, True)
  assert aot.parse_topology("v4-8").wrap == (False, False, False)
  assert aot.parse_topology("v5e-256").wrap == (True, True, False)
  assert aot.parse_topology("v5e-8").chips_per_host_bounds == (2, 4, 1)
  assert aot.parse_topology("v5e-16").chips_per_host_bounds == (2, 2, 1)


@pytest.mark.parametrize("name, message", [
    ("v4-7", "multiple of 2"),
    ("v4-6", "no standard v4 slice with 3 chips"),
    ("v3-8", "unknown TPU topology"),
    ("v4:2x2", "3 positive dimensions"),
    ("", "slice name"),
])
def test_parse_topology_errors(name, message):
  with pytest.raises(ValueError, match=message):
    aot.parse_topology(name)


def test_count_collectives():
  hlo = ("  %all-reduce.1 = f32[] all-reduce(f32[] %x), to_apply=%add\n"
         "  %ags = (f32[4], f32[8]) all-gather-start(f32[4] %y)\n"
         "  %agd = f32[8] all-gather-done((f32[4], f32[8]) %ags)\n"
         "  %cp = f32[4] collective-permute(f32[4] %z), source_target_pairs={{0,1}}\n")
  assert aot.count_collectives(hlo) == {"all-reduce": 1, "all-gather": 1, "reduce-scatter": 0, "all-to-all": 0,
                                        "collective-permute": 1}


@needs_libtpu
def test_topology_devices():
  devices = aot.topology_devices("v4-8")
  assert len(devices) == 4 and {d.device_kind for d in devices} == {"TPU v4"}


@needs_libtpu
def test_mesh_not_dividing_devices_errors():
  with pytest.raises(ValueError, match=r"v4-8 \(4 devices\).*does not divide the 4 available devices"):
    aot.compile_train_step(TINY, get_method("prompt", length=4), None, partitioning.MeshConfig(model=3), 8, 16, 4,
                           "v4-8")


@needs_libtpu
def test_batch_not_dividing_data_axis_errors():
  with pytest.raises(ValueError, match="batch size 6 is not divisible by the mesh's 'data' axis of size 4"):
    aot.compile_train_step(TINY, get_method("prompt", length=4), None, partitioning.MeshConfig(), 6, 16, 4, "v4-8")


@needs_libtpu
def test_compile_train_step_report():
  method = get_method("prompt", length=4, prompt_init="class_labels", class_labels=("yes", "no"))
  report = aot.compile_train_step(TINY, method, optim.OptimizerConfig(),
                                  partitioning.MeshConfig(model=2, rules="xxl"), 8, 16, 4, "v4-8")
  assert report["kind"] == "aot_compile_estimate"
  assert (report["num_devices"], report["device_kind"], report["mesh"]) == (4, "TPU v4", {"data": 2, "model": 2})
  assert report["trainable_params"] == 4 * TINY.emb_dim and report["encoder_length"] == 20
  for name in ("train", "eval"):
    r = report[name]
    mem = r["memory"]
    assert mem["arguments"] > 0 and mem["generated_code"] > 0
    assert mem["total"] == (mem["arguments"] + mem["outputs"] - mem["aliased"] + mem["temporaries"]
                            + mem["generated_code"])
    assert r["fits"] and 0 < r["hbm_fraction"] < 0.01
    assert r["flops_per_device"] > 0
    assert set(r["collectives"]) == set(aot.COLLECTIVES)
    # Batch on 'data', vocab/heads/mlp on 'model': the loss needs at least one all-reduce.
    assert r["collectives"]["all-reduce"] > 0
  # The train state is donated: its buffers alias the outputs.
  assert report["train"]["memory"]["aliased"] > 0
  json.dumps(report)  # JSON-serialisable for --output.
  table = aot_report.format_report(report)
  assert "AOT compile estimate" in table and "train" in table and "eval" in table


@needs_libtpu
def test_multislice_compile_splits_data_over_two_slices():
  """MeshConfig.dcn_data=2 compiles for two v5e-4 slices: 8 devices, each slice its own half of `data`, and the
  gradient all-reduce spans the slices (the hybrid mesh of a `--node_count=2` launch)."""
  method = get_method("prompt", length=4, prompt_init="class_labels", class_labels=("yes", "no"))
  report = aot.compile_train_step(TINY, method, optim.OptimizerConfig(),
                                  partitioning.MeshConfig(model=2, dcn_data=2), 8, 16, 4, "v5e-4", include_eval=False)
  assert (report["num_devices"], report["num_slices"], report["mesh"]) == (8, 2, {"data": 4, "model": 2})
  assert report["train"]["fits"] and report["train"]["collectives"]["all-reduce"] > 0
  assert aot_report.format_report(report).startswith(f"{TINY.name} prompt on 2 x v5e-4 (8 x ")
  with pytest.raises(ValueError, match=r"topology 2 x v5e-4 \(8 devices\): .*`data` must be a multiple of dcn_data"):
    aot.compile_train_step(TINY, method, None, partitioning.MeshConfig(model=8, dcn_data=2), 8, 16, 4, "v5e-4")


@pytest.mark.parametrize("message, total", [
    ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries (5.36T) "
     "exceeds available HBM (15.75G).", int(5.36 * (1 << 40))),
    ("RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory space hbm. Used 40.5G of "
     "31.25G hbm. Exceeded hbm capacity by 9.25G.", int(40.5 * (1 << 30))),
    ("RESOURCE_EXHAUSTED: out of something else", None),
])
def test_out_of_memory_report(message, total):
  r = aot._out_of_memory(message, 16 * aot.GiB, 1.0, 2.0)
  assert not r["fits"] and r["memory"]["total"] == total and r["error"].startswith("RESOURCE_EXHAUSTED")


def test_matmul_flops_scales():
  cfg = PRESETS["t5_1_1_base"]
  fwd = aot.matmul_flops(cfg, 32, 612, 8, train=False)
  assert aot.matmul_flops(cfg, 64, 612, 8, train=False) == 2 * fwd
  # Roughly 2 x params x tokens for the projections (here ~ 2 x encoder params x encoder tokens dominates).
  enc_params = cfg.num_encoder_layers * (4 * cfg.emb_dim * cfg.inner_dim + 3 * cfg.emb_dim * cfg.mlp_dim)
  assert 2 * enc_params * 32 * 612 < fwd < 1.6 * 2 * enc_params * 32 * 612
  train = aot.matmul_flops(cfg, 32, 612, 8)
  assert 2 * fwd < train < 2.2 * fwd
  assert aot.matmul_flops(cfg.replace(remat_policy="full"), 32, 612, 8) > train


def _run_cli(*args):
  proc = subprocess.run([sys.executable, "-m", "xprompt_jax.cli", "compile", *args], capture_output=True, text=True,
                        timeout=600)
  return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.slow  # Two CLI processes, each importing the task registry (TensorFlow, seqio) for gin.
def test_cli_errors():
  code, out = _run_cli("--gin_file=models/t5_1_1_tiny.gin", "--gin_file=methods/prompt.gin")
  assert code == 1 and "--topology is required" in out
  code, out = _run_cli("--gin_file=models/t5_1_1_tiny.gin", "--gin_file=methods/prompt.gin", "--topology=v9-8")
  assert code == 1 and "unknown TPU topology 'v9-8'" in out


@needs_libtpu
@pytest.mark.slow
def test_cli_compiles_lester_recipe(tmp_path):
  out_file = tmp_path / "aot.jsonl"
  code, out = _run_cli("--gin_file=models/t5_1_1_tiny.gin", "--gin_file=methods/prompt.gin",
                       "--gin_file=recipes/lester.gin", "--gin.T5Config.vocab_size=512",
                       "--gin.T5Config.scan_layers=True", "--gin.MeshConfig.model=2", "--topology=v4-8",
                       "--gin.DataConfig.inputs_length=16", "--noeval", f"--output={out_file}")
  assert code == 0, out
  assert "t5_1_1_tiny prompt on v4-8" in out and "AOT compile estimate" in out
  report = json.loads(out_file.read_text())
  # Lester recipe: batch 32, 8 targets, L = 100 (class-label init needs no vocabulary for shapes), bf16.
  assert (report["batch_size"], report["targets_length"], report["encoder_length"]) == (32, 8, 116)
  assert report["dtype"] == "bfloat16" and report["mesh"] == {"data": 2, "model": 2} and "eval" not in report
  assert report["train"]["fits"]


@needs_libtpu
@pytest.mark.slow
@pytest.mark.parametrize("name, kwargs, trainable", [
    ("prefix", dict(length=2, hidden_dim=8), None),
    ("mpt", dict(length=4, num_tasks=3, rank=1), 4 * TINY.emb_dim + 3 * 4 + 3 * TINY.emb_dim),
    ("xprompt", dict(length=4, pieces=4), 4 * TINY.emb_dim),
])
def test_compile_every_method(name, kwargs, trainable):
  method = get_method(name, **kwargs)
  report = aot.compile_train_step(TINY, method, None, partitioning.MeshConfig(model=2), 8, 16, 4, "v5e-4",
                                  include_eval=False)
  assert report["method"] == name and report["train"]["fits"] and report["device_kind"] == "TPU v5 lite"
  if trainable is not None:
    assert report["trainable_params"] == trainable
  assert report["encoder_length"] == method.prompt_length + 16
