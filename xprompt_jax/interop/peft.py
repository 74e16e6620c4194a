"""Hugging Face PEFT adapters: export our prompts as PEFT adapters and import PEFT adapters as our trainable trees.

A PEFT adapter folder holds `adapter_config.json` and `adapter_model.safetensors`; `peft.PeftModel.from_pretrained`
loads it onto the Hugging Face T5 that `xprompt-jax convert --to=hf` writes. Only numpy, json and safetensors are
used here: torch/transformers/peft are needed by whoever loads the adapter, never by this module.

What maps exactly (checked numerically against real peft 0.21 + transformers 5 by tests/test_interop_peft.py):

* prompt tuning (and XPrompt, with its pruning masks folded in) <-> `PROMPT_TUNING`, `SEQ_2_SEQ_LM`,
  `num_transformer_submodules=1`: `prompt_embeddings` [L, D] is prepended to the embedded encoder input, the
  attention mask is extended with ones and T5's relative positions run over the concatenated sequence, as here.
  On import, the rows past L of an adapter saved with `num_transformer_submodules=2` (PEFT's seq2seq default)
  are dropped: PEFT's seq2seq forward uses only the first L rows for prompt tuning.
* MPT <-> `MULTITASK_PROMPT_TUNING` with `num_transformer_submodules=1`: task k's prompt is
  `prompt_embeddings ∘ (prefix_task_cols[k] @ prefix_task_rows[k])`, i.e. our `P* ∘ (u_k v_kᵀ)` with
  `u = prefix_task_cols` [T, L, r] and `v = prefix_task_rowsᵀ` [T, D, r]. An MPT adapter with
  `num_transformer_submodules=2` also prepends prompts to the *decoder* input embeddings, which no method here
  does: it is refused.

What PEFT cannot express (PEFT_PREFIX_LIMITS): PEFT's T5 prefix tuning hands the prefixes to the model as a
key/value cache. The T5 encoder never receives that cache, so there are no encoder self-attention prefixes; PEFT
resets the cross-attention cache to empty on every call (the encoder output must be recomputed), so there are no
cross-attention prefixes; and the decoder self-attention prefixes it does inject get T5's relative-position bias
as if they were the decoder positions 0..P-1 (the real tokens shifted to P..), whereas our prefixes are
position-less memory. None of our prefix kinds therefore has an exact PEFT form: `export_peft` refuses prefix
tuning, and `import_peft` converts a PEFT prefix adapter (its decoder self-attention prefixes, which is all PEFT
applies) only with `allow_inexact=True`, stating that scores will differ.
"""
import json
import os
from typing import Any, Mapping, Optional

import numpy as np
from safetensors import numpy as st_numpy

from xprompt_jax.models.config import T5Config

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
EXPORTABLE = ("prompt", "xprompt", "mpt")
IMPORTABLE = ("PROMPT_TUNING", "MULTITASK_PROMPT_TUNING", "PREFIX_TUNING")

PEFT_PREFIX_LIMITS = (
    "PEFT's T5 prefix tuning cannot express xprompt_jax prefixes: (1) encoder self-attention prefixes: the T5 "
    "encoder never receives PEFT's past_key_values; (2) cross-attention prefixes: PEFT resets the cross-attention "
    "cache to empty on every forward; (3) decoder self-attention prefixes: PEFT passes them as a KV cache, so T5 "
    "adds relative-position bias to them as if they were decoder positions 0..P-1, while xprompt_jax prefixes carry "
    "no position bias. Use prompt tuning for PEFT interop, or keep prefix-tuned runs in xprompt_jax format")


class PeftInteropError(ValueError):
  """An adapter or a method that has no exact counterpart on the other side (the message says which and why)."""


def _base_fields(config: T5Config, length: int, base_model: Optional[str]) -> dict:
  if config.num_encoder_layers != config.num_decoder_layers:
    raise PeftInteropError(f"PEFT records one num_layers; this model has {config.num_encoder_layers} encoder and "
                           f"{config.num_decoder_layers} decoder layers")
  return {"auto_mapping": None, "base_model_name_or_path": base_model, "inference_mode": True,
          "modules_to_save": None, "num_attention_heads": config.num_heads, "num_layers": config.num_encoder_layers,
          "num_transformer_submodules": 1, "num_virtual_tokens": int(length), "prompt_tuning_init": "RANDOM",
          "prompt_tuning_init_text": None, "revision": None, "task_type": "SEQ_2_SEQ_LM",
          "token_dim": config.emb_dim, "tokenizer_kwargs": None, "tokenizer_name_or_path": None}


def peft_tensors(method_name: str, trainable: Mapping[str, Any], config: T5Config,
                 base_model: Optional[str] = None) -> tuple[dict, dict[str, np.ndarray]]:
  """(adapter_config dict, safetensors tensors) of an *inference-form* trainable tree of `method_name`.

  For XPrompt pass `method.export(trainable, config, masks)` (masks folded in); prefix tuning raises
  `PeftInteropError` with PEFT_PREFIX_LIMITS.
  """
  if method_name == "prefix":
    raise PeftInteropError(f"cannot export method 'prefix' to PEFT. {PEFT_PREFIX_LIMITS}")
  if method_name not in EXPORTABLE:
    raise PeftInteropError(f"cannot export method {method_name!r} to PEFT; exportable: {', '.join(EXPORTABLE)}")
  if method_name in ("prompt", "xprompt"):
    prompt = _checked(trainable, "prompt", 2, config)
    fields = _base_fields(config, prompt.shape[0], base_model)
    fields["peft_type"] = "PROMPT_TUNING"
    return fields, {"prompt_embeddings": prompt}
  shared = _checked(trainable, "shared_prompt", 2, config)
  u, v = np.asarray(trainable["u"], np.float32), np.asarray(trainable["v"], np.float32)
  if u.ndim != 3 or v.ndim != 3 or u.shape[0] != v.shape[0] or u.shape[1] != shared.shape[0] or \
      v.shape[1] != shared.shape[1] or u.shape[2] != v.shape[2]:
    raise PeftInteropError(f"MPT factors u {u.shape} and v {v.shape} do not fit shared_prompt {shared.shape} "
                           "(expected u [T, L, r], v [T, D, r])")
  fields = _base_fields(config, shared.shape[0], base_model)
  fields.update(peft_type="MULTITASK_PROMPT_TUNING", num_tasks=int(u.shape[0]), num_ranks=int(u.shape[2]),
                prompt_tuning_init_state_dict_path=None, prompt_tuning_init_task=0)
  return fields, {"prompt_embeddings": shared, "prefix_task_cols": np.ascontiguousarray(u),
                  "prefix_task_rows": np.ascontiguousarray(np.swapaxes(v, 1, 2))}


def _checked(trainable: Mapping[str, Any], key: str, ndim: int, config: T5Config) -> np.ndarray:
  if key not in trainable:
    raise PeftInteropError(f"the trainable tree has no {key!r} (it has {sorted(trainable)})")
  array = np.ascontiguousarray(np.asarray(trainable[key], np.float32))
  if array.ndim != ndim or array.shape[-1] != config.emb_dim:
    raise PeftInteropError(f"trainable[{key!r}] has shape {array.shape}; expected [L, {config.emb_dim}]")
  return array


def export_peft(path: str, method_name: str, trainable: Mapping[str, Any], config: T5Config,
                base_model: Optional[str] = None) -> dict:
  """Writes `adapter_config.json` + `adapter_model.safetensors` into the folder `path`; returns the config dict.

  `base_model` becomes `base_model_name_or_path` (the converted HF T5 folder or hub name PEFT loads onto).
  """
  fields, tensors = peft_tensors(method_name, trainable, config, base_model)
  os.makedirs(path, exist_ok=True)
  st_numpy.save_file(tensors, os.path.join(path, WEIGHTS_NAME), metadata={"format": "pt"})
  with open(os.path.join(path, CONFIG_NAME), "w", encoding="utf-8") as f:
    json.dump(fields, f, indent=2, sort_keys=True)
  return fields


def read_adapter(path: str) -> tuple[dict, dict[str, np.ndarray]]:
  """(adapter_config dict, tensors) of a PEFT adapter folder; a clear error for a missing or foreign folder."""
  config_file, weights = os.path.join(path, CONFIG_NAME), os.path.join(path, WEIGHTS_NAME)
  for file in (config_file, weights):
    if not os.path.isfile(file):
      bin_hint = " (adapter_model.bin is torch pickle: re-save it with safe_serialization=True)" if (
          file == weights and os.path.isfile(os.path.join(path, "adapter_model.bin"))) else ""
      raise FileNotFoundError(f"{path} is not a PEFT adapter folder: {os.path.basename(file)} is missing{bin_hint}")
  with open(config_file, encoding="utf-8") as f:
    try:
      fields = json.load(f)
    except json.JSONDecodeError as e:
      raise PeftInteropError(f"{config_file}: not valid json ({e})") from e
  tensors = {name: np.asarray(value, np.float32) for name, value in st_numpy.load_file(weights).items()}
  return fields, tensors


def _tensor(tensors: Mapping[str, np.ndarray], name: str, source: str) -> np.ndarray:
  if name not in tensors:
    raise PeftInteropError(f"{source} has no tensor {name!r} (it has {sorted(tensors)})")
  return tensors[name]


def import_peft(path: str, config: T5Config, allow_inexact: bool = False) -> tuple[str, dict, dict]:
  """(method name, method kwargs, trainable tree) of the PEFT adapter in folder `path`, for the model `config`.

  PROMPT_TUNING -> "prompt" `{"prompt": [L, D]}`; MULTITASK_PROMPT_TUNING -> "mpt" `{"shared_prompt", "u", "v"}`;
  PREFIX_TUNING -> "prefix" (decoder self-attention prefixes only, plain form) and only with `allow_inexact`.
  """
  fields, tensors = read_adapter(path)
  source = os.path.join(path, WEIGHTS_NAME)
  kind = fields.get("peft_type")
  if kind not in IMPORTABLE:
    raise PeftInteropError(f"{os.path.join(path, CONFIG_NAME)}: peft_type {kind!r} cannot be imported; importable: "
                           f"{', '.join(IMPORTABLE)}")
  if fields.get("task_type") not in (None, "SEQ_2_SEQ_LM"):
    raise PeftInteropError(f"{path}: task_type {fields.get('task_type')!r}; only SEQ_2_SEQ_LM adapters (T5) apply")
  length = int(fields["num_virtual_tokens"])
  submodules = int(fields.get("num_transformer_submodules") or 2)
  if int(fields.get("token_dim", config.emb_dim)) != config.emb_dim:
    raise PeftInteropError(f"{path}: token_dim {fields['token_dim']} != the model's emb_dim {config.emb_dim}")
  if kind == "PROMPT_TUNING":
    table = _tensor(tensors, "prompt_embeddings", source)
    _expect(table, (length * submodules, config.emb_dim), "prompt_embeddings", source)
    return "prompt", {"length": length}, {"prompt": table[:length]}
  if kind == "MULTITASK_PROMPT_TUNING":
    if submodules != 1:
      raise PeftInteropError(f"{path}: num_transformer_submodules={submodules}: PEFT then also prepends prompts to "
                             "the decoder input embeddings, which xprompt_jax's MPT does not do")
    shared = _tensor(tensors, "prompt_embeddings", source)
    cols, rows = _tensor(tensors, "prefix_task_cols", source), _tensor(tensors, "prefix_task_rows", source)
    tasks, ranks = int(fields["num_tasks"]), int(fields.get("num_ranks", 1))
    _expect(shared, (length, config.emb_dim), "prompt_embeddings", source)
    _expect(cols, (tasks, length, ranks), "prefix_task_cols", source)
    _expect(rows, (tasks, ranks, config.emb_dim), "prefix_task_rows", source)
    return ("mpt", {"length": length, "num_tasks": tasks, "rank": ranks},
            {"shared_prompt": shared, "u": cols, "v": np.swapaxes(rows, 1, 2)})
  if not allow_inexact:
    raise PeftInteropError(f"{path} is a PREFIX_TUNING adapter. {PEFT_PREFIX_LIMITS}. Importing it keeps its decoder "
                           "self-attention prefixes (all that PEFT applies to T5) as position-less prefixes, so "
                           "scores will differ from PEFT's; pass allow_inexact=True (--allow_inexact) to accept that")
  return "prefix", {"length": length, "encoder": False, "decoder": True, "cross": False, "reparam": False}, \
      {"decoder": _decoder_prefixes(_tensor(tensors, "prompt_embeddings", source), fields, config, submodules,
                                    source)}


def _decoder_prefixes(table: np.ndarray, fields: Mapping[str, Any], config: T5Config, submodules: int,
                      source: str) -> dict:
  """PEFT's `get_prompt` layout: rows [P, layers*2*D] -> per layer (k, v), with the submodule duplication."""
  length, layers, heads = int(fields["num_virtual_tokens"]), int(fields["num_layers"]), int(
      fields["num_attention_heads"])
  if layers != config.num_decoder_layers or heads != config.num_heads or \
      config.emb_dim // heads != config.head_dim:
    raise PeftInteropError(f"{source}: PEFT prefixes for {layers} layers x {heads} heads x "
                           f"{config.emb_dim // heads} do not fit the model's {config.num_decoder_layers} decoder "
                           f"layers x {config.num_heads} heads x head_dim {config.head_dim}")
  _expect(table, (length, layers * 2 * config.emb_dim), "prompt_embeddings", source)
  kv = table.reshape(length, layers * 2, heads, config.head_dim)
  if submodules == 2:
    kv = np.concatenate([kv, kv], axis=1)
  per_layer = 2 * submodules
  keys = np.stack([kv[:, per_layer * i] for i in range(layers)])
  values = np.stack([kv[:, per_layer * i + 1] for i in range(layers)])
  return {"key": keys, "value": values}


def _expect(array: np.ndarray, shape: tuple, name: str, source: str) -> None:
  if tuple(array.shape) != tuple(shape):
    raise PeftInteropError(f"{source}: {name} has shape {tuple(array.shape)}; expected {tuple(shape)} from "
                           "adapter_config.json")
