"""google-research/prompt-tuning prompts on disk: its `.npy` files and the prompt inside its T5X checkpoints.

Conventions of that codebase (prompt_tuning/train/utils.py, scripts/extract_variable.py, configs/prompts/*.gin):

* In a T5X checkpoint the prompt is the parameter `target/encoder/prompt/prompt/prompt` ([length, embed]); the
  frozen model's parameters sit beside it under their usual T5X names (`token_embedder/embedding`, ...).
* Its `prompt_utils.Checkpointer` also writes every prompt parameter with `np.save` to
  `<model_dir>/numpy_checkpoints/checkpoint_<step>/encoder.prompt.prompt.prompt` (the '/'-path with dots, and no
  `.npy` suffix because it saves through a file object).
* `extract_variable.py --variable_path=target/encoder/prompt/prompt/prompt` gives a plain `.npy`; such files are
  loaded for evaluation with `configs/prompts/from_file.gin` (`PROMPT_FILE=...`).

`read_prompt(path)` takes any of those; `write_npy`, `write_numpy_checkpoint` and `write_t5x_checkpoint` write
them, so a prompt trained here can be evaluated there and vice versa. Its prompt is our prompt-tuning
`{"prompt": [L, D]}` unchanged: both prepend it to the embedded encoder input and cover it with the attention mask
and the relative positions of the concatenated sequence.
"""
import os
import re
from typing import Any, Mapping, Optional

import numpy as np

from xprompt_jax.checkpoints import storage
from xprompt_jax.checkpoints import t5x
from xprompt_jax.checkpoints import tree as tree_lib

PROMPT_PARAM = "encoder/prompt/prompt/prompt"
NUMPY_DIR = "numpy_checkpoints"
_STEP_DIR = re.compile(r"^checkpoint_(\d+)$")


def numpy_file_name(variable: str = PROMPT_PARAM) -> str:
  """The file name prompt-tuning's Checkpointer gives a parameter: its '/'-path with dots, no suffix."""
  return variable.strip("/").replace("/", ".")


def _normalize_variable(variable: str) -> str:
  return re.sub(r"^target/", "", variable.strip("/"))


def _load_npy(path: str) -> np.ndarray:
  try:
    with open(path, "rb") as f:
      return np.load(f, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise ValueError(f"{path} is not a numpy (.npy) prompt file: {e}") from e


def latest_numpy_checkpoint(model_dir: str) -> str:
  """`<model_dir>/numpy_checkpoints/checkpoint_<largest step>`; a clear error when there is none."""
  folder = os.path.join(model_dir, NUMPY_DIR) if os.path.basename(model_dir.rstrip("/")) != NUMPY_DIR else model_dir
  steps = sorted((int(m.group(1)), name) for name in (os.listdir(folder) if os.path.isdir(folder) else [])
                 if (m := _STEP_DIR.match(name)))
  if not steps:
    raise FileNotFoundError(f"{folder} holds no checkpoint_<step> folders of prompt-tuning numpy checkpoints")
  return os.path.join(folder, steps[-1][1])


def read_prompt(path: str, variable: str = PROMPT_PARAM) -> np.ndarray:
  """The prompt `[L, D]` (float32) stored at `path` in any of prompt-tuning's forms.

  `path` is a `.npy` file, a numpy-checkpoint file, a `numpy_checkpoints/checkpoint_<step>` folder, a model_dir
  with `numpy_checkpoints/` (latest step), or a T5X checkpoint (directory or legacy msgpack file), from which
  `variable` (default `encoder/prompt/prompt/prompt`, a leading `target/` is accepted) is read.
  """
  path = str(path)
  variable = _normalize_variable(variable)
  if os.path.isdir(path) and not storage.is_file(storage.join(path, t5x.MSGPACK_NAME)):
    if os.path.isdir(os.path.join(path, NUMPY_DIR)) or not os.path.exists(os.path.join(path, numpy_file_name(
        variable))):
      if not _STEP_DIR.match(os.path.basename(path.rstrip("/"))):
        path = latest_numpy_checkpoint(path)
    file = os.path.join(path, numpy_file_name(variable))
    if not os.path.exists(file):
      raise FileNotFoundError(f"{path} has no {numpy_file_name(variable)} (the numpy checkpoint of {variable}); "
                              f"it holds: {sorted(os.listdir(path))}")
    return _as_prompt(_load_npy(file), file)
  if not storage.exists(path):
    raise FileNotFoundError(f"prompt file or checkpoint {path} does not exist")
  if storage.is_file(path):
    with open(path, "rb") as f:
      magic = f.read(6)
    if magic == b"\x93NUMPY":
      return _as_prompt(_load_npy(path), path)
  return _as_prompt(_read_t5x_variable(path, variable), f"{path}:{variable}")


def _read_t5x_variable(path: str, variable: str) -> np.ndarray:
  file, leaves = t5x._open(path)  # pylint: disable=protected-access  (opens tensorstores, reads nothing)
  key = tuple(variable.split("/"))
  if key not in leaves:
    prompts = sorted("/".join(p) for p in leaves if "prompt" in "/".join(p))
    raise KeyError(f"{file} has no parameter {variable}; prompt-like parameters there: {prompts or 'none'}")
  leaf = leaves[key]
  return np.asarray(leaf.read().result() if hasattr(leaf, "read") else leaf)


def _as_prompt(array: np.ndarray, source: str) -> np.ndarray:
  if array.ndim != 2:
    raise ValueError(f"{source} holds an array of shape {array.shape}; a prompt is [length, embed]")
  return np.asarray(array, np.float32)


def write_npy(path: str, prompt) -> str:
  """Writes `prompt` [L, D] as a float32 `.npy` (what prompt-tuning's from_file.gin `PROMPT_FILE` reads)."""
  prompt = _as_prompt(np.asarray(prompt), "prompt")
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  with open(path, "wb") as f:  # A file object: no '.npy' is appended to the name given.
    np.save(f, prompt)
  return path


def write_numpy_checkpoint(model_dir: str, step: int, prompt, variable: str = PROMPT_PARAM) -> str:
  """Writes `<model_dir>/numpy_checkpoints/checkpoint_<step>/encoder.prompt.prompt.prompt`; returns the file."""
  folder = os.path.join(model_dir, NUMPY_DIR, f"checkpoint_{int(step)}")
  return write_npy(os.path.join(folder, numpy_file_name(_normalize_variable(variable))), prompt)


def write_t5x_checkpoint(path: str, prompt, frozen_params: Mapping[str, Any], step: int = 0) -> str:
  """A T5X checkpoint directory holding the frozen model and the prompt at `encoder/prompt/prompt/prompt`.

  That is the layout of a checkpoint saved by prompt-tuning's training, which its `prompt_eval.gin` /
  `prompt_infer.gin` restore whole. `frozen_params` is the frozen T5's unscanned T5X tree.
  """
  prompt = _as_prompt(np.asarray(prompt), "prompt")
  flat = tree_lib.flatten(tree_lib.to_numpy(frozen_params))
  if any(key.startswith("encoder/prompt/") for key in flat):
    raise ValueError("frozen_params already hold an encoder/prompt/ subtree; pass the frozen model's parameters")
  emb = flat.get("token_embedder/embedding")
  if emb is not None and emb.shape[1] != prompt.shape[1]:
    raise ValueError(f"prompt of shape {prompt.shape} does not match the frozen model's token_embedder/embedding "
                     f"{tuple(emb.shape)}: the prompt width must equal emb_dim")
  flat[PROMPT_PARAM] = prompt
  t5x.write_t5x(tree_lib.unflatten(flat), path, step=step)
  return path


def prompt_from_trainable(trainable: Mapping[str, Any], method_name: Optional[str] = None) -> np.ndarray:
  """The `[L, D]` prompt of a prompt-tuning trainable tree; other methods have no single prompt to hand over."""
  if "prompt" not in trainable or np.ndim(trainable["prompt"]) != 2:
    what = f"method {method_name!r}" if method_name else "this trainable tree"
    raise ValueError(f"{what} has no single [L, D] 'prompt' (it has {sorted(trainable)}); google-research/"
                     "prompt-tuning prompts are plain prompt-tuning prompts (export method 'prompt' or 'xprompt')")
  return np.asarray(trainable["prompt"], np.float32)
