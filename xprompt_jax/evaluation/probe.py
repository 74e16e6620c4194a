"""Linear probes of a frozen backbone: is a task's label readable from what it computes, and does it say it?

A diagnostic for prompt tuning that sits at the majority class: if a logistic regression on the mean-pooled encoder
output of the frozen model separates the labels well above the majority class, the information is there and the
bottleneck is steering the decoder to say it; if it does not, the backbone itself is too weak. The bag of input
embeddings (mean of the token embeddings, no layer applied) is probed beside it as the lexical baseline, and the
decoder's hidden state at its first output position (where a label's first token is predicted; no prompt) after
it: a label the encoder holds but that position does not is one the frozen decoder does not read out by itself.
Last, the frozen model's own rank-classification scores of the label words (no prompt), as they are and
recalibrated by a logistic regression on them: a label in the decoder's hidden state but not in those scores is
one the frozen output layer does not point at the label words, which a prompt that mostly shifts the scores
(as a short prompt on a small model does) cannot change.

Features come from the task's own seqio pipeline (`eval_data.load_split`: the same inputs prompt tuning sees); the
probe is fitted on the first `train_examples` rows of the train split and scored on the validation split.

`encoder_reliance` asks the other half of the question: how much does the decoder listen to the encoder at all?
It scores held-out pretraining batches twice, once as they are and once with every row's encoder input swapped for
the next row's. A prompt acts on the decoder only through the encoder, so a backbone whose cross entropy barely
rises under the swap, above all on the first target token (where a classification label sits), leaves prompt
tuning little to steer with.
"""
import collections
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from xprompt_jax.evaluation import eval_data
from xprompt_jax.evaluation import labels as labels_lib
from xprompt_jax.evaluation import scoring
from xprompt_jax.models.t5 import T5
from xprompt_jax.tasks import registry_utils as ru
from xprompt_jax.training import losses


FEATURES = ("embeddings", "encoder", "decoder")


def pooled_features(model: T5, params: Mapping[str, Any], inputs: np.ndarray,
                    batch_size: int = 128) -> dict[str, np.ndarray]:
  """{"encoder": [N, D] mean of the encoder output over non-padding positions, "embeddings": [N, D] the same mean
  of the input token embeddings, "decoder": [N, D] the decoder's final (normalised) hidden state at its first
  position, the start token's, from which the logits of a label's first token are read}, in float32.
  `inputs`: [N, L] zero-padded token ids."""

  @jax.jit
  def features(params, tokens):
    start = jnp.zeros((tokens.shape[0], 1), jnp.int32)  # T5's decoder start token.
    _, hidden = model.apply({"params": params}, tokens, start, return_hidden=True)
    weights = hidden["encoder_valid"][..., None].astype(jnp.float32)
    count = jnp.maximum(jnp.sum(weights, 1), 1.0)
    embedded = jnp.asarray(params["token_embedder"]["embedding"], jnp.float32)[tokens]
    return {"encoder": jnp.sum(hidden["encoder"].astype(jnp.float32) * weights, 1) / count,
            "embeddings": jnp.sum(embedded * weights, 1) / count,
            "decoder": hidden["decoder"][:, 0].astype(jnp.float32)}

  return _batched(features, params, inputs, batch_size)


def label_scores(model: T5, params: Mapping[str, Any], inputs: np.ndarray, candidates: np.ndarray,
                 batch_size: int = 128) -> np.ndarray:
  """[N, K] log-likelihood the frozen model (no prompt) gives each of the K label sequences `candidates` ([K, T]
  token rows ending in EOS, zero-padded), as rank classification scores them."""

  @jax.jit
  def scores(params, tokens):
    return {"scores": scoring.rank_classification_scores(model, params, tokens, jnp.asarray(candidates))}

  return _batched(scores, params, inputs, batch_size)["scores"]


def _batched(fn, params, inputs: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
  """`fn(params, tokens) -> {name: [B, ...]}` over `inputs` in batches of one compiled shape, concatenated."""
  params = jax.tree_util.tree_map(jnp.asarray, params)
  out = collections.defaultdict(list)
  for start in range(0, len(inputs), batch_size):
    rows = inputs[start:start + batch_size]
    padded = np.concatenate([rows, np.repeat(rows[:1], batch_size - len(rows), 0)])  # One compiled shape.
    for name, value in fn(params, jnp.asarray(padded)).items():
      out[name].append(np.asarray(value, np.float32)[:len(rows)])
  return {name: np.concatenate(parts) for name, parts in out.items()}


def probe_accuracy(train_x: np.ndarray, train_y: Sequence[str], val_x: np.ndarray, val_y: Sequence[str],
                   c: float = 1.0) -> float:
  """Validation accuracy (%) of an L2-regularised logistic regression fitted on standardised train features."""
  from sklearn.linear_model import LogisticRegression
  from sklearn.pipeline import make_pipeline
  from sklearn.preprocessing import StandardScaler
  if len(set(train_y)) < 2:
    raise ValueError(f"the probe needs at least two labels in its training rows, got {sorted(set(train_y))}")
  clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))
  clf.fit(train_x, list(train_y))
  return 100.0 * float(clf.score(val_x, list(val_y)))


def labels(split: eval_data.EvalSplit) -> list[str]:
  """Each row's target text (`targets_pretokenized`), the label the probe predicts."""
  out = []
  for ex in split.examples:
    target = ex.get("targets_pretokenized")
    if target is None:
      raise ValueError(f"task {split.task_name!r} examples have no targets_pretokenized to probe")
    out.append(ru.as_text(target))
  return out


def _swap_inputs(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """`batch` with each row's encoder features replaced by the next row's (the last row takes the first's)."""
  return {k: np.roll(v, 1, axis=0) if k.startswith("encoder_") else v for k, v in batch.items()}


def encoder_reliance(model: T5, params: Mapping[str, Any], batches: Sequence[Mapping[str, np.ndarray]],
                     ) -> dict[str, float]:
  """Cross entropy (nats/token) of the decoder targets of `batches` with each row's own encoder input ("matched")
  and with the next row's ("swapped"), over every target token and over the first target token of each row
  ("*_first"): {"matched", "swapped", "matched_first", "swapped_first", "tokens", "rows"}. Batches need at least
  two rows (a one-row batch would be swapped with itself)."""

  @jax.jit
  def sums(params, batch):
    logits = model.apply({"params": params}, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
                         encoder_segment_ids=batch.get("encoder_segment_ids"),
                         decoder_segment_ids=batch.get("decoder_segment_ids"))
    targets = batch["decoder_target_tokens"]
    weights = batch.get("decoder_loss_weights", (targets > 0)).astype(jnp.float32)
    nll = losses.cross_entropy_with_z_loss(logits, targets, weights, z_loss=0.0)[2]  # Weighted, per token.
    first = jnp.cumsum(weights, axis=1) == 1  # Each row's first weighted target position (and padding after it).
    return jnp.stack([jnp.sum(nll), jnp.sum(weights), jnp.sum(nll * first), jnp.sum(weights * first)])

  params = jax.tree_util.tree_map(jnp.asarray, params)
  totals = {"matched": np.zeros(4), "swapped": np.zeros(4)}
  rows = 0
  for batch in batches:
    n = len(batch["encoder_input_tokens"])
    if n < 2:
      raise ValueError(f"encoder_reliance needs batches of at least 2 rows to swap inputs, got one of {n}")
    for key in ("encoder_input_tokens", "decoder_target_tokens"):
      if np.max(batch[key]) >= model.config.vocab_size:
        raise ValueError(f"encoder_reliance: {key} holds token id {int(np.max(batch[key]))}, outside the model's "
                         f"vocabulary of {model.config.vocab_size}")
    rows += n
    totals["matched"] += np.asarray(sums(params, dict(batch)))
    totals["swapped"] += np.asarray(sums(params, _swap_inputs(batch)))
  if totals["matched"][1] == 0:  # Also no batches at all.
    raise ValueError("encoder_reliance: the batches hold no weighted target token")
  out: dict[str, float] = {"tokens": float(totals["matched"][1]), "rows": float(rows)}
  for name, (loss, count, first_loss, first_count) in totals.items():
    out[name] = float(loss / count)
    out[f"{name}_first"] = float(first_loss / max(first_count, 1.0))
  return out


def probe_task(model: T5, params: Mapping[str, Any], task, feature_lengths: Mapping[str, int],
               train_examples: int = 4000, val_examples: Optional[int] = None, c: float = 1.0,
               batch_size: int = 128) -> dict[str, Any]:
  """Probes `task` (a seqio.Task): {"task", "train_rows", "val_rows", "majority" (the train split's most frequent
  label, scored on validation), "embeddings", "encoder", "decoder" (probe validation accuracies, %),
  "zero_shot" (rank classification by the frozen model, no prompt, %), "label_scores" (a logistic regression on
  those K label log-likelihoods: what re-weighting and shifting the frozen model's own label scores reaches, %)}.

  The labels are the target texts; their sorted distinct values are the K candidates scored."""
  train = eval_data.load_split(task, "train", feature_lengths, train_examples)
  val = eval_data.load_split(task, "validation", feature_lengths, val_examples)
  train_y, val_y = labels(train), labels(val)
  both, n = np.concatenate([train.inputs, val.inputs]), len(train)  # One pass (and one compile) for both splits.
  feats = pooled_features(model, params, both, batch_size)
  majority = collections.Counter(train_y).most_common(1)[0][0]
  out = {"task": task.name, "train_rows": len(train), "val_rows": len(val),
         "majority": 100.0 * float(np.mean([y == majority for y in val_y]))}
  for name in FEATURES:
    out[name] = probe_accuracy(feats[name][:n], train_y, feats[name][n:], val_y, c)
  words = sorted(set(train_y) | set(val_y))
  candidates = labels_lib.tokenize_candidates(words, task.output_features["targets"].vocabulary)
  scores = label_scores(model, params, both, candidates, batch_size)
  train_s, val_s = scores[:n], scores[n:]
  out["zero_shot"] = 100.0 * float(np.mean([words[int(i)] == y for i, y in zip(np.argmax(val_s, 1), val_y)]))
  out["label_scores"] = probe_accuracy(train_s, train_y, val_s, val_y, c)
  return out
