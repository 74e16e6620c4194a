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
