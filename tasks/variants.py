"""Task variants that Lester et al.'s design sweeps and transfer tables train and evaluate on.

* `sentinel_<task>` (the "span corruption + sentinel" objective of Lester et al. 2021, Fig. 3: "prepend all
  downstream targets with a sentinel"): `<task>` with `<extra_id_0> ` put in front of every target text before
  tokenizing, which T5's vocabulary encodes as the sentinel id followed by the target's own ids, exactly the shape of
  a span-corruption target; the postprocessor strips a leading sentinel from the decoded text before the task's own
  postprocessor runs, and rank classification scores each label word behind the sentinel.
* `taskless_glue_<target>_from_<source>_v002` (google-research/prompt-tuning's `glue_transfer` tasks, QQP <-> MRPC):
  the target's validation set in its own taskless format, the decoded answer read in the source's label words
  (`duplicate` -> `equivalent`) and scored with the target's metrics, so a prompt trained on the source is
  evaluated zero-shot on the target; rank classification scores the source's words.

`label_candidates` (evaluation/labels.py) reads the candidates of the wrapped postprocessor through
`candidates_of`, so rank classification keeps working on every variant.
"""
import functools
import re
from typing import Any, Callable, Mapping, Optional, Sequence

import seqio
import tensorflow as tf

from xprompt_jax import variant_names
from xprompt_jax.tasks import registry_utils as ru

SENTINEL = "<extra_id_0>"
_LEADING_SENTINEL = re.compile(r"^\s*" + re.escape(SENTINEL) + r"\s?")
# (source, target) -> {source label word: target label word}, as prompt-tuning's qqp_to_mrpc / mrpc_to_qqp.
TRANSLATIONS = {
    ("qqp", "mrpc"): {"duplicate": "equivalent", "not_duplicate": "not_equivalent"},
    ("mrpc", "qqp"): {"equivalent": "duplicate", "not_equivalent": "not_duplicate"},
}


@seqio.map_over_dataset
def prepend_sentinel(example: Mapping[str, Any], key: str = "targets") -> dict:
  """`<extra_id_0> ` + the target text (tokenized: the sentinel id, then the target's own ids)."""
  example = dict(example)
  example[key] = tf.strings.join([SENTINEL + " ", example[key]])
  return example


def strip_sentinel(output: Any, example: Optional[Mapping[str, Any]] = None, is_target: bool = False,
                   inner: Optional[Callable] = None):
  """The decoded text without its leading sentinel, through the task's own postprocessor `inner`."""
  text = _LEADING_SENTINEL.sub("", ru.as_text(output), count=1)
  return inner(text, example=example, is_target=is_target) if inner else text


def translate_labels(output: Any, example: Optional[Mapping[str, Any]] = None, is_target: bool = False,
                     mapping: Mapping[str, str] = (), inner: Optional[Callable] = None):
  """A prediction in the source task's label words mapped to the target's (targets are the target's already)."""
  text = ru.as_text(output)
  if not is_target:
    text = dict(mapping).get(text, text)
  return inner(text, example=example, is_target=is_target) if inner else text


def candidates_of(fn: Callable, inner_candidates: Callable[[Callable], Optional[list]]) -> Optional[list]:
  """The label words a variant's postprocessor `fn` reads (None when `fn` is no variant wrapper): the wrapped
  postprocessor's words (`inner_candidates(inner)`), behind the sentinel or in the source task's words."""
  if not isinstance(fn, functools.partial) or fn.func not in (strip_sentinel, translate_labels):
    return None
  words = inner_candidates(fn.keywords.get("inner"))
  if not words:
    return None
  if fn.func is strip_sentinel:
    return [f"{SENTINEL} {w}" for w in words]
  back = {target: source for source, target in dict(fn.keywords["mapping"]).items()}
  return [back.get(w, w) for w in words]


def _before_tokenize(preprocessors: Sequence[Any], step: Any) -> list:
  out = list(preprocessors)
  at = out.index(seqio.preprocessors.tokenize)
  return [*out[:at], step, *out[at:]]


def add_sentinel_task(name: str) -> seqio.Task:
  """Registers `sentinel_<name>`: task `name` with every target behind `<extra_id_0>` (see the module doc)."""
  task = seqio.get_mixture_or_task(name)
  fn = ru.postprocess_fn_of(task)
  rank = fn is ru.rank_classification_postprocessor  # A `_rank` task's targets are its candidates: no decoding.
  new = ru.SENTINEL_PREFIX + name
  seqio.TaskRegistry.remove(new)
  return seqio.TaskRegistry.add(
      new, source=task.source, preprocessors=_before_tokenize(task.preprocessors, prepend_sentinel),
      output_features=task.output_features,
      postprocess_fn=fn if rank else functools.partial(strip_sentinel, inner=fn),
      metric_fns=list(task.metric_fns))


def add_transfer_task(source: str, target: str) -> seqio.Task:
  """Registers `taskless_glue_<target>_from_<source>_v002`, evaluated on its validation split (module doc)."""
  task = seqio.get_mixture_or_task(f"{ru.TASKLESS_PREFIX}glue_{target}_v002")
  new = variant_names.transfer_task_name(source, target)
  seqio.TaskRegistry.remove(new)
  fn = functools.partial(translate_labels, mapping=tuple(TRANSLATIONS[(source, target)].items()),
                         inner=ru.postprocess_fn_of(task))
  return seqio.TaskRegistry.add(new, source=task.source, preprocessors=list(task.preprocessors),
                                output_features=task.output_features, postprocess_fn=fn,
                                metric_fns=list(task.metric_fns))


def register() -> None:
  """The sentinel variants of the taskless SuperGLUE tasks and the QQP <-> MRPC transfer tasks (idempotent)."""
  from xprompt_jax.tasks import superglue
  for name in superglue.TASKLESS_TASK_NAMES:
    add_sentinel_task(name)
  for source, target in TRANSLATIONS:
    add_transfer_task(source, target)


register()
