"""Imported prompts meet the gin-bound method: reading a foreign prompt and checking it fits, naming the bindings.

    name, fields, trainable = read_trainable("peft", "/tmp/adapter", config)          # or "t5x", a prompt file
    check_against_method(method, name, fields, trainable, method.abstract_trainable(config))
"""
import jax
import numpy as np

SOURCES = ("peft", "t5x")
_CLASSES = {"prompt": "PromptTuning", "mpt": "MPT", "prefix": "PrefixTuning"}
_COMPATIBLE = {"prompt": ("prompt", "xprompt"), "mpt": ("mpt",), "prefix": ("prefix",)}


def read_trainable(source: str, path: str, config, variable: str = "encoder/prompt/prompt/prompt",
                   allow_inexact: bool = False) -> tuple[str, dict, dict]:
  """(method name, method fields, trainable tree) of the prompt at `path`."""
  if source not in SOURCES:
    raise ValueError(f"unknown prompt source kind {source!r}; known: {', '.join(SOURCES)}")
  if source == "peft":
    from xprompt_jax.interop import peft as peft_io
    return peft_io.import_peft(path, config, allow_inexact)
  from xprompt_jax.interop import t5x_prompt
  prompt = t5x_prompt.read_prompt(path, variable)
  return "prompt", {"length": prompt.shape[0]}, {"prompt": prompt}


def check_against_method(method, name: str, fields: dict, trainable: dict, abstract: dict) -> None:
  """Raises, naming the gin bindings to set, when the imported tree does not fit the gin-bound method."""
  compatible = _COMPATIBLE[name]
  cls = type(method).__name__ if method.name in compatible else _CLASSES[name]
  wanted = ", ".join(f"{cls}.{k} = {v!r}" for k, v in fields.items())
  if method.name not in compatible:
    raise ValueError(f"the imported parameters are for method {name!r} ({wanted}) but gin binds get_method.name = "
                     f"{method.name!r}; bind get_method.name = {name!r}")
  got, want = _shapes(trainable), _shapes(abstract)
  if got != want:
    diff = [f"{k}: imported {got.get(k)} vs method {want.get(k)}" for k in sorted(set(got) | set(want))
            if got.get(k) != want.get(k)]
    raise ValueError(f"the imported parameters do not fit the gin-bound {type(method).__name__}: " + "; ".join(diff)
                     + f". Bind: {wanted}")


def _shapes(tree) -> dict[str, tuple]:
  return {"/".join(str(k.key) for k in path): tuple(np.shape(leaf))
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}
