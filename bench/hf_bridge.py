"""The Hugging Face side of the benchmarks: the same random weights in `transformers` + `peft`, and torch batches.

Our parameters go through the HF converter (`xprompt_jax.checkpoints.hf.write_hf`) into a directory that
`T5ForConditionalGeneration.from_pretrained` loads, so both frameworks compute with identical weights. Needs the
`[bench]` extra (torch, transformers, peft); nothing in the package imports this module.
"""
import tempfile
from typing import Mapping

import numpy as np

from xprompt_jax.checkpoints.hf import write_hf
from xprompt_jax.models.config import T5Config


def hf_model(params, config: T5Config):
  """`T5ForConditionalGeneration` (fp32, dropout 0) holding `params` (our T5X-named tree)."""
  import torch
  from transformers import T5ForConditionalGeneration
  with tempfile.TemporaryDirectory() as tmp:
    write_hf(params, tmp, config.replace(dropout_rate=0.0))
    model = T5ForConditionalGeneration.from_pretrained(tmp, torch_dtype=torch.float32)
  return model


def peft_prompt_model(model, prompt: np.ndarray, encoder_only: bool = True):
  """PEFT prompt tuning of `model` with its prompt set to `prompt` [P, D].

  `encoder_only=True` sets `num_transformer_submodules=1` (Lester et al.: the prompt only precedes the encoder
  input, as ours). PEFT's default for seq2seq models is 2: it allocates 2 x P x D and also prepends P positions to
  the decoder input.
  """
  import torch
  from peft import PromptTuningConfig, TaskType, get_peft_model
  p, d = prompt.shape
  cfg = PromptTuningConfig(task_type=TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=p,
                           **({"num_transformer_submodules": 1} if encoder_only else {}))
  peft_model = get_peft_model(model, cfg)
  emb = peft_model.prompt_encoder["default"].embedding
  with torch.no_grad():
    weight = emb.weight
    weight.copy_(torch.from_numpy(np.tile(np.asarray(prompt, np.float32), (weight.shape[0] // p, 1))))
  del d
  return peft_model


def peft_prefix_model(model, length: int, hidden_dim: int):
  """PEFT prefix tuning (with the reparametrisation MLP); raises whatever PEFT raises for this model."""
  from peft import PrefixTuningConfig, TaskType, get_peft_model
  cfg = PrefixTuningConfig(task_type=TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=length, prefix_projection=True,
                           encoder_hidden_size=hidden_dim)
  return get_peft_model(model, cfg)


def torch_batch(batch: Mapping[str, np.ndarray]) -> dict:
  """HF inputs from a T5X batch: ids, attention mask, labels (-100 where the loss weight is 0).

  HF shifts the labels right itself (decoder start id 0), which gives T5X's `decoder_input_tokens`.
  """
  import torch
  enc = np.asarray(batch["encoder_input_tokens"])
  tgt = np.asarray(batch["decoder_target_tokens"])
  weights = np.asarray(batch.get("decoder_loss_weights", tgt > 0))
  labels = np.where(weights > 0, tgt, -100)
  return {"input_ids": torch.from_numpy(enc.astype(np.int64)),
          "attention_mask": torch.from_numpy((enc > 0).astype(np.int64)),
          "labels": torch.from_numpy(labels.astype(np.int64))}


def torch_train_step(peft_model, optimizer, inputs: dict) -> float:
  """One optimizer step of PEFT's model on `inputs`; returns the loss (HF's mean over label tokens)."""
  optimizer.zero_grad(set_to_none=True)
  loss = peft_model(**inputs).loss
  loss.backward()
  optimizer.step()
  return float(loss.detach())


def trainable_numel(peft_model) -> int:
  return sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
