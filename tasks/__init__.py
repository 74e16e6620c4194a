"""SeqIO tasks and mixtures, registered on import: SuperGLUE, GLUE, QA, NLG, other classification, MPT's extra
source tasks, then mixtures.

Every task reads local files under `<shared>/data` or TFDS as `XPROMPT_DATA_SOURCE` / `sources.set_data_source`
selects (see `sources`); `get_task_or_mixture(name)` suggests the closest names for a typo.
"""
from xprompt_jax.tasks import superglue  # noqa: F401  (registers)
from xprompt_jax.tasks import glue  # noqa: F401
from xprompt_jax.tasks import qa  # noqa: F401
from xprompt_jax.tasks import nlg  # noqa: F401
from xprompt_jax.tasks import others  # noqa: F401
from xprompt_jax.tasks import mpt_extra  # noqa: F401  (after others: reuses its classification tasks)
from xprompt_jax.tasks import mixtures  # noqa: F401  (after qa, mpt_extra: mpt_source_6/12 use them)
from xprompt_jax.tasks import variants  # noqa: F401  (after superglue, glue: sentinel and transfer variants)
from xprompt_jax.tasks.mixtures import make_mixture
from xprompt_jax.tasks.registry_utils import get_task_or_mixture
from xprompt_jax.tasks.sources import describe_source, set_data_source

__all__ = ["describe_source", "get_task_or_mixture", "make_mixture", "set_data_source"]
