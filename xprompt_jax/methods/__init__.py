"""xprompt_jax.methods: the parametrisations (prompt, prefix, MPT, XPrompt) behind one interface (`base.Method`).

    method = get_method("mpt", num_tasks=6, length=100)   # or bound by gin: get_method.name = 'mpt'
"""
import gin

from xprompt_jax.methods.base import Method, count_params
from xprompt_jax.methods.mpt import MPT, check_task_ids, target_init_from_sources
from xprompt_jax.methods.prefix import PrefixTuning
from xprompt_jax.methods.prompt import PromptTuning
from xprompt_jax.methods.xprompt import XPrompt, XPromptMasks, mask_importance, ones_masks, prune_masks

METHODS = {"prompt": PromptTuning, "prefix": PrefixTuning, "mpt": MPT, "xprompt": XPrompt}


@gin.configurable
def get_method(name: str = gin.REQUIRED, **kwargs) -> Method:
  """The method registered as `name`, built with `kwargs` (fields not given come from gin bindings/defaults)."""
  if name not in METHODS:
    raise ValueError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}")
  return METHODS[name](**kwargs)


__all__ = ["METHODS", "MPT", "Method", "PrefixTuning", "PromptTuning", "XPrompt", "XPromptMasks", "check_task_ids",
           "count_params", "get_method", "mask_importance", "ones_masks", "prune_masks", "target_init_from_sources"]
