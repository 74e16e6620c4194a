"""SeqIO-style metric functions `fn(targets, predictions) -> {name: value}` on T5's 0-100 scale.

Classification metrics take integer labels (a postprocessor maps label words to ids; anything it cannot map, e.g.
-1, is an *invalid* prediction). Each metric treats invalid predictions as T5 does: F1 counts them as wrong
(T5's `f1_score_with_invalid`), the Matthews correlation keeps -1 as a class of its own (T5 passes the labels to
sklearn unchanged), accuracy counts them as misses. Span metrics take lists of
reference strings per example and a predicted string. Generation metrics (BLEU, ROUGE) take one or several
references per example. `rank_classification` is a score metric (`fn(targets, scores)`) for seqio's
rank-classification tasks. The work is done by sklearn, scipy, sacrebleu and rouge-score.

Every metric fn declares the keys of its result with `@reports(...)` (fixed names, or a function of its keyword
arguments where they change the keys); `reported_keys(fn)` reads the declaration, also through `functools.partial`
and `deduplicate_by_group`, so the keys a configuration names (`TrainConfig.best_metric`) can be checked before any
training (`evaluation.metric_keys`).

METEOR is not provided: the maintained implementation (nltk) needs the WordNet corpus, which nltk downloads at run
time and which is not installable from the package registry here.
"""
import collections
import functools
import inspect
import re
import string
from typing import Any, Callable, Mapping, Optional, Sequence

from absl import logging
import numpy as np
import sacrebleu
import scipy.stats
from rouge_score import rouge_scorer
from sklearn import metrics as sk_metrics


def _as_labels(values: Sequence[Any], what: str) -> np.ndarray:
  """Integer label array; a clear error for values that are not integers."""
  arr = np.asarray(values)
  if arr.ndim != 1:
    raise ValueError(f"{what} must be a flat sequence of labels, got shape {arr.shape}")
  if arr.size and not np.issubdtype(arr.dtype, np.integer) and not np.issubdtype(arr.dtype, np.bool_):
    raise TypeError(f"{what} must be integer labels, got dtype {arr.dtype} (first value {values[0]!r})")
  return arr.astype(np.int64)


def _check_lengths(targets: Sequence[Any], predictions: Sequence[Any]) -> None:
  if len(targets) != len(predictions):
    raise ValueError(f"targets and predictions differ in length: {len(targets)} targets vs "
                     f"{len(predictions)} predictions")
  if not len(targets):
    raise ValueError("no examples: targets and predictions are empty")


def _binary_with_invalid(targets: Sequence[Any], predictions: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
  """Binary labels where a prediction outside {0, 1} is replaced by the wrong label (1 - target)."""
  _check_lengths(targets, predictions)
  t = _as_labels(targets, "targets")
  p = _as_labels(predictions, "predictions")
  bad = np.setdiff1d(np.unique(t), [0, 1])
  if bad.size:
    raise ValueError(f"binary targets must be 0 or 1, found {bad.tolist()}")
  p = np.where(np.isin(p, [0, 1]), p, 1 - t)
  return t, p


# ----------------------------------------------------------------------------------------------------------------------
# Declared result keys.

_DECLARATION = "_reported_keys"


def reports(*keys: str, keys_of: Callable[..., Sequence[str]] | None = None) -> Callable[[Callable], Callable]:
  """Decorator declaring the keys of a metric fn's result: the fixed names `keys`, or `keys_of(**kwargs)` of the
  metric's keyword arguments (its defaults, overridden by a `functools.partial`'s keywords). Returns `fn` itself."""
  if bool(keys) == (keys_of is not None):
    raise TypeError("reports(...) takes either fixed key names or keys_of=, not both or neither")

  def declare(fn: Callable) -> Callable:
    setattr(fn, _DECLARATION, keys_of or (lambda **_: keys))
    return fn

  return declare


def reported_keys(fn: Callable) -> tuple[str, ...] | None:
  """The keys `fn(targets, predictions_or_scores)` returns, as declared with `reports`; None for an undeclared fn
  (a metric from elsewhere). A `functools.partial` passes its keywords to a `keys_of` declaration."""
  keywords: dict[str, Any] = {}
  base = fn
  while isinstance(base, functools.partial):
    keywords = {**base.keywords, **keywords}
    base = base.func
  declared = getattr(base, _DECLARATION, None)
  if declared is None:
    return None
  try:
    params = inspect.signature(base).parameters.values()
  except (TypeError, ValueError):
    params = ()
  defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
  keys = declared(**{**defaults, **keywords})
  return None if keys is None else tuple(keys)


# ----------------------------------------------------------------------------------------------------------------------
# Metrics.


@reports("accuracy")
def accuracy(targets: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
  """Exact-match accuracy of labels (or any comparable values)."""
  _check_lengths(targets, predictions)
  correct = [t == p for t, p in zip(targets, predictions)]
  return {"accuracy": 100.0 * float(np.mean(correct))}


@reports("f1")
def f1_binary(targets: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
  """F1 of the positive class 1 (MRPC, QQP); invalid predictions count as wrong."""
  t, p = _binary_with_invalid(targets, predictions)
  return {"f1": 100.0 * float(sk_metrics.f1_score(t, p, pos_label=1, average="binary", zero_division=0.0))}


@reports(keys_of=lambda num_classes=3, **_: ("accuracy", f"mean_{num_classes}class_f1"))
def accuracy_mean_class_f1(targets: Sequence[int], predictions: Sequence[int],
                           num_classes: int = 3) -> dict[str, float]:
  """CB: accuracy and the mean over classes `0..num_classes-1` of each class's F1, named as T5 names them
  (`t5.evaluation.metrics.mean_multiclass_f1`: `mean_3class_f1`); the SuperGLUE CB score is their mean."""
  _check_lengths(targets, predictions)
  t = _as_labels(targets, "targets")
  p = _as_labels(predictions, "predictions")
  bad = np.setdiff1d(np.unique(t), np.arange(num_classes))
  if bad.size:
    raise ValueError(f"targets must be in 0..{num_classes - 1}, found {bad.tolist()}")
  acc = 100.0 * float(np.mean(t == p))
  f1 = 100.0 * float(sk_metrics.f1_score(t, p, labels=list(range(num_classes)), average="macro", zero_division=0.0))
  return {"accuracy": acc, f"mean_{num_classes}class_f1": f1}


# Keys this project reported before it took T5's names; a user-named old key is mapped with a warning.
RENAMED_KEYS = {"f1a": "f1", "macro_f1": "mean_3class_f1"}


def former_keys(key: str) -> list[str]:
  """The old names (`RENAMED_KEYS`) of `key` (`name`, `task/name`, ...), for records written before the rename."""
  head, _, last = key.rpartition("/")
  return [f"{head}/{old}" if head else old for old, new in RENAMED_KEYS.items() if new == last]


def t5_key(key: Optional[str], binding: str) -> Optional[str]:
  """`key` (`name`, `task/name`, `rank/name`, ...) with an old last component replaced by T5's name (logged)."""
  if not key:
    return key
  head, _, last = key.rpartition("/")
  if last not in RENAMED_KEYS:
    return key
  new = f"{head}/{RENAMED_KEYS[last]}" if head else RENAMED_KEYS[last]
  logging.warning("%s=%r: that metric is now named as T5 names it, %r; using it (rename it in your config)", binding,
                  key, new)
  return new


@reports("matthews_corrcoef")
def matthews_corrcoef(targets: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
  """Matthews correlation (CoLA, AX-b) as T5 computes it: sklearn's multiclass MCC of the labels as they are, so an
  invalid prediction (-1) is a class of its own, not the wrong label (which would make each one a full error)."""
  _check_lengths(targets, predictions)
  t = _as_labels(targets, "targets")
  p = _as_labels(predictions, "predictions")
  return {"matthews_corrcoef": 100.0 * float(sk_metrics.matthews_corrcoef(t, p))}


@reports("pearson_corrcoef", "spearman_corrcoef")
def pearson_spearman(targets: Sequence[float], predictions: Sequence[float]) -> dict[str, float]:
  """Pearson and Spearman correlation of float scores (STS-B); NaN when the predictions are constant (undefined)."""
  _check_lengths(targets, predictions)
  t = np.asarray(targets, dtype=np.float64)
  p = np.asarray(predictions, dtype=np.float64)
  if np.isnan(p).any():
    raise ValueError(f"predictions contain {int(np.isnan(p).sum())} NaN value(s); the postprocessor must map "
                     "unparsable outputs to a number")
  return {"pearson_corrcoef": 100.0 * float(scipy.stats.pearsonr(t, p)[0]),
          "spearman_corrcoef": 100.0 * float(scipy.stats.spearmanr(t, p)[0])}


def _group_by(items: Sequence[Any], what: str) -> dict[Any, list[int]]:
  groups = collections.defaultdict(list)
  for i, item in enumerate(items):
    if not isinstance(item, Mapping) or "group" not in item or "value" not in item:
      raise ValueError(f"{what}[{i}] must be a dict with keys 'group' and 'value', got {item!r}")
    groups[item["group"]].append(i)
  return groups


@reports("f1", "exact_match")
def multirc_f1_em(targets: Sequence[Mapping[str, Any]],
                   predictions: Sequence[Mapping[str, Any]]) -> dict[str, float]:
  """MultiRC: F1a as `f1` (binary F1 over all answers, T5's `multirc_f1_over_all_answers`) and EM (share of
  questions whose answers are all right, T5's `mean_group_metric(all_match)`).

  Each target / prediction is `{"group": question id, "value": 0 or 1}`; predictions and targets are aligned.
  """
  _check_lengths(targets, predictions)
  groups = _group_by(targets, "targets")
  _group_by(predictions, "predictions")
  for i, (t, p) in enumerate(zip(targets, predictions)):
    if t["group"] != p["group"]:
      raise ValueError(f"example {i}: target group {t['group']!r} != prediction group {p['group']!r}")
  t, p = _binary_with_invalid([x["value"] for x in targets], [x["value"] for x in predictions])
  f1 = 100.0 * float(sk_metrics.f1_score(t, p, pos_label=1, average="binary", zero_division=0.0))
  em = 100.0 * float(np.mean([np.all(t[idx] == p[idx]) for idx in groups.values()]))
  return {"f1": f1, "exact_match": em}


_PUNCTUATION = frozenset(string.punctuation)


def normalize_squad(text: str) -> str:
  """SQuAD v1.1 official normalisation: lower case, drop punctuation, articles (a/an/the) and extra whitespace."""
  text = text.lower()
  text = "".join(ch for ch in text if ch not in _PUNCTUATION)
  text = re.sub(r"\b(a|an|the)\b", " ", text)
  return " ".join(text.split())


def _token_f1(reference: str, prediction: str) -> float:
  ref = normalize_squad(reference).split()
  pred = normalize_squad(prediction).split()
  common = collections.Counter(ref) & collections.Counter(pred)
  overlap = sum(common.values())
  if overlap == 0:
    return 0.0
  precision = overlap / len(pred)
  recall = overlap / len(ref)
  return 2 * precision * recall / (precision + recall)


def _span_em_f1(targets: Sequence[Sequence[str]], predictions: Sequence[str]) -> dict[str, float]:
  _check_lengths(targets, predictions)
  ems, f1s = [], []
  for i, (answers, pred) in enumerate(zip(targets, predictions)):
    if isinstance(answers, str):
      answers = [answers]
    if not len(answers):
      raise ValueError(f"example {i} has no reference answers")
    if not isinstance(pred, str):
      raise TypeError(f"prediction {i} must be a string, got {type(pred).__name__}")
    ems.append(max(float(normalize_squad(a) == normalize_squad(pred)) for a in answers))
    f1s.append(max(_token_f1(a, pred) for a in answers))
  return {"em": 100.0 * float(np.mean(ems)), "f1": 100.0 * float(np.mean(f1s))}


@reports("em", "f1")
def squad_em_f1(targets: Sequence[Sequence[str]], predictions: Sequence[str]) -> dict[str, float]:
  """SQuAD v1.1 EM and token F1, each the max over the reference answers, averaged over examples."""
  return _span_em_f1(targets, predictions)


@reports("em", "f1")
def record_em_f1(targets: Sequence[Sequence[str]], predictions: Sequence[str]) -> dict[str, float]:
  """ReCoRD EM and token F1 (the official ReCoRD script uses the SQuAD v1.1 normalisation and max over answers)."""
  return _span_em_f1(targets, predictions)


def deduplicate_by_group(metric_fn: Callable[..., dict[str, float]]) -> Callable[..., dict[str, float]]:
  """Wraps `metric_fn` so that each group counts once (T5's `deduplicate_metric`).

  For tasks that turn one example into several rows (ReCoRD makes one row per answer): targets and predictions are
  `{"group": example id, "value": ...}`; the wrapped metric sees one (target, prediction) `value` pair per group,
  the first one, in order of first appearance. The wrapper reports the keys `metric_fn` declares.
  """

  def deduplicated(targets: Sequence[Mapping[str, Any]], predictions: Sequence[Mapping[str, Any]]):
    _check_lengths(targets, predictions)
    _group_by(targets, "targets")
    _group_by(predictions, "predictions")
    kept: dict[Any, tuple[Any, Any]] = {}
    for i, (t, p) in enumerate(zip(targets, predictions)):
      if t["group"] != p["group"]:
        raise ValueError(f"example {i}: target group {t['group']!r} != prediction group {p['group']!r}")
      kept.setdefault(t["group"], (t["value"], p["value"]))
    return metric_fn([t for t, _ in kept.values()], [p for _, p in kept.values()])

  deduplicated.__name__ = f"deduplicated_{getattr(metric_fn, '__name__', 'metric')}"
  return reports(keys_of=lambda **_: reported_keys(metric_fn))(deduplicated)


def _references(targets: Sequence[Any]) -> list[list[str]]:
  refs = []
  for i, t in enumerate(targets):
    r = [t] if isinstance(t, str) else list(t)
    if not r or not all(isinstance(x, str) for x in r):
      raise ValueError(f"target {i} must be a string or a non-empty list of strings, got {t!r}")
    refs.append(r)
  return refs


@reports("bleu")
def bleu(targets: Sequence[Any], predictions: Sequence[str], tokenize: str = "intl") -> dict[str, float]:
  """sacrebleu corpus BLEU; each target is a reference string or a list of them (any number per example).

  The defaults follow T5's `bleu` metric (exponential smoothing, `intl` tokenisation, case sensitive).
  """
  _check_lengths(targets, predictions)
  refs = _references(targets)
  n_streams = max(len(r) for r in refs)
  streams = [[r[k] if k < len(r) else None for r in refs] for k in range(n_streams)]
  score = sacrebleu.corpus_bleu(list(predictions), streams, smooth_method="exp", tokenize=tokenize)
  return {"bleu": float(score.score)}


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


@reports(keys_of=lambda rouge_types=ROUGE_TYPES, **_: tuple(rouge_types))
def rouge(targets: Sequence[Any], predictions: Sequence[str],
          rouge_types: Sequence[str] = ROUGE_TYPES, use_stemmer: bool = True) -> dict[str, float]:
  """rouge-score F-measures, best over each example's references, averaged over examples."""
  _check_lengths(targets, predictions)
  refs = _references(targets)
  scorer = rouge_scorer.RougeScorer(list(rouge_types), use_stemmer=use_stemmer)
  totals = collections.defaultdict(float)
  for r, p in zip(refs, predictions):
    scores = scorer.score_multi(r, p)
    for k in rouge_types:
      totals[k] += scores[k].fmeasure
  return {k: 100.0 * totals[k] / len(refs) for k in rouge_types}



def _rank_classification_keys(num_classes: int | None = None, **_) -> tuple[str, ...]:
  if num_classes == 2:
    return ("accuracy", "f1")
  return ("accuracy", f"mean_{num_classes}class_f1") if num_classes is not None and num_classes > 2 else ("accuracy",)


@reports(keys_of=_rank_classification_keys)
def rank_classification(targets: Sequence[Sequence[Any]], scores: Sequence[float],
                        num_classes: int | None = None) -> dict[str, float]:
  """Accuracy of picking the best-scoring option per example (seqio rank classification).

  Each target is `(example_idx, is_correct)` (a trailing weight is ignored), one per candidate label in label
  order, as made by seqio's `rank_classification` preprocessor. Options are grouped by `example_idx`; the
  prediction is the option with the highest score. With `num_classes=2` the binary F1 of option 1 is added, with
  `num_classes > 2` the mean per-class F1 (`mean_{n}class_f1`), as T5's `rank_classification` adds them.
  """
  _check_lengths(targets, scores)
  groups: dict[Any, list[tuple[int, bool, float]]] = collections.defaultdict(list)
  for i, (t, s) in enumerate(zip(targets, scores)):
    if not isinstance(t, (tuple, list)) or len(t) not in (2, 3):
      raise ValueError(f"target {i} must be (example_idx, is_correct[, weight]), got {t!r}")
    groups[t[0]].append((len(groups[t[0]]), bool(t[1]), float(s)))
  labels, preds, correct = [], [], []
  for idx, options in groups.items():
    right = [pos for pos, ok, _ in options if ok]
    if not right:
      raise ValueError(f"example_idx {idx!r} has no correct option among its {len(options)} options")
    if num_classes is not None and len(options) != num_classes:
      raise ValueError(f"example_idx {idx!r} has {len(options)} options, expected num_classes={num_classes}")
    best = max(options, key=lambda o: o[2])
    labels.append(right[0])
    preds.append(best[0])
    correct.append(best[1])
  result = {"accuracy": 100.0 * float(np.mean(correct))}
  if num_classes == 2:
    result["f1"] = 100.0 * float(sk_metrics.f1_score(labels, preds, pos_label=1, zero_division=0.0))
  elif num_classes is not None and num_classes > 2:
    result[f"mean_{num_classes}class_f1"] = 100.0 * float(
        sk_metrics.f1_score(labels, preds, labels=list(range(num_classes)), average="macro", zero_division=0.0))
  return result
