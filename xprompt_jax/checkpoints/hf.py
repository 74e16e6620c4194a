"""Hugging Face T5 checkpoints (`config.json` + `model.safetensors`, or sharded with `model.safetensors.index.json`).

Name mapping between T5X's tree and `T5ForConditionalGeneration`'s state dict:

  token_embedder/embedding                     shared.weight
  encoder/layers_{i}/attention/{query,...}     encoder.block.{i}.layer.0.SelfAttention.{q,k,v,o}.weight   (ᵀ)
  encoder/layers_{i}/pre_attention_layer_norm  encoder.block.{i}.layer.0.layer_norm.weight
  encoder/layers_{i}/mlp/{wi_0,wi_1,wi,wo}     encoder.block.{i}.layer.1.DenseReluDense.{...}.weight       (ᵀ)
  encoder/layers_{i}/pre_mlp_layer_norm        encoder.block.{i}.layer.1.layer_norm.weight
  decoder: layer.0 SelfAttention, layer.1 EncDecAttention, layer.2 DenseReluDense (same pattern)
  {stack}/relpos_bias/rel_embedding           {stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight (ᵀ)
  encoder/encoder_norm, decoder/decoder_norm   {stack}.final_layer_norm.weight
  decoder/logits_dense/kernel                  lm_head.weight (ᵀ; absent when tied, T5 1.0)

torch's Linear stores [out, in], so every 2-D tensor but the embedding is transposed. `encoder.embed_tokens.weight`,
`decoder.embed_tokens.weight` (and `lm_head.weight` of a tied model) are copies of `shared.weight` and are only
checked, never loaded as parameters.
"""
import contextlib
import json
import os
from typing import Any, Mapping, Optional

import jax
import numpy as np
import safetensors
from safetensors import numpy as st_numpy

from xprompt_jax.checkpoints import storage
from xprompt_jax.checkpoints import tree as tree_lib
from xprompt_jax.models.config import T5Config

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
_TIED_COPIES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")

_SUBLAYERS = {
    "encoder": {"attention": (0, "SelfAttention"), "pre_attention_layer_norm": (0, "layer_norm"),
                "mlp": (1, "DenseReluDense"), "pre_mlp_layer_norm": (1, "layer_norm")},
    "decoder": {"self_attention": (0, "SelfAttention"), "pre_self_attention_layer_norm": (0, "layer_norm"),
                "encoder_decoder_attention": (1, "EncDecAttention"),
                "pre_cross_attention_layer_norm": (1, "layer_norm"),
                "mlp": (2, "DenseReluDense"), "pre_mlp_layer_norm": (2, "layer_norm")},
}
_PROJECTIONS = {"query": "q", "key": "k", "value": "v", "out": "o", "wi": "wi", "wi_0": "wi_0", "wi_1": "wi_1",
                "wo": "wo"}
# HF activation names (dense_act_fn) -> T5Config activation names. HF's gated-gelu uses the tanh approximation.
_ACT_FROM_HF = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "gelu": "gelu_exact", "relu": "relu",
                "silu": "silu", "swish": "silu"}
_ACT_TO_HF = {"gelu": "gelu_new", "gelu_exact": "gelu", "relu": "relu", "silu": "silu"}


def hf_name(path: str) -> tuple[str, bool]:
  """(HF state-dict name, transposed?) of a '/'-joined T5X parameter path; ValueError for an unknown path."""
  parts = path.split("/")
  if path == "token_embedder/embedding":
    return "shared.weight", False
  if path == "decoder/logits_dense/kernel":
    return "lm_head.weight", True
  stack = parts[0]
  if stack in _SUBLAYERS and len(parts) == 3 and parts[1] == "relpos_bias" and parts[2] == "rel_embedding":
    return f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight", True
  if stack in _SUBLAYERS and len(parts) == 3 and parts[1] == f"{stack}_norm" and parts[2] == "scale":
    return f"{stack}.final_layer_norm.weight", False
  if (stack in _SUBLAYERS and len(parts) >= 4 and parts[1].startswith("layers_") and parts[1][7:].isdigit()
      and parts[2] in _SUBLAYERS[stack]):
    index, module = _SUBLAYERS[stack][parts[2]]
    prefix = f"{stack}.block.{int(parts[1][7:])}.layer.{index}.{module}"
    if module == "layer_norm" and parts[3:] == ["scale"]:
      return f"{prefix}.weight", False
    if module != "layer_norm" and len(parts) == 5 and parts[3] in _PROJECTIONS and parts[4] == "kernel":
      return f"{prefix}.{_PROJECTIONS[parts[3]]}.weight", True
  raise ValueError(f"parameter {path} has no Hugging Face T5 counterpart")


# ---------------------------------------------------------------------------------------------- configuration
def config_from_hf(hf: Mapping[str, Any], source: str = "config.json") -> T5Config:
  """A T5Config from a Hugging Face T5 `config.json` dict (missing keys take HF's T5Config defaults)."""
  if hf.get("model_type", "t5") not in ("t5", "mt5", "umt5"):
    raise tree_lib.CheckpointError(f"{source}: model_type {hf.get('model_type')!r} is not a T5 model")
  proj = hf.get("feed_forward_proj", "relu")
  gated = bool(hf.get("is_gated_act", proj.startswith("gated-")))
  act_name = hf.get("dense_act_fn") or proj.split("-")[-1]
  if gated and act_name == "gelu" and "dense_act_fn" not in hf:
    act_name = "gelu_new"  # HF turns 'gated-gelu' into gelu_new.
  if act_name not in _ACT_FROM_HF:
    raise tree_lib.CheckpointError(f"{source}: unsupported activation {act_name!r} (feed_forward_proj={proj!r}); "
                                   f"supported: {sorted(_ACT_FROM_HF)}")
  act = _ACT_FROM_HF[act_name]
  extra = hf.get("xprompt_jax", {})
  num_layers = hf.get("num_layers", 6)
  return T5Config(
      vocab_size=hf.get("vocab_size", 32128), emb_dim=hf.get("d_model", 512), num_heads=hf.get("num_heads", 8),
      head_dim=hf.get("d_kv", 64), mlp_dim=hf.get("d_ff", 2048), num_encoder_layers=num_layers,
      num_decoder_layers=hf.get("num_decoder_layers") or num_layers,
      mlp_activations=(act, "linear") if gated else (act,),
      logits_via_embedding=bool(hf.get("tie_word_embeddings", True)),
      dropout_rate=float(hf.get("dropout_rate", 0.1)),
      relpos_num_buckets=hf.get("relative_attention_num_buckets", 32),
      relpos_max_distance=hf.get("relative_attention_max_distance", 128),
      layer_norm_eps=float(hf.get("layer_norm_epsilon", 1e-6)), **extra)


def config_to_hf(config: T5Config) -> dict:
  """The Hugging Face `config.json` dict of a T5Config (extra xprompt_jax fields under 'xprompt_jax')."""
  acts = config.mlp_activations
  if not (len(acts) == 1 or (len(acts) == 2 and acts[1] == "linear")) or acts[0] not in _ACT_TO_HF:
    raise ValueError(f"mlp_activations={acts!r} has no Hugging Face T5 equivalent")
  hf_act = _ACT_TO_HF[acts[0]]
  proj = ("gated-" if config.is_gated else "") + ("gelu" if hf_act.startswith("gelu") else hf_act)
  return {
      "architectures": ["T5ForConditionalGeneration"], "model_type": "t5", "is_encoder_decoder": True,
      "vocab_size": config.vocab_size, "d_model": config.emb_dim, "d_kv": config.head_dim, "d_ff": config.mlp_dim,
      "num_heads": config.num_heads, "num_layers": config.num_encoder_layers,
      "num_decoder_layers": config.num_decoder_layers, "feed_forward_proj": proj, "dense_act_fn": hf_act,
      "is_gated_act": config.is_gated, "tie_word_embeddings": config.logits_via_embedding,
      "relative_attention_num_buckets": config.relpos_num_buckets,
      "relative_attention_max_distance": config.relpos_max_distance,
      "layer_norm_epsilon": config.layer_norm_eps, "dropout_rate": config.dropout_rate,
      "initializer_factor": 1.0, "decoder_start_token_id": 0, "pad_token_id": 0, "eos_token_id": 1,
      "use_cache": True, "dtype": config.param_dtype, "torch_dtype": config.param_dtype,
      "xprompt_jax": {"dtype": config.dtype, "param_dtype": config.param_dtype, "scan_layers": config.scan_layers,
                      "remat_policy": config.remat_policy, "name": config.name},
  }


def read_config(path: str) -> T5Config:
  file = storage.join(path, CONFIG_NAME)
  try:
    hf = json.loads(storage.read_bytes(file))
  except json.JSONDecodeError as e:
    raise tree_lib.CheckpointError(f"{file} is not valid JSON: {e}") from e
  return config_from_hf(hf, file)


# ---------------------------------------------------------------------------------------------- tensors
def _weight_files(path: str) -> dict[str, str]:
  """HF tensor name -> safetensors file holding it."""
  index = storage.join(path, INDEX_NAME)
  if storage.is_file(index):
    weight_map = json.loads(storage.read_bytes(index)).get("weight_map")
    if not isinstance(weight_map, dict):
      raise tree_lib.CheckpointError(f"{index} has no 'weight_map'")
    return {name: storage.join(path, file) for name, file in weight_map.items()}
  single = storage.join(path, WEIGHTS_NAME)
  if not storage.is_file(single):
    raise FileNotFoundError(f"{path} holds neither {WEIGHTS_NAME} nor {INDEX_NAME}")
  return {name: single for name in _tensor_names(single)}


class _Tensors(contextlib.AbstractContextManager):
  """Tensors of a set of safetensors files: shapes without reading, whole tensors, or one slice of a tensor.

  Local files are opened once with `safe_open` (memory-mapped; a slice reads only its bytes); gs:// files are
  fetched whole.
  """

  def __init__(self, files: Mapping[str, str]):
    self._stack = contextlib.ExitStack()
    self._handles = {}
    for file in sorted(set(files.values())):
      if storage.is_gcs(file):
        self._handles[file] = st_numpy.load(storage.read_bytes(file))
      else:
        self._handles[file] = self._stack.enter_context(safetensors.safe_open(file, framework="numpy"))
    self._where = {name: self._handles[file] for name, file in files.items()}

  def __exit__(self, *exc):
    self._stack.close()

  def shape(self, name: str) -> tuple:
    handle = self._where[name]
    return tuple(handle[name].shape if isinstance(handle, dict) else handle.get_slice(name).get_shape())

  def read(self, name: str, index=None) -> np.ndarray:
    handle = self._where[name]
    if isinstance(handle, dict):
      return handle[name] if index is None else handle[name][index]
    return handle.get_tensor(name) if index is None else handle.get_slice(name)[index]


def _tensor_names(file: str) -> list[str]:
  if storage.is_gcs(file):
    return list(st_numpy.load(storage.read_bytes(file)))
  with safetensors.safe_open(file, framework="numpy") as f:
    return list(f.keys())


def _to_t5x(tensors: _Tensors, name: str, transposed: bool, index=None) -> np.ndarray:
  """The T5X-orientation array (or its `index` slice) of HF tensor `name`."""
  if index is not None and transposed:
    index = tuple(index)[::-1]
  array = tensors.read(name, None if index is None else tuple(index))
  return np.ascontiguousarray(array.T) if transposed else array


def read_hf(path: str, config: Optional[T5Config] = None, shardings=None) -> tuple[dict, T5Config]:
  """(T5X-layout parameter tree, config) of a HF T5 checkpoint folder; `config` defaults to its config.json.

  Unknown tensors, missing tensors, wrong shapes and tied copies that differ from `shared.weight` raise
  CheckpointError (shapes are checked before any tensor data is read). With `shardings` (tree of
  `jax.sharding.Sharding`) those leaves become `jax.Array`s and each host reads only its devices' slices.
  """
  config = config or read_config(path)
  expected = tree_lib.flatten(tree_lib.expected_params(tree_lib.unscanned(config)))
  names = {hf_name(p)[0]: p for p in expected}
  files = _weight_files(path)
  ignorable = set(_TIED_COPIES) | ({"lm_head.weight"} if config.logits_via_embedding else set())
  unexpected = sorted(set(files) - set(names) - ignorable)
  missing = sorted(n for n in names if n not in files)
  if unexpected or missing:
    problems = [f"missing tensor {n} (for {names[n]}, expected shape {_hf_shape(names[n], expected)})"
                for n in missing]
    problems += [f"unexpected tensor {n}" for n in unexpected]
    raise tree_lib.CheckpointError(f"Hugging Face checkpoint {path} does not match the model configuration:\n  " +
                                   "\n  ".join(problems))
  flat_shardings = tree_lib.flatten(shardings or {})
  with _Tensors(files) as tensors:
    stored = {p: tensors.shape(n)[::-1] if hf_name(p)[1] else tensors.shape(n) for n, p in names.items()}
    tree_lib.validate(tree_lib.unflatten(stored), tree_lib.expected_params(tree_lib.unscanned(config)), path)
    shared = tensors.read("shared.weight")
    for copy in sorted(ignorable & set(files)):
      if not np.array_equal(tensors.read(copy), shared):
        raise tree_lib.CheckpointError(f"{path}: {copy} differs from shared.weight, but the model ties them")
    flat = {}
    for name, p in names.items():
      transposed, sharding = hf_name(p)[1], flat_shardings.get(p)
      if sharding is None:
        flat[p] = shared if name == "shared.weight" else _to_t5x(tensors, name, transposed)
      else:
        flat[p] = jax.make_array_from_callback(
            stored[p], sharding, lambda index, n=name, t=transposed: _to_t5x(tensors, n, t, index))
  return tree_lib.unflatten(flat), config


def _hf_shape(path: str, expected: Mapping[str, Any]) -> tuple:
  shape = tuple(expected[path].shape)
  return shape[::-1] if hf_name(path)[1] else shape


def write_hf(params: Mapping[str, Any], path: str, config: T5Config,
             max_shard_bytes: Optional[int] = None) -> None:
  """Writes config.json and model.safetensors (or shards + index when larger than `max_shard_bytes`)."""
  tensors = {}
  for p, leaf in tree_lib.flatten(params).items():
    name, transpose = hf_name(p)
    array = np.asarray(leaf)
    tensors[name] = np.ascontiguousarray(array.T if transpose else array)
  if not storage.is_gcs(path):
    os.makedirs(path, exist_ok=True)
  storage.write_bytes(storage.join(path, CONFIG_NAME),
                      json.dumps(config_to_hf(config), indent=2, sort_keys=True).encode())
  shards = _shard(tensors, max_shard_bytes)
  if len(shards) == 1:
    storage.write_bytes(storage.join(path, WEIGHTS_NAME), st_numpy.save(shards[0], metadata={"format": "np"}))
    return
  weight_map = {}
  for i, shard in enumerate(shards):
    file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    storage.write_bytes(storage.join(path, file), st_numpy.save(shard, metadata={"format": "np"}))
    weight_map.update({name: file for name in shard})
  index = {"metadata": {"total_size": int(sum(a.nbytes for a in tensors.values()))}, "weight_map": weight_map}
  storage.write_bytes(storage.join(path, INDEX_NAME), json.dumps(index, indent=2, sort_keys=True).encode())


def _shard(tensors: Mapping[str, np.ndarray], max_bytes: Optional[int]) -> list[dict]:
  """Greedy split in name order; a tensor larger than `max_bytes` gets a shard of its own."""
  if not max_bytes:
    return [dict(tensors)]
  shards, current, size = [], {}, 0
  for name in sorted(tensors):
    nbytes = tensors[name].nbytes
    if current and size + nbytes > max_bytes:
      shards.append(current)
      current, size = {}, 0
    current[name] = tensors[name]
    size += nbytes
  return shards + [current] if current else shards
