"""The inference form of a trained run's parameters, as the exporters and prompt consumers need it.

    name, tree = inference_trainable(run)   # XPrompt: pruning masks folded in; prefix: MLP folded into prefixes
    prompt = single_prompt(run)             # [L, D] for prompt tuning and XPrompt, a clear error otherwise

`run` is a `xprompt_jax.training.restore.Run` (or anything with `.method`, `.config`, `.state`).
"""
from typing import Any

import numpy as np


def inference_trainable(run) -> tuple[str, dict[str, Any]]:
  """(method name, trainable tree in inference form) of a loaded run."""
  method, trainable = run.method, run.state["trainable"]
  aux = run.state.get("aux") or {}
  if method.name == "xprompt":
    from xprompt_jax.methods.xprompt import MASKS_KEY
    return method.name, method.export(trainable, run.config, masks=aux.get(MASKS_KEY))
  return method.name, method.export(trainable, run.config)


def single_prompt(run, what: str = "this operation") -> np.ndarray:
  """The one `[L, D]` prompt of a prompt-tuning or XPrompt run (masks applied)."""
  name, tree = inference_trainable(run)
  if name not in ("prompt", "xprompt") or "prompt" not in tree:
    raise ValueError(f"{what} needs a prompt-tuning or XPrompt run (one [L, D] prompt); the run's method is "
                     f"{name!r} with parameters {sorted(tree)}")
  return np.asarray(tree["prompt"], np.float32)


def parse_named_sources(specs) -> dict[str, str]:
  """`["rte=/runs/rte", "/runs/cb"]` -> `{"rte": "/runs/rte", "cb": "/runs/cb"}` (unnamed: the folder/file name)."""
  import os
  out = {}
  for spec in specs:
    name, sep, source = spec.partition("=")
    if not sep:
      name, source = os.path.splitext(os.path.basename(os.path.normpath(spec)))[0], spec
    if not name or not source:
      raise ValueError(f"prompt source {spec!r}: expected NAME=PATH or PATH")
    if name in out:
      raise ValueError(f"prompt name {name!r} is given twice ({out[name]} and {source}); name them NAME=PATH")
    out[name] = source
  return out


def load_prompt(source: str, step: str = "latest"):
  """(prompt [L, D], frozen_ref or None) from a run's model_dir (gin-bound model and method), a PEFT
  prompt-tuning adapter folder, or a google-research/prompt-tuning prompt (.npy, numpy or T5X checkpoint)."""
  import os
  from xprompt_jax.interop import peft as peft_io
  from xprompt_jax.interop import t5x_prompt
  if os.path.isdir(os.path.join(source, "checkpoints")):
    from xprompt_jax.training import checkpointing
    from xprompt_jax.training import restore
    try:
      run = restore.load_run(source, step)
    except checkpointing.FrozenModelMismatchError as e:
      raise ValueError(f"the run in {source} was trained on another base model than the gin-configured one: "
                       f"{e}") from e
    return single_prompt(run, f"the run in {source}"), run.frozen_ref
  if os.path.isfile(os.path.join(source, peft_io.CONFIG_NAME)):
    fields, tensors = peft_io.read_adapter(source)
    if fields.get("peft_type") != "PROMPT_TUNING":
      raise ValueError(f"{source}: a {fields.get('peft_type')} adapter is not one [L, D] prompt")
    return tensors["prompt_embeddings"][:int(fields["num_virtual_tokens"])], None
  return t5x_prompt.read_prompt(source), None
