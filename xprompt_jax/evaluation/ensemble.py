"""Prompt ensembling (Lester et al. 2021, §7): N prompts of one frozen model, evaluated in one replicated batch.

    ens = PromptEnsemble(task_evaluator)                      # any TaskEvaluator (rank or decode mode)
    out = ens.evaluate(frozen, prompts [N, L, D], names)      # {"ensemble/accuracy", "<name>/accuracy", ...}

Each batch of B examples is tiled N times (prompt-major, N*B rows) and row n*B + b gets prompt n, so the frozen
model runs once per batch for all prompts (no N separate runs). Per prompt, rank mode takes the best label word and
decode mode the greedy/beam output; the ensemble prediction is the majority vote over the N predictions (ties go to
the tied prediction of the earliest prompt). Metrics are the task's own, per prompt, for the ensemble, and the mean
and best single prompt. The replicated batch has N x EvalConfig.batch_size rows: size the batch for it.
"""
import collections
import functools
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from xprompt_jax.evaluation import eval_data
from xprompt_jax.evaluation import scoring
from xprompt_jax.models import decoding
from xprompt_jax.models.injection import Injection

PREDICTION_KEYS = {"rank": "rank_prediction", "decode": "decode_prediction"}


def stack_prompts(prompts: Sequence[Any], names: Sequence[str], emb_dim: Optional[int] = None) -> np.ndarray:
  """`[N, L, D]` float32 from N `[L, D]` prompts; a clear error (naming both prompts) on unequal shapes."""
  if len(prompts) != len(names):
    raise ValueError(f"{len(prompts)} prompts but {len(names)} names")
  if len(prompts) < 2:
    raise ValueError(f"an ensemble needs at least 2 prompts, got {len(prompts)} ({list(names)})")
  arrays = [np.asarray(p, np.float32) for p in prompts]
  for name, a in zip(names, arrays):
    if a.ndim != 2:
      raise ValueError(f"prompt {name!r} has shape {a.shape}; expected [length, emb_dim]")
    if emb_dim is not None and a.shape[1] != emb_dim:
      raise ValueError(f"prompt {name!r} has width {a.shape[1]} but the frozen model's emb_dim is {emb_dim}: it was "
                       "trained for another base model")
    if a.shape != arrays[0].shape:
      raise ValueError(f"prompts of different shapes cannot share a batch: {names[0]!r} is {arrays[0].shape} and "
                       f"{name!r} is {a.shape} (ensemble prompts of one length and one base model)")
  return np.stack(arrays)


def check_same_base(frozen_refs: Mapping[str, Mapping[str, Any]]) -> None:
  """Raises when the runs' frozen models differ (by fingerprint), naming two runs and both base models."""
  items = list(frozen_refs.items())
  first_name, first = items[0]
  for name, ref in items[1:]:
    if ref.get("fingerprint") != first.get("fingerprint"):
      raise ValueError(f"prompts trained on different base models cannot be ensembled: {first_name!r} on "
                       f"{first.get('path')} (fingerprint {first.get('fingerprint')}) but {name!r} on "
                       f"{ref.get('path')} (fingerprint {ref.get('fingerprint')})")


def majority_vote(predictions: Sequence[Sequence[Any]]) -> list:
  """Per column of an `[N][B]` table of hashable predictions: the most frequent one (ties: earliest prompt's)."""
  out = []
  for column in zip(*predictions):
    counts = collections.Counter(column)
    best = max(counts.values())
    out.append(next(p for p in column if counts[p] == best))
  return out


def _tile(x, n):
  return jnp.tile(x, (n,) + (1,) * (x.ndim - 1))


def _rank(model, frozen, prompts, tokens, candidates):
  n, b = prompts.shape[0], tokens.shape[0]
  injection = Injection(prompt=jnp.repeat(prompts, b, axis=0))
  cands = candidates if candidates.ndim == 2 else _tile(candidates, n)
  scores = scoring.rank_classification_scores(model, frozen, _tile(tokens, n), cands, injection=injection)
  return scores.reshape(n, b, -1)


def _decode(model, frozen, prompts, tokens, *, beam_size, alpha, max_decode_len):
  n, b = prompts.shape[0], tokens.shape[0]
  injection = Injection(prompt=jnp.repeat(prompts, b, axis=0))
  tiled = _tile(tokens, n)
  if beam_size == 1:
    out = decoding.greedy_decode(model, frozen, tiled, max_decode_len=max_decode_len, injection=injection)
  else:
    out = decoding.beam_search(model, frozen, tiled, beam_size=beam_size, max_decode_len=max_decode_len,
                               alpha=alpha, injection=injection)[0][:, 0]
  return out.reshape(n, b, -1)


class PromptEnsemble:
  """Ensembles prompts on one task through a `TaskEvaluator` (its data, label words, modes and metrics)."""

  def __init__(self, evaluator):
    self.evaluator = evaluator
    modes = evaluator.modes
    if "rank" in modes and not (evaluator.candidates and evaluator.task.predict_metric_fns):
      raise ValueError(f"task {evaluator.task_name!r} has no label words to vote on in rank mode (its metrics score "
                       "each row's own target); ensemble it with EvalConfig.mode='decode'")
    self._rank_fn = jax.jit(functools.partial(_rank, evaluator.model))
    self._decode_fn = jax.jit(functools.partial(_decode, evaluator.model),
                              static_argnames=("beam_size", "alpha", "max_decode_len"))

  def predict(self, frozen, prompts: np.ndarray) -> list[list[dict[str, Any]]]:
    """`[N][examples]` records like `TaskEvaluator.predict`'s (prediction keys of the evaluator's modes)."""
    ev, cfg = self.evaluator, self.evaluator.eval_config
    prompts = jnp.asarray(prompts)
    n = prompts.shape[0]
    records = [[] for _ in range(n)]
    for batch, real in eval_data.fixed_batches(ev.data, cfg.batch_size):
      tokens = jnp.asarray(batch["encoder_input_tokens"])
      per_prompt = [[{} for _ in range(real)] for _ in range(n)]
      if "rank" in ev.modes:
        scores = np.asarray(self._rank_fn(frozen, prompts, tokens, jnp.asarray(ev._candidate_tokens)))
        for i in range(n):
          for r, s in zip(per_prompt[i], scores[i, :real]):
            r["rank_prediction"] = ev.candidates[int(np.argmax(s))]
      if "decode" in ev.modes:
        out = np.asarray(self._decode_fn(frozen, prompts, tokens, beam_size=cfg.beam_size,
                                         alpha=float(cfg.decode_alpha), max_decode_len=cfg.decode_length()))
        for i in range(n):
          for r, t in zip(per_prompt[i], out[i, :real]):
            r["decode_prediction"] = ev.vocabulary.decode(t.tolist())
      for i in range(n):
        records[i].extend(per_prompt[i])
    return records

  def vote(self, per_prompt: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """The ensemble's records: the majority vote of each mode's prediction."""
    out = [{} for _ in per_prompt[0]]
    for mode in self.evaluator.modes:
      key = PREDICTION_KEYS[mode]
      for r, winner in zip(out, majority_vote([[r[key] for r in records] for records in per_prompt])):
        r[key] = winner
    return out

  def evaluate(self, frozen, prompts: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """`ensemble/<metric>`, `<name>/<metric>` per prompt, `mean/<metric>` and `best/<metric>` over the prompts."""
    if len(names) != np.shape(prompts)[0]:
      raise ValueError(f"{np.shape(prompts)[0]} prompts but {len(names)} names")
    per_prompt = self.predict(frozen, prompts)
    results = {name: self.evaluator.metrics(records) for name, records in zip(names, per_prompt)}
    out = {f"{name}/{k}": v for name, metrics in results.items() for k, v in metrics.items()}
    out.update({f"ensemble/{k}": v for k, v in self.evaluator.metrics(self.vote(per_prompt)).items()})
    for key in results[names[0]]:
      values = [results[name][key] for name in names]
      out[f"mean/{key}"] = float(np.mean(values))
      out[f"best/{key}"] = float(np.max(values))
    return out
