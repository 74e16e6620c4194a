"""PEFT interop round trips through real `peft` on the golden HF T5 (test-only extra: torch, transformers, peft).

Exported prompt-tuning and MPT adapters, loaded by `peft.PeftModel.from_pretrained` onto the HF model, give the
logits our Flax model gives with the same prompt; adapters saved by PEFT import back to the same arrays; prefix
tuning is refused on export, and a PEFT prefix adapter imports (only with allow_inexact) to exactly the decoder
self-attention cache PEFT builds.
"""
import json

import jax.numpy as jnp
import numpy as np
import pytest

import numerics
from xprompt_jax import checkpoints
from xprompt_jax.interop import peft as peft_io
from xprompt_jax.methods import mpt as mpt_lib
from xprompt_jax.models.injection import Injection
from xprompt_jax.models.t5 import T5
from xprompt_jax.models.config import T5Config

torch = pytest.importorskip("torch", reason="PEFT interop tests need the 'bench' extra: torch, transformers, peft")
transformers = pytest.importorskip("transformers", reason="PEFT interop tests need transformers")
peft = pytest.importorskip("peft", reason="PEFT interop tests need peft")


@pytest.fixture(scope="module")
def golden(shared):
  root = shared / "golden" / "t5_1_1_mini"
  row = json.loads(open(root / "scores.jsonl").readline())
  params, config = checkpoints.load_params(str(root))
  return str(root), row, params, config


def _hf_model(root):
  model = transformers.T5ForConditionalGeneration.from_pretrained(root)
  return model.eval()


def _ours(params, config, row, injection):
  enc = jnp.asarray([row["input_ids"]], jnp.int32)
  dec = jnp.asarray([[0] + row["target_ids"][:-1]], jnp.int32)
  return np.asarray(T5(config).apply({"params": params}, enc, dec, injection))[0]


def _peft_logits(root, adapter, row, **kw):
  """PEFT's logits; the decoder inputs come from `labels` (PEFT's MPT forward drops decoder_input_ids)."""
  model = peft.PeftModel.from_pretrained(_hf_model(root), adapter).eval()
  with torch.no_grad():
    out = model(input_ids=torch.tensor([row["input_ids"]]), attention_mask=torch.ones(1, len(row["input_ids"]),
                dtype=torch.long), labels=torch.tensor([row["target_ids"]]), **kw)
  return out.logits[0].numpy()


def _close(got, want):
  """One forward pass of the golden T5 in PyTorch and in XLA: two fp32 implementations, not two orders of one."""
  numerics.assert_close(got, want, roundings=numerics.IMPLEMENTATIONS)  # XLA against PyTorch.


def test_prompt_tuning_export_loads_in_peft_with_equal_logits(golden, tmp_path):
  root, row, params, config = golden
  prompt = np.random.default_rng(0).normal(size=(7, config.emb_dim)).astype(np.float32)
  fields = peft_io.export_peft(str(tmp_path), "prompt", {"prompt": prompt}, config, base_model=root)
  assert fields["peft_type"] == "PROMPT_TUNING" and fields["num_transformer_submodules"] == 1
  want = _ours(params, config, row, Injection(prompt=jnp.asarray(prompt)))
  _close(_peft_logits(root, str(tmp_path), row), want)
  # Without the prompt the logits differ: the comparison is sensitive to it.
  numerics.assert_differs(_ours(params, config, row, None), want, roundings=numerics.NETWORK)


def test_mpt_export_loads_in_peft_with_equal_logits_per_task(golden, tmp_path):
  root, row, params, config = golden
  rng = np.random.default_rng(1)
  trainable = {"shared_prompt": rng.normal(size=(5, config.emb_dim)).astype(np.float32),
               "u": rng.normal(size=(3, 5, 2)).astype(np.float32),
               "v": rng.normal(size=(3, config.emb_dim, 2)).astype(np.float32)}
  peft_io.export_peft(str(tmp_path), "mpt", trainable, config)
  prompts = np.asarray(mpt_lib.task_prompts(trainable))
  for task in (0, 2):
    want = _ours(params, config, row, Injection(prompt=jnp.asarray(prompts[task])))
    _close(_peft_logits(root, str(tmp_path), row, task_ids=torch.tensor([task])), want)


def test_peft_saved_adapters_import_back(golden, tmp_path):
  root, _, _, config = golden
  cfg = peft.PromptTuningConfig(task_type=peft.TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=4)  # Submodules: 2.
  model = peft.get_peft_model(_hf_model(root), cfg)
  model.save_pretrained(str(tmp_path / "pt"))
  name, kwargs, trainable = peft_io.import_peft(str(tmp_path / "pt"), config)
  saved = model.get_prompt_embedding_to_save("default").numpy()
  assert name == "prompt" and kwargs == {"length": 4}
  np.testing.assert_array_equal(trainable["prompt"], saved[:4])  # PEFT's seq2seq forward uses the first L rows.

  cfg = peft.MultitaskPromptTuningConfig(task_type=peft.TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=4, num_tasks=2,
                                         num_ranks=1, num_transformer_submodules=1)
  model = peft.get_peft_model(_hf_model(root), cfg)
  model.save_pretrained(str(tmp_path / "mpt"))
  name, kwargs, trainable = peft_io.import_peft(str(tmp_path / "mpt"), config)
  assert name == "mpt" and kwargs == {"length": 4, "num_tasks": 2, "rank": 1}
  with torch.no_grad():
    want = model.get_prompt(batch_size=1, task_ids=torch.tensor([1]))[0].numpy()
  # P* ∘ (u vᵀ) in PyTorch and in XLA: a few products per entry.
  numerics.assert_close(np.asarray(mpt_lib.task_prompts(trainable))[1], want, roundings=numerics.FEW)


def test_prefix_export_refused_and_import_matches_peft_cache(golden, tmp_path):
  root, _, _, config = golden
  with pytest.raises(peft_io.PeftInteropError, match="encoder self-attention prefixes"):
    peft_io.export_peft(str(tmp_path / "x"), "prefix", {}, config)
  cfg = peft.PrefixTuningConfig(task_type=peft.TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=3)
  model = peft.get_peft_model(_hf_model(root), cfg).eval()
  model.save_pretrained(str(tmp_path / "pre"))
  with pytest.raises(peft_io.PeftInteropError, match="allow_inexact"):
    peft_io.import_peft(str(tmp_path / "pre"), config)
  name, kwargs, trainable = peft_io.import_peft(str(tmp_path / "pre"), config, allow_inexact=True)
  assert name == "prefix" and kwargs["decoder"] and not kwargs["encoder"] and not kwargs["cross"]
  with torch.no_grad():
    cache = model.get_prompt(batch_size=1)
  for layer in range(config.num_decoder_layers):
    keys = cache.self_attention_cache.layers[layer].keys[0].numpy()  # [heads, P, head_dim]
    values = cache.self_attention_cache.layers[layer].values[0].numpy()
    # PEFT's prefix embedding rows, reshaped on both sides (no projection): at most a few roundings.
    numerics.assert_close(trainable["decoder"]["key"][layer], keys.transpose(1, 0, 2), roundings=numerics.FEW)
    numerics.assert_close(trainable["decoder"]["value"][layer], values.transpose(1, 0, 2), roundings=numerics.FEW)
  assert cache.cross_attention_cache.get_seq_length() == 0  # PEFT gives T5 no cross-attention prefix.


def test_bad_adapters_raise_clearly(tmp_path):
  config = T5Config(vocab_size=100, emb_dim=8, num_heads=2, head_dim=4, mlp_dim=16, num_encoder_layers=1,
                    num_decoder_layers=1)
  with pytest.raises(FileNotFoundError, match="adapter_config.json is missing"):
    peft_io.import_peft(str(tmp_path), config)
  peft_io.export_peft(str(tmp_path / "a"), "prompt", {"prompt": np.zeros((3, 8), np.float32)}, config)
  other = T5Config(vocab_size=100, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=16, num_encoder_layers=1,
                   num_decoder_layers=1)
  with pytest.raises(peft_io.PeftInteropError, match="token_dim 8 != the model's emb_dim 16"):
    peft_io.import_peft(str(tmp_path / "a"), other)
  with pytest.raises(peft_io.PeftInteropError, match=r"shape \(3, 16\); expected \[L, 8\]"):
    peft_io.export_peft(str(tmp_path / "b"), "prompt", {"prompt": np.zeros((3, 16))}, config)
