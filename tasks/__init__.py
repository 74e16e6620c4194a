"""SeqIO tasks and mixtures, registered on import: SuperGLUE, GLUE, QA, NLG, other classification, then mixtures.

Every task reads local files under `<shared>/data` or TFDS as `XPROMPT_DATA_SOURCE` / `sources.set_data_source`
selects (see `sources`); `get_task_or_mixture(name)` suggests the closest names for a typo.
"""
import importlib
import importlib.util

from xprompt_jax.tasks import superglue  # noqa: F401  (registers)
from xprompt_jax.tasks import glue  # noqa: F401

# Transitional: qa/nlg/others are being written; mixtures need qa's SQuAD task.
_PENDING = [m for m in ("qa", "nlg", "others") if importlib.util.find_spec(f"xprompt_jax.tasks.{m}") is None]
for _m in ("qa", "nlg", "others"):
  if _m not in _PENDING:
    importlib.import_module(f"xprompt_jax.tasks.{_m}")
if "qa" not in _PENDING:
  from xprompt_jax.tasks import mixtures  # noqa: F401
from xprompt_jax.tasks.registry_utils import get_task_or_mixture  # noqa: E402
from xprompt_jax.tasks.sources import describe_source, set_data_source  # noqa: E402

__all__ = ["describe_source", "get_task_or_mixture", "set_data_source"]
