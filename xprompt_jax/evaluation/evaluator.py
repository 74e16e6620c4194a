"""Evaluation of a frozen T5 plus a trained parametrisation on a seqio task split, with the task's own metrics.

    evaluator = TaskEvaluator("super_glue_rte_v102", model, config, EvalConfig(mode="both"))
    inject = lambda trainable, batch: method.inject(trainable, batch, config)   # built once, reused
    metrics = evaluator.evaluate(frozen_params, trainable, inject)   # {"rank/accuracy": ..., "decode/accuracy": ...}
    rows = evaluator.predict(frozen_params, trainable, inject)       # per-example texts and scores (for jsonl)

Modes:
  * rank: the inputs are encoded once and every label word of the task (`labels.label_candidates`) is scored as
    a target; the best word goes through the task's `postprocess_fn` into its `predict_metric_fns`. Tasks with
    `score_metric_fns` (the `*_rank` variants, one candidate per row) get the log-likelihood of each row's own
    target passed to those. A task with neither cannot be ranked: `TaskEvaluator` raises (a mixture's evaluator
    instead falls back to decoding that task and logs it).
  * decode: greedy (`beam_size=1`) or beam search with the KV cache, detokenised, postprocessed, then the
    `predict_metric_fns`.
  * both: the two, with keys prefixed `rank/` and `decode/` (a task that allows only one keeps its prefix).
  * auto: rank where the task can be ranked, decode otherwise (ReCoRD, SQuAD, WSC `simple_eval`, STS-B), logged
    once per task; the paper recipes use it, so one setting serves classification and free-text tasks.
Targets are postprocessed as in seqio: `postprocess_fn(targets_pretokenized, example=ex, is_target=True)`.

`inject(trainable, batch)` (or `inject(trainable, batch, aux)` when `aux` is passed) must be a pure function; it
runs inside the jitted scoring/decoding functions with `trainable` and `aux` as traced *arguments* and `inject`
itself as a static one, so evaluating new trainable values reuses the compiled functions (pass the same `inject`
object each time). The split is read, tokenised and padded to the fixed feature lengths once, and every batch
has `batch_size` rows, so each function compiles for one shape per task.
"""
import dataclasses
import functools
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import gin
import jax
import numpy as np
import seqio
from absl import logging

from xprompt_jax.evaluation import eval_data
from xprompt_jax.evaluation import labels as labels_lib
from xprompt_jax.evaluation import metric_keys
from xprompt_jax.evaluation import scoring
from xprompt_jax.models import decoding
from xprompt_jax.models.config import T5Config
from xprompt_jax.models.t5 import T5
from xprompt_jax.tasks import registry_utils as ru
from xprompt_jax.tasks import sources

MODES = metric_keys.KNOWN_MODES
Inject = Callable[..., Any]


@gin.configurable
@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """What to evaluate and how. `inputs_length`/`targets_length` override the entries of `feature_lengths`."""
  split: str = "validation"
  mode: str = "rank"  # "rank", "decode", "both" or "auto" (rank where possible, else decode).
  batch_size: int = 32
  max_examples: Optional[int] = None  # The first N rows of the split (None: all).
  feature_lengths: Mapping[str, int] = dataclasses.field(default_factory=lambda: {"inputs": 512, "targets": 16})
  inputs_length: Optional[int] = None
  targets_length: Optional[int] = None
  beam_size: int = 1  # 1: greedy decoding.
  decode_alpha: float = 0.6  # Beam search length-normalisation exponent.
  max_decode_length: Optional[int] = None  # None: the targets length.
  # The training loop writes each evaluation's predictions to <model_dir>/inference_eval/ as T5X does
  # (evaluation/inference_log.py): True (every example), N (the first N per task and evaluation) or False.
  log_inferences: Union[bool, int] = True

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"EvalConfig.mode must be one of {MODES}, got {self.mode!r}")
    for name in ("batch_size", "beam_size"):
      value = getattr(self, name)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"EvalConfig.{name} must be a positive int, got {value!r}")
    if self.max_examples is not None and (not isinstance(self.max_examples, int) or self.max_examples <= 0):
      raise ValueError(f"EvalConfig.max_examples must be None or a positive int, got {self.max_examples!r}")
    for name, value in self.lengths().items():
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"EvalConfig feature length {name!r} must be a positive int, got {value!r} "
                         f"(feature_lengths={dict(self.feature_lengths)}, inputs_length={self.inputs_length}, "
                         f"targets_length={self.targets_length})")
    if self.max_decode_length is not None and (not isinstance(self.max_decode_length, int)
                                               or self.max_decode_length <= 0):
      raise ValueError(f"EvalConfig.max_decode_length must be None or a positive int, got {self.max_decode_length!r}")
    rows = self.log_inferences
    if not isinstance(rows, (bool, int)) or (not isinstance(rows, bool) and rows < 0):
      raise ValueError(f"EvalConfig.log_inferences must be True, False or a number of rows >= 0, got {rows!r}")

  def lengths(self) -> dict[str, int]:
    """The `{"inputs": ..., "targets": ...}` sequence lengths the split is tokenised and padded to."""
    out = dict(self.feature_lengths)
    if self.inputs_length is not None:
      out["inputs"] = self.inputs_length
    if self.targets_length is not None:
      out["targets"] = self.targets_length
    missing = [k for k in ("inputs", "targets") if k not in out]
    if missing:
      raise ValueError(f"EvalConfig.feature_lengths {dict(self.feature_lengths)} lacks {missing}")
    return out

  def decode_length(self) -> int:
    return self.max_decode_length or self.lengths()["targets"]


# ----------------------------------------------------------------------------------------------------------------------
# Jitted model functions (`inject` is static, everything else traced).


def _injection(inject: Optional[Inject], trainable, aux, batch):
  if inject is None:
    return None
  return inject(trainable, batch) if aux is None else inject(trainable, batch, aux)


def _rank_scores(model: T5, params, trainable, aux, batch, candidates, *, inject):
  injection = _injection(inject, trainable, aux, batch)
  return scoring.rank_classification_scores(model, params, batch["encoder_input_tokens"], candidates,
                                            injection=injection)


def _target_scores(model: T5, params, trainable, aux, batch, *, inject):
  injection = _injection(inject, trainable, aux, batch)
  return scoring.sequence_scores(model, params, batch["encoder_input_tokens"], batch["decoder_target_tokens"],
                                 injection=injection, decoder_input_tokens=batch["decoder_input_tokens"])


def _decode(model: T5, params, trainable, aux, batch, *, inject, beam_size, alpha, max_decode_len):
  injection = _injection(inject, trainable, aux, batch)
  tokens = batch["encoder_input_tokens"]
  if beam_size == 1:
    return decoding.greedy_decode(model, params, tokens, max_decode_len=max_decode_len, injection=injection)
  beams, _ = decoding.beam_search(model, params, tokens, beam_size=beam_size, max_decode_len=max_decode_len,
                                  alpha=alpha, injection=injection)
  return beams[:, 0]


# ----------------------------------------------------------------------------------------------------------------------
# Metrics.


def _scalar(value: Any) -> Optional[float]:
  """A metric value as float: plain numbers and seqio `Scalar`s; other metric objects give None."""
  value = getattr(value, "value", value)
  try:
    return float(value)
  except (TypeError, ValueError):
    return None


def apply_metric_fns(metric_fns: Sequence[Callable], targets: list, values: list) -> dict[str, float]:
  """Merged results of `fn(targets, values)` for each metric fn (non-scalar results are left out)."""
  out = {}
  for fn in metric_fns:
    for key, value in fn(targets, values).items():
      scalar = _scalar(value)
      if scalar is not None:
        out[key] = scalar
  return out


def average_metrics(per_task: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
  """`average/<key>` for keys every task reports, and `average/score`: the mean over tasks of each task's mean
  metric (T5's benchmark average, where a task with several metrics counts once)."""
  tasks = [m for m in per_task.values() if m]
  if not tasks:
    return {}
  out = {"average/score": float(np.mean([np.mean(list(m.values())) for m in tasks]))}
  shared = set(tasks[0]).intersection(*tasks[1:])
  for key in sorted(shared):
    out[f"average/{key}"] = float(np.mean([m[key] for m in tasks]))
  return out


# ----------------------------------------------------------------------------------------------------------------------
# One task.


def _text(value: Any) -> str:
  return ru.as_text(value)


_AUTO_LOGGED: set[str] = set()  # Tasks whose `mode="auto"` choice was logged (once per task and process).


class TaskEvaluator:
  """Evaluates one seqio task's split (read once, kept in memory) for any parameters and injection."""

  def __init__(self, task_name: str, model: T5, config: T5Config, eval_config: Optional[EvalConfig] = None,
               vocabulary: Optional[seqio.Vocabulary] = None, *, task_id: Optional[int] = None,
               fallback: bool = False):
    """`task_id` fills `batch["task_id"]` (MPT's per-task prompts); `fallback` turns an impossible mode into
    the other one (logged) instead of raising."""
    self.eval_config = eval_config or EvalConfig()
    task = ru.get_task_or_mixture(task_name)
    if not isinstance(task, seqio.Task):
      raise ValueError(f"{task_name!r} is a mixture; use MixtureEvaluator or make_evaluator for it")
    self.task = task
    self.task_name = task.name
    self.model = model
    self.config = config
    self.task_id = task_id
    self.vocabulary = vocabulary or task.output_features["targets"].vocabulary
    if self.vocabulary.vocab_size > config.vocab_size:
      raise ValueError(f"the vocabulary of task {task.name!r} has {self.vocabulary.vocab_size} ids but the model's "
                       f"T5Config.vocab_size is {config.vocab_size}")
    eval_data.check_split(task, self.eval_config.split)
    self.candidates = labels_lib.label_candidates(task)
    self.modes = self._resolve_modes(self.eval_config.mode, fallback)
    self.data = eval_data.load_split(task, self.eval_config.split, self.eval_config.lengths(),
                                     self.eval_config.max_examples)
    self.targets = [task.postprocess_fn(self._target_text(i), example=ex, is_target=True)
                    for i, ex in enumerate(self.data.examples)]
    self._candidate_tokens = (None if self.candidates is None
                              else labels_lib.tokenize_candidates(self.candidates, self.vocabulary))
    self._rank_fn = jax.jit(functools.partial(_rank_scores, model), static_argnames=("inject",))
    self._score_fn = jax.jit(functools.partial(_target_scores, model), static_argnames=("inject",))
    self._decode_fn = jax.jit(functools.partial(_decode, model),
                              static_argnames=("inject", "beam_size", "alpha", "max_decode_len"))

  # -- Setup helpers.

  def _resolve_modes(self, mode: str, fallback: bool) -> tuple[str, ...]:
    """`metric_keys.task_modes` (which raises for an impossible mode), with what it chose logged."""
    kept = metric_keys.task_modes(self.task, mode, fallback)
    name = self.task.name
    if mode == "auto":
      if name not in _AUTO_LOGGED:
        _AUTO_LOGGED.add(name)
        logging.info("EvalConfig.mode='auto': task %s is evaluated by %s%s", name, kept[0],
                     "" if kept == ("rank",) else " (it cannot be rank-classified)")
    elif mode == "both" and len(kept) == 1:
      logging.warning("%s; evaluating %r only", metric_keys.why_not(self.task, "rank" if kept == ("decode",)
                                                                    else "decode"), kept[0])
    elif mode != "both" and kept != (mode,):
      logging.warning("%s; falling back to mode %r", metric_keys.why_not(self.task, mode), kept[0])
    return kept

  def _target_text(self, i: int) -> str:
    ex = self.data.examples[i]
    if "targets_pretokenized" in ex:
      return _text(ex["targets_pretokenized"])
    return self.vocabulary.decode(self.data.targets[i].tolist())

  def _inputs_text(self, i: int) -> str:
    ex = self.data.examples[i]
    if "inputs_pretokenized" in ex:
      return _text(ex["inputs_pretokenized"])
    return self.task.output_features["inputs"].vocabulary.decode(self.data.inputs[i].tolist())

  # -- Running the model.

  def predict(self, frozen_params, trainable=None, inject: Optional[Inject] = None,
              aux=None) -> list[dict[str, Any]]:
    """One record per example, in split order: `inputs`, `targets` (texts), and per mode
    `rank_prediction` + `rank_scores` ({label word: log-likelihood}), `target_score` (tasks with score metrics),
    `decode_prediction` (the detokenised output)."""
    cfg = self.eval_config
    records = [{"inputs": self._inputs_text(i), "targets": self._target_text(i)} for i in range(len(self.data))]
    rank_labels = "rank" in self.modes and self.candidates is not None and bool(self.task.predict_metric_fns)
    target_scores = "rank" in self.modes and bool(self.task.score_metric_fns)
    offset = 0
    for batch, n in eval_data.fixed_batches(self.data, cfg.batch_size, self.task_id):
      rows = records[offset:offset + n]
      if rank_labels:
        scores = np.asarray(self._rank_fn(frozen_params, trainable, aux, batch, self._candidate_tokens,
                                          inject=inject))[:n]
        for r, s in zip(rows, scores):
          r["rank_prediction"] = self.candidates[int(np.argmax(s))]
          r["rank_scores"] = {w: float(v) for w, v in zip(self.candidates, s)}
      if target_scores:
        scores = np.asarray(self._score_fn(frozen_params, trainable, aux, batch, inject=inject))[:n]
        for r, s in zip(rows, scores):
          r["target_score"] = float(s)
      if "decode" in self.modes:
        tokens = np.asarray(self._decode_fn(frozen_params, trainable, aux, batch, inject=inject,
                                            beam_size=cfg.beam_size, alpha=float(cfg.decode_alpha),
                                            max_decode_len=cfg.decode_length()))[:n]
        for r, t in zip(rows, tokens):
          r["decode_prediction"] = self.vocabulary.decode(t.tolist())
      offset += n
    return records

  def metrics(self, records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The task's metrics of `predict`'s records (keys prefixed `rank/`, `decode/` with `EvalConfig.mode="both"`,
    also when one of the two was impossible for this task). Each record gains the postprocessed predictions the
    metrics saw (`rank_postprocessed`, `decode_postprocessed`), which the inference log writes as they are."""
    if len(records) != len(self.data):
      raise ValueError(f"{len(records)} records for the {len(self.data)} examples of {self.task.name!r}")
    results = {}
    examples = self.data.examples
    if "rank" in self.modes:
      out = {}
      if "rank_prediction" in records[0]:
        preds = [self.task.postprocess_fn(r["rank_prediction"], example=ex, is_target=False)
                 for r, ex in zip(records, examples)]
        for r, p in zip(records, preds):
          r["rank_postprocessed"] = p
        out.update(apply_metric_fns(self.task.predict_metric_fns, self.targets, preds))
      if "target_score" in records[0]:
        out.update(apply_metric_fns(self.task.score_metric_fns, self.targets, [r["target_score"] for r in records]))
      results["rank"] = out
    if "decode" in self.modes:
      preds = [self.task.postprocess_fn(r["decode_prediction"], example=ex, is_target=False)
               for r, ex in zip(records, examples)]
      for r, p in zip(records, preds):
        r["decode_postprocessed"] = p
      results["decode"] = apply_metric_fns(self.task.predict_metric_fns, self.targets, preds)
    if self.eval_config.mode != "both":
      return next(iter(results.values()))
    return {f"{mode}/{k}": v for mode, out in results.items() for k, v in out.items()}

  def evaluate(self, frozen_params, trainable=None, inject: Optional[Inject] = None, aux=None,
               on_records: Optional[Callable[..., None]] = None) -> dict[str, float]:
    """The task's metrics (0-100 scale) for the frozen params with `inject(trainable, batch[, aux])`;
    `on_records(self, records, metrics)` sees the predictions too (the loop's `inference_eval/` files)."""
    records = self.predict(frozen_params, trainable, inject, aux)
    metrics = self.metrics(records)
    if on_records is not None:
      on_records(self, records, metrics)
    return metrics


# ----------------------------------------------------------------------------------------------------------------------
# Mixtures.


class MixtureEvaluator:
  """Evaluates every sub-task of a mixture that has the split: `<task>/<metric>` keys plus `average/...`.

  Sub-tasks without the split are skipped, and a sub-task the mode cannot handle falls back to the other mode;
  both are logged. `task_ids` maps sub-task names to MPT task ids.
  """

  def __init__(self, mixture_name: str, model: T5, config: T5Config, eval_config: Optional[EvalConfig] = None,
               vocabulary: Optional[seqio.Vocabulary] = None, *, task_ids: Optional[Mapping[str, int]] = None):
    self.eval_config = eval_config or EvalConfig()
    mixture = ru.get_task_or_mixture(mixture_name)
    if not isinstance(mixture, seqio.Mixture):
      raise ValueError(f"{mixture_name!r} is a task, not a mixture; use TaskEvaluator")
    self.task_name = mixture.name
    task_ids = dict(task_ids or {})
    unknown = sorted(set(task_ids) - {t.name for t in mixture.tasks})
    if unknown:
      raise ValueError(f"task_ids name tasks {unknown} that are not in mixture {mixture.name!r}")
    self.evaluators: list[TaskEvaluator] = []
    for task in mixture.tasks:
      if self.eval_config.split not in (task.splits or ()):
        logging.warning("mixture %s: task %s has no split %r; not evaluated", mixture.name, task.name,
                        self.eval_config.split)
        continue
      try:
        self.evaluators.append(TaskEvaluator(task.name, model, config, self.eval_config, vocabulary,
                                             task_id=task_ids.get(task.name), fallback=True))
      except sources.SplitUnavailableError as e:  # E.g. MNLI's matched set offline: its source has no such file.
        if mixture.get_rate(task) > 0:
          raise
        logging.warning("mixture %s: eval-only task %s not evaluated: %s", mixture.name, task.name, e)
    if not self.evaluators:
      raise ValueError(f"no task of mixture {mixture.name!r} has the split {self.eval_config.split!r}")

  def predict(self, frozen_params, trainable=None, inject: Optional[Inject] = None,
              aux=None) -> dict[str, list[dict[str, Any]]]:
    return {ev.task_name: ev.predict(frozen_params, trainable, inject, aux) for ev in self.evaluators}

  def evaluate(self, frozen_params, trainable=None, inject: Optional[Inject] = None, aux=None,
               on_records: Optional[Callable[..., None]] = None) -> dict[str, float]:
    per_task = {ev.task_name: ev.evaluate(frozen_params, trainable, inject, aux, on_records)
                for ev in self.evaluators}
    out = {f"{name}/{k}": v for name, m in per_task.items() for k, v in m.items()}
    out.update(average_metrics(per_task))
    return out


def make_evaluator(name: str, model: T5, config: T5Config, eval_config: Optional[EvalConfig] = None,
                   vocabulary: Optional[seqio.Vocabulary] = None, *, task_ids: Optional[Mapping[str, int]] = None):
  """A `TaskEvaluator` or `MixtureEvaluator` for a registered name (unknown names list the closest ones)."""
  provider = ru.get_task_or_mixture(name)
  if isinstance(provider, seqio.Mixture):
    return MixtureEvaluator(name, model, config, eval_config, vocabulary, task_ids=task_ids)
  task_id = None if task_ids is None else task_ids.get(name)
  return TaskEvaluator(name, model, config, eval_config, vocabulary, task_id=task_id)
