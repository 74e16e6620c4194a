"""Ahead-of-time (AOT) compilation of the real train and eval steps for a TPU slice, on any machine.

With `libtpu` installed (`pip install 'xprompt_jax[aot]'`), `jax.experimental.topologies.get_topology_desc`
describes a TPU slice as *compile-only* devices; the train step is lowered and compiled for a mesh over them with
every input a `jax.ShapeDtypeStruct` carrying its `NamedSharding`, so nothing is allocated (T5 XXL has 11B
parameters) and no TPU is needed. The compiled executable then tells what one device of the slice would hold
(`memory_analysis`), how many FLOPs one device runs per step (`cost_analysis`) and which collectives XLA inserted.
These are compiler estimates: nothing runs on a TPU.

Slices are named as Cloud TPU names them (`TOPOLOGIES`):

* `v4-N`, `v5p-N`: N TensorCores, 2 per chip fused as one megacore device, so N/2 devices on a 3-D torus
  (`v4-8` = `v4:2x2x1`, `v4-128` = `v4:4x4x4`, `v5p-128` = `v5p:4x4x4`).
* `v5e-N` / `v5litepod-N`, `v6e-N`: N single-core chips on a 2-D torus (`v5e-16` = `v5e:4x4`, `v5e-256` =
  `v5e:16x16`).
* A raw topology `v4:4x4x4`, `v5e:4x8`, ... is accepted too.

Per-device HBM used for the "fits" verdict: v4 32 GiB, v5e 16 GiB, v5p 95 GiB, v6e 32 GiB.
"""
import dataclasses
import importlib.metadata
import importlib.util
import math
import os
import re
import time
from typing import Any, Optional, Union

import jax
import jax.numpy as jnp
import optax

from xprompt_jax.methods.base import Method, count_params
from xprompt_jax.models import t5
from xprompt_jax.models.config import T5Config
from xprompt_jax.training import optim
from xprompt_jax.training import partitioning
from xprompt_jax.training import step as step_lib

GiB = 1 << 30

# generation -> (topology prefix, TensorCores per device in the slice name, chip config, HBM per device, dims).
_GENERATIONS = {
    "v4": ("v4", 2, "megacore", 32 * GiB, 3),
    "v5p": ("v5p", 2, "megacore", 95 * GiB, 3),
    "v5e": ("v5e", 1, "default", 16 * GiB, 2),
    "v5litepod": ("v5e", 1, "default", 16 * GiB, 2),
    "v6e": ("v6e", 1, "default", 32 * GiB, 2),
}
# Chip grids of the standard slice shapes (chips -> grid), as Cloud TPU allocates them.
_GRIDS_3D = {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4), 64: (4, 4, 4), 128: (4, 4, 8),
             256: (4, 8, 8), 512: (8, 8, 8), 1024: (8, 8, 16), 2048: (8, 16, 16), 4096: (16, 16, 16)}
_GRIDS_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8), 128: (8, 16), 256: (16, 16)}

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
# An HLO instruction `... = type all-reduce(...)` or its async form `all-reduce-start(...)` (the `-done` half of
# an async pair is not counted again).
_COLLECTIVE_RE = re.compile(r"\s(" + "|".join(COLLECTIVES) + r")(?:-start)?\(")


class LibtpuUnavailableError(RuntimeError):
  """Raised when TPU topologies are asked for but the `libtpu` package is not installed."""


@dataclasses.dataclass(frozen=True)
class TpuTopology:
  """One TPU slice: its user-facing name, the topology string libtpu understands, and per-device HBM."""

  name: str  # e.g. "v4-128"
  generation: str  # "v4" | "v5p" | "v5e" | "v6e"
  topology_name: str  # e.g. "v4:4x4x4"
  chip_config_name: str  # "megacore" (v4, v5p) | "default"
  grid: tuple[int, ...]  # Chips along each torus dimension.
  hbm_bytes: int

  @property
  def num_devices(self) -> int:
    return math.prod(self.grid)

  @property
  def wrap(self) -> tuple[bool, bool, bool]:
    """Wrap-around links: Cloud TPU closes a dimension into a ring once it spans a full 4 (3-D) / 16 (2-D) chips."""
    full = 4 if len(self.grid) == 3 else 16
    dims = tuple(n >= full and n % full == 0 for n in self.grid)
    return (dims + (False,) * 3)[:3]

  @property
  def chips_per_host_bounds(self) -> tuple[int, int, int]:
    """Chips per host: 2x2x1 (capped by the slice); single-host v5e/v6e slices (up to 8 chips) are one host."""
    grid = (tuple(self.grid) + (1,))[:3]
    if len(self.grid) == 2 and self.num_devices <= 8:
      return grid
    return tuple(min(n, bound) for n, bound in zip(grid, (2, 2, 1)))


def _known_names() -> str:
  names = [f"{g}-{n * _GENERATIONS[g][1]}" for g in ("v4", "v5p") for n in (4, 64)]
  names += [f"{g}-{n}" for g in ("v5e", "v5litepod", "v6e") for n in (16, 256)]
  return ", ".join(names) + ", or a raw topology such as v4:4x4x4 / v5e:4x8"


def parse_topology(name: str) -> TpuTopology:
  """The slice `name` (`v4-128`, `v5e-16`, `v5litepod-256`, `v5p-8`, or raw `v4:4x4x4`); clear errors otherwise."""
  if not isinstance(name, str) or not name.strip():
    raise ValueError(f"topology must be a slice name such as v4-8, got {name!r}")
  text = name.strip().lower()
  raw = re.fullmatch(r"(v4|v5p|v5e|v5litepod|v6e):(\d+(?:x\d+)+)", text)
  if raw:
    generation = raw.group(1)
    prefix, _, config, hbm, dims = _GENERATIONS[generation]
    grid = tuple(int(n) for n in raw.group(2).split("x"))
    if len(grid) != dims or min(grid) < 1:
      raise ValueError(f"topology {name!r}: {generation} slices have {dims} positive dimensions "
                       f"(e.g. {prefix}:{'x'.join(['2'] * dims)}), got {raw.group(2)!r}")
    return TpuTopology(name, "v5e" if generation == "v5litepod" else generation, f"{prefix}:{raw.group(2)}",
                       config, grid, hbm)
  named = re.fullmatch(r"(v4|v5p|v5e|v5litepod|v6e)-(\d+)", text)
  if not named:
    raise ValueError(f"unknown TPU topology {name!r}; expected one of {_known_names()}")
  generation, count = named.group(1), int(named.group(2))
  prefix, cores_per_chip, config, hbm, dims = _GENERATIONS[generation]
  if count % cores_per_chip:
    raise ValueError(f"topology {name!r}: {generation}-N counts TensorCores ({cores_per_chip} per chip), so N must "
                     f"be a multiple of {cores_per_chip}")
  chips = count // cores_per_chip
  grids = _GRIDS_3D if dims == 3 else _GRIDS_2D
  if chips not in grids:
    sizes = ", ".join(f"{generation}-{c * cores_per_chip}" for c in grids)
    raise ValueError(f"topology {name!r}: no standard {generation} slice with {chips} chips; known: {sizes} "
                     f"(or pass a raw topology such as {prefix}:{'x'.join(['4'] * dims)})")
  grid = grids[chips]
  return TpuTopology(name, "v5e" if generation == "v5litepod" else generation,
                     f"{prefix}:{'x'.join(map(str, grid))}", config, grid, hbm)


def libtpu_available() -> bool:
  """Whether the `libtpu` package (needed to compile for TPUs without one) is installed."""
  return importlib.util.find_spec("libtpu") is not None


def topology_devices(topology: Union[str, TpuTopology], num_slices: int = 1) -> list:
  """Compile-only devices of `num_slices` TPU slices (one per chip, megacore on v4/v5p), ordered by device id;
  with several slices each device has its `slice_index` (multislice over DCN)."""
  topo = parse_topology(topology) if isinstance(topology, str) else topology
  if not libtpu_available():
    raise LibtpuUnavailableError(
        f"compiling for TPU topology {topo.name!r} needs libtpu: pip install 'xprompt_jax[aot]' (libtpu)")
  # Compile-only use never touches a chip, so it need not take libtpu's one-process-per-host lock (another JAX
  # process on the machine may hold it).
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  from jax.experimental import topologies
  desc = topologies.get_topology_desc(
      topology_name=topo.topology_name, platform="tpu", chip_config_name=topo.chip_config_name,
      chips_per_host_bounds=topo.chips_per_host_bounds, num_slices=num_slices, wrap=topo.wrap)
  devices = sorted(desc.devices, key=lambda d: d.id)
  if len(devices) != topo.num_devices * num_slices:
    raise RuntimeError(f"libtpu describes {num_slices} x {topo.topology_name} ({topo.chip_config_name}) with "
                       f"{len(devices)} devices; expected {topo.num_devices * num_slices}")
  return devices


def abstract_batch(batch_size: int, inputs_length: int, targets_length: int, method: Method, mesh) -> dict:
  """The feature-converted batch (seqio EncDecFeatureConverter, unpacked) as sharded `ShapeDtypeStruct`s."""
  data_size = mesh.shape["data"]
  if batch_size % data_size:
    raise ValueError(f"batch size {batch_size} is not divisible by the mesh's 'data' axis of size {data_size} "
                     f"(mesh {dict(mesh.shape)}); use a larger MeshConfig.model or a batch size that divides")
  sharding = partitioning.data_sharding(mesh)
  spec = lambda length: jax.ShapeDtypeStruct((batch_size, length), jnp.int32, sharding=sharding)
  batch = {"encoder_input_tokens": spec(inputs_length), "decoder_input_tokens": spec(targets_length),
           "decoder_target_tokens": spec(targets_length), "decoder_loss_weights": spec(targets_length)}
  if getattr(method, "num_tasks", 1) > 1:  # MPT with several tasks reads per-example task ids.
    batch["task_id"] = jax.ShapeDtypeStruct((batch_size,), jnp.int32, sharding=sharding)
  return batch


def _shape_only(method: Method) -> Method:
  """The method with a shape-preserving random init: class-label/text/file inits need a vocabulary, labels or
  files that do not change any shape (the prompt is [L, D] whatever its initial values)."""
  if getattr(method, "prompt_init", "random_uniform") != "random_uniform":
    return dataclasses.replace(method, prompt_init="random_uniform")
  return method


def _aux_for(method: Method) -> dict:
  """Non-trained state inputs: XPrompt's pruning masks, so the masked injection is what gets compiled."""
  if hasattr(method, "ones_masks"):
    from xprompt_jax.methods.xprompt import MASKS_KEY
    return {MASKS_KEY: method.ones_masks()}
  return {}


def _with_sharding(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def count_collectives(hlo_text: str) -> dict[str, int]:
  """Static count of each collective in an HLO module's text (an op inside a loop body counts once)."""
  counts = dict.fromkeys(COLLECTIVES, 0)
  for match in _COLLECTIVE_RE.finditer(hlo_text):
    counts[match.group(1)] += 1
  return counts


def memory_report(compiled) -> dict[str, int]:
  """Per-device bytes of a compiled executable; `total` = arguments + outputs - aliased + temporaries + code."""
  stats = compiled.memory_analysis()
  out = {"arguments": int(stats.argument_size_in_bytes), "outputs": int(stats.output_size_in_bytes),
         "aliased": int(stats.alias_size_in_bytes), "temporaries": int(stats.temp_size_in_bytes),
         "generated_code": int(stats.generated_code_size_in_bytes)}
  out["total"] = (out["arguments"] + out["outputs"] - out["aliased"] + out["temporaries"]
                  + out["generated_code"])
  peak = getattr(stats, "peak_memory_in_bytes", None)
  if peak:
    out["peak"] = int(peak)
  return out


def matmul_flops(config: T5Config, batch_size: int, encoder_length: int, targets_length: int,
                 train: bool = True) -> float:
  """Analytic matrix-multiply FLOPs of one step of the whole batch (all devices together).

  Forward, per example with S encoder and T decoder positions, d = emb_dim, I = heads x head_dim, F = mlp_dim,
  a = number of gated MLP branches: encoder layer S(8dI + 2(a+1)dF) + 4S^2 I; decoder layer T(8dI + 4dI +
  2(a+1)dF) + 4SdI (cross-attention keys/values) + 4T^2 I + 4TSI; logits 2TdV. A train step backpropagates to the
  prompt through the frozen model but computes no weight gradients, so the backward costs one forward of every
  projection and two of every attention product (`remat_policy='full'` adds one more forward of the layers).
  Element-wise work is not counted; XLA's `cost_analysis` counts it and, under `scan_layers`, counts the layer
  loop's body once, which is why the two numbers are reported side by side.
  """
  S, T, d, inner, F = encoder_length, targets_length, config.emb_dim, config.inner_dim, config.mlp_dim
  a = len(config.mlp_activations) if config.is_gated else 1
  mlp = 2 * (a + 1) * d * F
  enc_proj, enc_attn = S * (8 * d * inner + mlp), 4 * S * S * inner
  dec_proj = T * (12 * d * inner + mlp) + 4 * S * d * inner
  dec_attn = 4 * T * T * inner + 4 * T * S * inner
  logits = 2 * T * d * config.vocab_size
  layers_proj = config.num_encoder_layers * enc_proj + config.num_decoder_layers * dec_proj
  layers_attn = config.num_encoder_layers * enc_attn + config.num_decoder_layers * dec_attn
  forward = layers_proj + layers_attn + logits
  if not train:
    return float(batch_size * forward)
  backward = layers_proj + 2 * layers_attn + logits
  recompute = layers_proj + layers_attn if config.remat_policy == "full" else 0
  return float(batch_size * (forward + backward + recompute))


def _flops(compiled) -> Optional[float]:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost["flops"]) if cost and "flops" in cost else None


def hbm_verdict(memory: dict, hbm_bytes: int) -> dict[str, Any]:
  """`{"hbm_fraction", "fits"}` of a compiled step's per-device memory.

  The TPU compiler refuses a program that does not fit its HBM, so a compiled step fits by the compiler's own
  accounting; the fraction uses XLA's `peak` (live buffers at the worst point), falling back to `total` (the plain
  sum, which can exceed the peak: arguments and temporaries need not all be live at once).
  """
  used = memory.get("peak") or memory["total"]
  return {"hbm_fraction": used / hbm_bytes, "fits": used <= hbm_bytes}


_OOM_RE = re.compile(r"RESOURCE_EXHAUSTED|[Rr]an out of memory")
# "Used 40.1G of 15.75G hbm" or "memory required for HLO temporaries (5.36T) exceeds available HBM (15.75G)".
_USED_RE = re.compile(r"Used ([0-9.]+)([KMGT])? of [0-9.]+[KMGT]? hbm|required[^(]*\(([0-9.]+)([KMGT])?\)")


def _out_of_memory(message: str, hbm_bytes: int, lower_seconds: float, compile_seconds: float) -> dict[str, Any]:
  """The report of a compile that the TPU compiler refused because the program does not fit in HBM; `total` is
  the (lower bound on the) bytes the compiler says it needed, None when the message does not say."""
  scale = {None: 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
  used = _USED_RE.search(message)
  total = None
  if used:
    number, unit = (used.group(1), used.group(2)) if used.group(1) else (used.group(3), used.group(4))
    total = int(float(number) * scale[unit])
  first = next((line.strip() for line in message.splitlines() if _OOM_RE.search(line)), message.strip())
  return {"memory": {"total": total}, "hbm_fraction": total / hbm_bytes if total else None, "fits": False,
          "error": first[:500], "flops_per_device": None, "collectives": {}, "lower_seconds": lower_seconds,
          "compile_seconds": compile_seconds}


def _compile(fn, args, *, hbm_bytes: int, **jit_kwargs) -> dict[str, Any]:
  start = time.perf_counter()
  lowered = jax.jit(fn, **jit_kwargs).lower(*args)
  lowered_at = time.perf_counter()
  try:
    compiled = lowered.compile()
  except jax.errors.JaxRuntimeError as e:
    if not _OOM_RE.search(str(e)):
      raise
    return _out_of_memory(str(e), hbm_bytes, round(lowered_at - start, 2), round(time.perf_counter() - lowered_at, 2))
  done = time.perf_counter()
  memory = memory_report(compiled)
  return {"memory": memory, **hbm_verdict(memory, hbm_bytes),
          "flops_per_device": _flops(compiled), "collectives": count_collectives(compiled.as_text()),
          "lower_seconds": round(lowered_at - start, 2), "compile_seconds": round(done - lowered_at, 2)}


def compile_train_step(config: T5Config, method: Method, optimizer_cfg: Optional[optim.OptimizerConfig],
                       mesh_cfg: Optional[partitioning.MeshConfig], batch_size: int, inputs_length: int,
                       targets_length: int, topology: Union[str, TpuTopology],
                       loss_cfg: step_lib.LossConfig = step_lib.LossConfig(), include_eval: bool = True) -> dict:
  """AOT-compiles `make_train_step` (and `make_eval_loss`) for `topology` and reports memory, FLOPs, collectives.

  The frozen params are sharded by the mesh rules (`MeshConfig.rules`) exactly as the training loop places them,
  the train state (trainable tree, optimizer state, aux, rng) is replicated as in the loop and donated, and the
  batch is split over 'data'. Returns a JSON-serialisable dict; `train`/`eval` hold per-device `memory` (bytes),
  `fits` (compiled, and XLA's peak <= the chip's HBM; see `hbm_verdict`), `flops_per_device` (XLA's count for
  one step on one device), `matmul_flops_per_device` (`matmul_flops` / devices) and
  `collectives` (static HLO instruction counts). All numbers are compiler estimates, not measurements.
  """
  topo = parse_topology(topology) if isinstance(topology, str) else topology
  mesh_cfg = mesh_cfg or partitioning.MeshConfig()
  optimizer_cfg = optimizer_cfg or optim.OptimizerConfig()
  for field, value in (("batch_size", batch_size), ("inputs_length", inputs_length),
                       ("targets_length", targets_length)):
    if not isinstance(value, int) or value <= 0:
      raise ValueError(f"compile_train_step: {field} must be a positive int, got {value!r}")
  devices = topology_devices(topo, num_slices=mesh_cfg.dcn_data)  # MeshConfig.dcn_data > 1: that many slices.
  try:
    mesh = partitioning.make_mesh(mesh_cfg, devices)
  except ValueError as e:
    raise ValueError(f"topology {mesh_cfg.dcn_data} x {topo.name} ({len(devices)} devices): {e}") from e
  if mesh.devices.size != len(devices):
    raise ValueError(f"topology {topo.name}: the mesh data={mesh.shape['data']} x model={mesh.shape['model']} "
                     f"uses {mesh.devices.size} of its {len(devices)} devices; an AOT estimate must use the "
                     "whole slice (use MeshConfig.data=-1)")

  frozen_abstract = t5.abstract_params(config)
  frozen_sh = partitioning.logical_to_sharding(
      t5.param_logical_axes(config), mesh, mesh_cfg.rules, shapes=frozen_abstract,
      replicate_indivisible=mesh_cfg.replicate_indivisible)
  frozen = _with_sharding(frozen_abstract, frozen_sh)

  shape_method = _shape_only(method)
  trainable_abstract = shape_method.abstract_trainable(config, frozen_abstract)
  labels = method.param_labels(trainable_abstract)
  label_lrs = dict(optimizer_cfg.label_learning_rates) if optimizer_cfg.label_learning_rates else None
  optimizer = optim.make_optimizer(optimizer_cfg, labels if label_lrs else None, label_lrs)
  aux = _aux_for(method)
  state_abstract = jax.eval_shape(
      lambda f: step_lib.init_state(shape_method, f, config, optimizer, jax.random.PRNGKey(0), aux),
      frozen_abstract)
  state_sh = jax.tree.map(lambda _: partitioning.replicated(mesh), state_abstract)
  state = _with_sharding(state_abstract, state_sh)
  batch = abstract_batch(batch_size, inputs_length, targets_length, method, mesh)

  model = t5.T5(config)
  report = {
      "kind": "aot_compile_estimate", "topology": topo.name, "topology_name": topo.topology_name,
      "device_kind": devices[0].device_kind, "num_devices": len(devices), "num_slices": mesh_cfg.dcn_data,
      "hbm_bytes_per_device": topo.hbm_bytes,
      "mesh": {"data": int(mesh.shape["data"]), "model": int(mesh.shape["model"])}, "rules": mesh_cfg.rules,
      "model": config.name, "method": method.name, "frozen_params": config.num_params(),
      "trainable_params": count_params(trainable_abstract), "batch_size": batch_size,
      "inputs_length": inputs_length, "targets_length": targets_length,
      "encoder_length": method.prompt_length + inputs_length, "dtype": config.dtype,
      "param_dtype": config.param_dtype, "scan_layers": config.scan_layers, "remat_policy": config.remat_policy,
      "optimizer": optimizer_cfg.optimizer, "jax_version": jax.__version__,
      "libtpu_version": importlib.metadata.version("libtpu"),
      "frozen_bytes_per_device": partitioning.per_device_bytes(frozen_abstract, frozen_sh),
  }
  flops = lambda train: matmul_flops(config, batch_size, report["encoder_length"], targets_length, train) / len(
      devices)
  train_step = step_lib.make_train_step(model, method, config, optimizer, loss_cfg)
  report["train"] = _compile(train_step, (state, batch, frozen), hbm_bytes=topo.hbm_bytes, donate_argnums=(0,),
                             out_shardings=(state_sh, None))
  report["train"]["matmul_flops_per_device"] = flops(True)
  if include_eval:
    eval_loss = step_lib.make_eval_loss(model, method, config, loss_cfg)
    report["eval"] = _compile(eval_loss, (state["trainable"], state["aux"], batch, frozen),
                              hbm_bytes=topo.hbm_bytes)
    report["eval"]["matmul_flops_per_device"] = flops(False)
  return report
