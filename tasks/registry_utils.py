"""Shared pieces for registering text-to-text classification tasks: T5's GLUE-style text format, label
postprocessors, rank classification (preprocessor and postprocessor), and name lookup with suggestions.

`rank_classification` is implemented here because the installed seqio (0.0.20) does not ship one; it follows the
T5 contract: every candidate label becomes an example `{"idx": [example_idx, option_idx], "inputs", "targets",
"is_correct"}`, and the target postprocessor yields `(example_idx, is_correct)` for
`xprompt_jax.evaluation.metrics.rank_classification`.
"""
import difflib
import functools
from typing import Any, Callable, Mapping, Optional, Sequence

import seqio
import tensorflow as tf

from xprompt_jax.tasks import vocab as vocab_lib
from xprompt_jax.variant_names import SENTINEL_PREFIX, TASKLESS_PREFIX, VARIANT_PREFIXES, base_task_name  # noqa: F401

RANK_SUFFIX = "_rank"


def text_preprocessors() -> list:
  """The token-level steps after a text preprocessor (T5's standard tail)."""
  return [seqio.preprocessors.tokenize, seqio.CacheDatasetPlaceholder(), seqio.preprocessors.append_eos_after_trim]


def as_text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# ----------------------------------------------------------------------------------------------------------------------
# Text formats.


def glue_text(ds: tf.data.Dataset, benchmark_name: str, label_names: Sequence[str],
              feature_names: Optional[Sequence[str]] = None, id_key: Optional[str] = "idx",
              rekey: Optional[Mapping[str, str]] = None) -> tf.data.Dataset:
  """T5's GLUE/SuperGLUE format: `"<benchmark> <key1>: <v1> <key2>: <v2> ..."` -> label word.

  Keys default to the example's features other than `label`/`idx`, sorted (so SuperGLUE RTE reads
  `rte hypothesis: ... premise: ...`). `rekey` ({new name: feature}) renames features first, as T5's `rekey`
  preprocessor does for AX-b (`sentence1`/`sentence2` -> `premise`/`hypothesis`, then formatted as RTE). A label
  of -1 (unlabelled test rows) becomes `<unk>`. MultiRC drops its `<br>`/`<b>` markup and keeps `idx/paragraph`,
  `idx/question`, `idx/answer` for grouping; other tasks keep `idx`.
  """
  label_table = tf.constant(list(label_names))
  renamed = dict(rekey or {})

  def fn(x):
    if renamed:
      x = {**{k: v for k, v in x.items() if k not in renamed.values()}, **{new: x[old] for new, old in renamed.items()}}
    keys = list(feature_names) if feature_names else sorted(set(x).difference(["label", "idx"]))
    parts = [benchmark_name]
    for key in keys:
      parts += [f"{key}:", x[key]]
    joined = tf.strings.join(parts, separator=" ")
    label = tf.cast(x["label"], tf.int32)
    target = tf.cond(tf.equal(label, -1), lambda: tf.constant("<unk>"), lambda: tf.gather(label_table, label))
    ex = {}
    if benchmark_name == "multirc":
      joined = tf.strings.regex_replace(joined, "<br>", " ")
      joined = tf.strings.regex_replace(joined, "<(/)?b>", "")
      for k in ("paragraph", "question", "answer"):
        ex[f"idx/{k}"] = x["idx"][k]
    elif id_key:
      ex["idx"] = x[id_key]
    ex["inputs"] = joined
    ex["targets"] = target
    return ex

  return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def glue_preprocessor(benchmark_name: str, label_names: Sequence[str], feature_names: Optional[Sequence[str]] = None,
                      rekey: Optional[Mapping[str, str]] = None) -> Callable[[tf.data.Dataset], tf.data.Dataset]:
  return functools.partial(glue_text, benchmark_name=benchmark_name, label_names=tuple(label_names),
                           feature_names=tuple(feature_names) if feature_names else None, rekey=rekey)


# ----------------------------------------------------------------------------------------------------------------------
# Postprocessors (seqio signature: fn(output, example=None, is_target=False)).


def string_label_to_class_id(string_label: Any, example: Optional[Mapping[str, Any]] = None,
                             is_target: bool = False, label_classes: Sequence[str] = ()) -> int:
  """The index of a decoded label word in `label_classes`, -1 when it is none of them."""
  del example, is_target
  text = as_text(string_label)
  return list(label_classes).index(text) if text in label_classes else -1


def label_postprocessor(label_classes: Sequence[str]) -> Callable[..., int]:
  return functools.partial(string_label_to_class_id, label_classes=tuple(label_classes))


def string_to_float(string: Any, example: Optional[Mapping[str, Any]] = None, is_target: bool = False,
                    default: float = -1.0) -> float:
  """A decoded number (STS-B), `default` when it does not parse."""
  del example, is_target
  try:
    return float(as_text(string))
  except ValueError:
    return default


def multirc_postprocessor(string_label: Any, example: Optional[Mapping[str, Any]] = None,
                          is_target: bool = False) -> dict:
  """`{"group": question id, "value": 0/1/-1}` for `metrics.multirc_f1_em`."""
  del is_target
  out = {"value": string_label_to_class_id(string_label, label_classes=("False", "True"))}
  if example is not None:
    out["group"] = int(example["idx/question"])
  return out


def qa_postprocessor(answer: Any, example: Optional[Mapping[str, Any]] = None, is_target: bool = False):
  """Targets: every reference answer of the example (a list of str); predictions: the decoded string."""
  if is_target:
    return [as_text(a) for a in example["answers"]]
  return as_text(answer)


# ----------------------------------------------------------------------------------------------------------------------
# Rank classification.


def rank_classification(ds: tf.data.Dataset,
                        inputs_fn: Callable[[Mapping[str, tf.Tensor]], tf.Tensor],
                        targets_fn: Callable[[Mapping[str, tf.Tensor]], tf.Tensor],
                        is_correct_fn: Callable[[Mapping[str, tf.Tensor]], tf.Tensor],
                        mode: str = "eval") -> tf.data.Dataset:
  """One example per candidate: `{"idx": [example_idx, option_idx], "inputs", "targets", "is_correct"}`.

  `inputs_fn`/`targets_fn`/`is_correct_fn` return equally long 1-D tensors per raw example. Mode "eval" keeps every
  candidate (to score them), "train" only the correct ones, "fewshot_eval" keeps the candidates batched per example.
  """
  if mode not in ("train", "eval", "fewshot_eval"):
    raise ValueError(f"rank_classification mode must be 'train', 'eval' or 'fewshot_eval', got {mode!r}")

  def expand(i, ex):
    inputs, targets = inputs_fn(ex), targets_fn(ex)
    is_correct = tf.cast(is_correct_fn(ex), tf.bool)
    tf.debugging.assert_equal(tf.size(inputs), tf.size(targets), "inputs_fn and targets_fn sizes differ")
    tf.debugging.assert_equal(tf.size(is_correct), tf.size(targets), "is_correct_fn and targets_fn sizes differ")
    n = tf.size(is_correct)
    idx = tf.stack([tf.fill([n], tf.cast(i, tf.int32)), tf.range(n, dtype=tf.int32)], axis=1)
    return {"idx": idx, "inputs": inputs, "targets": targets, "is_correct": is_correct}

  ds = ds.enumerate().map(expand, num_parallel_calls=tf.data.AUTOTUNE)
  if mode != "fewshot_eval":
    ds = ds.unbatch()
  if mode == "train":
    ds = ds.filter(lambda ex: ex["is_correct"])
  return ds


def rank_over_labels(ds: tf.data.Dataset, label_names: Sequence[str], mode: str = "eval") -> tf.data.Dataset:
  """Rank classification of an already formatted text task: score each label word for the same inputs."""
  labels = tf.constant(list(label_names))
  n = len(label_names)
  return rank_classification(
      ds,
      inputs_fn=lambda ex: tf.fill([n], ex["inputs"]),
      targets_fn=lambda ex: labels,
      is_correct_fn=lambda ex: tf.equal(labels, ex["targets"]),
      mode=mode)


def rank_classification_postprocessor(output: Any, example: Optional[Mapping[str, Any]] = None,
                                      is_target: bool = False):
  """Targets: `(example_idx, is_correct)` for `metrics.rank_classification`; scores pass through."""
  if is_target:
    return (int(example["idx"][0]), bool(example["is_correct"]))
  return output


# ----------------------------------------------------------------------------------------------------------------------
# Registration.


def add_text_task(name: str, source: seqio.DataSource, preprocessor: Callable, *,
                  postprocess_fn: Optional[Callable] = None, metric_fns: Sequence[Callable] = (),
                  output_features: Optional[Mapping[str, seqio.Feature]] = None) -> seqio.Task:
  """Registers (replacing any previous one) a text-to-text task with the standard tokenize/EOS tail."""
  seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(
      name, source=source, preprocessors=[preprocessor, *text_preprocessors()],
      output_features=output_features or vocab_lib.DEFAULT_OUTPUT_FEATURES,
      postprocess_fn=postprocess_fn, metric_fns=list(metric_fns))


def add_rank_task(name: str, source: seqio.DataSource, preprocessor: Callable, label_names: Sequence[str], *,
                  score_metric_fns: Sequence[Callable],
                  output_features: Optional[Mapping[str, seqio.Feature]] = None) -> seqio.Task:
  """Registers `<name>_rank`: the same text format, one scored example per label word."""
  rank_name = name + RANK_SUFFIX
  seqio.TaskRegistry.remove(rank_name)
  return seqio.TaskRegistry.add(
      rank_name, source=source,
      preprocessors=[preprocessor, functools.partial(rank_over_labels, label_names=tuple(label_names)),
                     *text_preprocessors()],
      output_features=output_features or vocab_lib.DEFAULT_OUTPUT_FEATURES,
      postprocess_fn=rank_classification_postprocessor, metric_fns=list(score_metric_fns))


def postprocess_fn_of(task: seqio.Task) -> Optional[Callable]:
  """The callable `task` was registered with as `postprocess_fn` (`task.postprocess_fn` is the bound method that
  calls it: registering a variant with that would hide the label words rank classification reads)."""
  return getattr(task, "_postprocess_fn", None)


@seqio.map_over_dataset
def remove_first_text_token(example: Mapping[str, Any], key: str = "inputs") -> dict:
  """The inputs without their first word and its space (T5's task name, `rte hypothesis: ...` -> `hypothesis:
  ...`), as google-research/prompt-tuning's `remove_first_text_token` does for its `taskless_*` tasks."""
  example = dict(example)
  example[key] = tf.strings.regex_replace(example[key], r"^[^ ]* ", "", replace_global=False)
  return example


def add_taskless_task(name: str) -> seqio.Task:
  """Registers `taskless_<name>`: task `name` with the task name left out of the inputs (Lester et al. 2021, "task
  names prepended to inputs are omitted"; prompt-tuning's `taskless_super_glue_*`), the word removed right after
  the text is formatted, before tokenizing (so `inputs_pretokenized` is taskless too)."""
  task = seqio.get_mixture_or_task(name)
  first, *rest = task.preprocessors
  new = TASKLESS_PREFIX + name
  seqio.TaskRegistry.remove(new)
  return seqio.TaskRegistry.add(new, source=task.source, preprocessors=[first, remove_first_text_token, *rest],
                                output_features=task.output_features, postprocess_fn=postprocess_fn_of(task),
                                metric_fns=list(task.metric_fns))


# Training tasks that T5 evaluates on other tasks (its mixtures carry those at rate 0): MNLI on its matched and
# mismatched validation sets, WSC's `simple_train` (correct referents only, no validation split) on `simple_eval`.
EVALUATED_ON = {
    "glue_mnli_v002": ("glue_mnli_matched_v002", "glue_mnli_mismatched_v002"),
    "glue_mnli_v002" + RANK_SUFFIX: ("glue_mnli_matched_v002" + RANK_SUFFIX, "glue_mnli_mismatched_v002" + RANK_SUFFIX),
    "super_glue_wsc_v102_simple_train": ("super_glue_wsc_v102_simple_eval",),
}


def evaluation_tasks(name: str, split: Optional[str] = None) -> tuple[str, ...]:
  """The tasks a run trained on task `name` is evaluated on: `EVALUATED_ON[name]`, else `name` itself.

  Given `split`, a task that has that split itself is evaluated on it (MNLI's local-only `resplit_dev`); the
  mapping applies where it lacks it (MNLI and WSC `simple_train` have no `validation`). Mixtures map to
  themselves: T5's benchmark mixtures carry these evaluation tasks at rate 0 (`mixtures.make_mixture(eval_only=)`).
  """
  for prefix in VARIANT_PREFIXES:  # A variant is evaluated on the same variant of its base's evaluation tasks.
    if name.startswith(prefix):
      return tuple(prefix + t for t in evaluation_tasks(name.removeprefix(prefix), split))
  if name not in EVALUATED_ON:
    return (name,)
  if split is not None and split in (get_task_or_mixture(name).splits or ()):
    return (name,)
  return EVALUATED_ON[name]


def eval_only_tasks(tasks: Sequence[str]) -> tuple[str, ...]:
  """The evaluation tasks of `tasks` that are not among them (in order, once each): T5's rate-0 mixture tasks."""
  out = []
  for name in tasks:
    out += [t for t in evaluation_tasks(name) if t not in tasks and t not in out]
  return tuple(out)


def registered_names() -> list[str]:
  return sorted(set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names()))


class UnknownTaskError(KeyError):
  """A task or mixture name that is not registered (the message lists the closest registered names)."""

  def __str__(self):
    return str(self.args[0])


def unknown_name_error(name: str, n: int = 5) -> UnknownTaskError:
  names = registered_names()
  close = difflib.get_close_matches(name, names, n=n, cutoff=0.5)
  hint = f"closest registered names: {close}" if close else f"{len(names)} names are registered"
  return UnknownTaskError(f"No task or mixture named {name!r}; {hint}.")


def get_task_or_mixture(name: str) -> seqio.DatasetProviderBase:
  """The registered task or mixture `name`; an unknown name raises listing the closest registered names."""
  if name in seqio.MixtureRegistry.names():
    return seqio.get_mixture_or_task(name)
  if name in seqio.TaskRegistry.names():
    return seqio.get_mixture_or_task(name)
  raise unknown_name_error(name)


def class_labels(task: str) -> tuple[str, ...]:
  """The label words of a GLUE/SuperGLUE classification task (for the class-label prompt initialisation)."""
  from xprompt_jax.tasks import sources  # Local: sources imports this module.
  task = base_task_name(task)
  for prefix, table in (("super_glue_", sources.SUPER_GLUE_LABELS), ("glue_", sources.GLUE_LABELS)):
    if task.startswith(prefix):
      config = task[len(prefix):].split("_v")[0]
      if config in table:
        return tuple(table[config])
  raise ValueError(f"no label words known for task {task!r} (class-label initialisation needs a GLUE/SuperGLUE "
                   "classification task)")
