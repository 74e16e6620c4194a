"""XPrompt's pure pieces and its stage files: pruning-ratio tags, masks and prompts on disk, rewinding, the
number of steps per stage, the ratios a sweep chooses and the source prompt of XPrompt Transfer. `pipelines.xprompt`
runs the procedure with them (and re-exports them)."""
import math
import os
from typing import Optional

import jax.numpy as jnp
import numpy as np

from xprompt_jax.methods.xprompt import XPromptMasks, active_pieces


def ratio_tag(ratio: float) -> str:
  return f"r{ratio:.2f}"


# ----------------------------------------------------------------------------------------------------------------------
# Files.


def save_masks(path: str, masks: XPromptMasks) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp.npz"
  np.savez(tmp, token=np.asarray(masks.token), piece=np.asarray(masks.piece))
  os.replace(tmp, path)


def load_masks(path: str) -> XPromptMasks:
  with np.load(path) as f:
    return XPromptMasks(token=jnp.asarray(f["token"]), piece=jnp.asarray(f["piece"]))


def save_array(path: str, array: np.ndarray) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp.npy"
  np.save(tmp, np.asarray(array))
  os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------------------------------
# Pure pieces of the algorithm.


def rewind(pt_prompt: np.ndarray, masks: XPromptMasks) -> np.ndarray:
  """The post-PT prompt on the surviving entries (bit-exact copies) and 0 on the pruned ones."""
  pt_prompt = np.asarray(pt_prompt)
  length, emb_dim = pt_prompt.shape
  keep = np.repeat(active_pieces(masks), emb_dim // np.shape(masks.piece)[1], axis=1)
  if keep.shape != pt_prompt.shape:
    raise ValueError(f"rewind: masks of {np.shape(masks.piece)} pieces do not fit a prompt of shape {pt_prompt.shape}")
  return np.where(keep, pt_prompt, np.zeros((), pt_prompt.dtype))


def kept_counts(masks: XPromptMasks) -> dict[str, int]:
  """Surviving tokens (with at least one active piece), pieces, and prompt scalars."""
  active = active_pieces(masks)
  return {"kept_tokens": int(np.count_nonzero(active.any(axis=1))), "kept_pieces": int(np.count_nonzero(active)),
          "total_tokens": int(active.shape[0]), "total_pieces": int(active.size)}


def choose_ratios(sweep: dict[float, float], num: int) -> list[float]:
  """The `num` ratios with the best metric, best first; equal metrics prefer the larger ratio (smaller prompt)."""
  return sorted(sweep, key=lambda r: (-sweep[r], -r))[:num]


def best_per_variant(rows) -> dict[str, dict]:
  """{variant: its best row} of a run's report rows (the pruned-only points left out): the highest metric, equal
  metrics preferring the larger ratio (smaller prompt), as `choose_ratios` does."""
  best: dict[str, dict] = {}
  for row in rows:
    if row["variant"] == "pruned_only":
      continue
    held = best.get(row["variant"])
    if held is None or (row["metric"], row["ratio"]) > (held["metric"], held["ratio"]):
      best[row["variant"]] = row
  return best


def stage_steps(num_epochs: Optional[float], num_examples: int, batch_size: int, default: int) -> int:
  """ceil(num_epochs · N / batch) training steps, or `default` without `num_epochs`."""
  if num_epochs is None:
    return default
  return max(1, math.ceil(num_epochs * num_examples / batch_size))


def load_transfer(source_dir: str, length: int, emb_dim: int, pieces: int) -> tuple[np.ndarray, XPromptMasks]:
  """A finished source run's final prompt and masks (its `report/`), checked against this run's prompt shape."""
  prompt_path = os.path.join(source_dir, "report", "final_prompt.npy")
  masks_path = os.path.join(source_dir, "report", "final_masks.npz")
  for path in (prompt_path, masks_path):
    if not os.path.exists(path):
      raise FileNotFoundError(f"XPrompt transfer: {path} does not exist; transfer_from must be the model_dir of a "
                              "finished xprompt run")
  prompt = np.load(prompt_path)
  if prompt.shape != (length, emb_dim):
    raise ValueError(f"XPrompt transfer: the source prompt {prompt_path} has shape {prompt.shape}, but this run's "
                     f"prompt is [{length}, {emb_dim}] (XPrompt.length={length}, emb_dim={emb_dim}); transfer needs "
                     "the same prompt length and model width")
  masks = load_masks(masks_path)
  if np.shape(masks.piece) != (length, pieces):
    raise ValueError(f"XPrompt transfer: the source masks {masks_path} have piece shape {np.shape(masks.piece)}; "
                     f"this run needs ({length}, {pieces}) (XPrompt.pieces={pieces})")
  return prompt, masks
