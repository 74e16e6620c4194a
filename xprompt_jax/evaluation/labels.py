"""The label words of a classification task, read from its registered postprocessor, and their token rows.

Rank classification scores each label word as a target for the same input. The words come from the task itself:
a `registry_utils.label_postprocessor(label_classes)` partial carries them (`label_classes`), and postprocessors
that map label words but are not such partials are listed in `EXPLICIT_LABELS` (MultiRC's `False`/`True`, whose
postprocessor also attaches the question group). Tasks whose postprocessor maps free text (ReCoRD and SQuAD
answers, WSC referents, STS-B numbers) or whose examples each carry one candidate (`*_rank` variants) have no
label candidates: `label_candidates` returns None for them. A task variant (`tasks.variants`: targets behind a
sentinel, labels translated from another task) has the candidates of the postprocessor it wraps, as it reads them.
"""
import functools
from typing import Callable, Optional, Sequence, Union

import numpy as np
import seqio

from xprompt_jax.tasks import registry_utils as ru
from xprompt_jax.tasks import variants

# Postprocessors that map a fixed set of label words but are not `label_postprocessor` partials.
EXPLICIT_LABELS: dict[Callable, tuple[str, ...]] = {
    ru.multirc_postprocessor: ("False", "True"),
}


def task_postprocessor(task: seqio.Task) -> Optional[Callable]:
  """The callable a seqio Task was registered with as `postprocess_fn` (None when it has none)."""
  return ru.postprocess_fn_of(task)


def label_candidates(task: Union[str, seqio.Task]) -> Optional[list[str]]:
  """The label words of a classification task in class-id order, or None when it is not one.

  `task` is a registered task name or a `seqio.Task`; an unknown name raises listing the closest names.
  """
  if isinstance(task, str):
    task = ru.get_task_or_mixture(task)
  if not isinstance(task, seqio.Task):
    raise TypeError(f"label_candidates needs a seqio.Task (or its name), got {type(task).__name__} "
                    f"{getattr(task, 'name', '')!r}; evaluate a mixture's tasks one by one")
  return _candidates(task_postprocessor(task))


def _candidates(fn: Optional[Callable]) -> Optional[list[str]]:
  """The label words postprocessor `fn` maps (through the wrappers of `tasks.variants`), None for free text."""
  wrapped = variants.candidates_of(fn, _candidates)
  if wrapped is not None:
    return wrapped
  if isinstance(fn, functools.partial) and fn.func is ru.string_label_to_class_id:
    words = fn.keywords.get("label_classes", ())
    return list(words) if words else None
  try:
    explicit = EXPLICIT_LABELS.get(fn)
  except TypeError:  # An unhashable postprocessor cannot be in the table.
    explicit = None
  return list(explicit) if explicit else None


def tokenize_candidates(words: Sequence[str], vocabulary: seqio.Vocabulary, eos_id: int = 1) -> np.ndarray:
  """`[K, T]` int32 token rows of the label words, each ending in EOS and zero-padded to the longest."""
  if not words:
    raise ValueError("tokenize_candidates: no label words given")
  rows = []
  for w in words:
    ids = list(vocabulary.encode(w))
    if not ids:
      raise ValueError(f"label word {w!r} encodes to no tokens")
    rows.append(ids + [eos_id])
  out = np.zeros((len(rows), max(len(r) for r in rows)), np.int32)
  for i, r in enumerate(rows):
    out[i, :len(r)] = r
  return out
