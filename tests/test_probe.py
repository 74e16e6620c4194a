"""Linear probes of a frozen backbone: padding-free pooled features, and a probe that reads a lexical label."""
import functools

import jax
import numpy as np
import pytest
import seqio
import tensorflow as tf

import numerics
from task_helpers import TINY_VOCAB
from xprompt_jax.evaluation import probe
from xprompt_jax.models.config import PRESETS
from xprompt_jax.models.t5 import T5, init_params
from xprompt_jax.tasks import vocab

CONFIG = PRESETS["t5_1_1_tiny"].replace(vocab_size=TINY_VOCAB.vocab_size)


@functools.lru_cache(maxsize=None)
def _model():
  return T5(CONFIG), init_params(CONFIG, jax.random.PRNGKey(0))


def _sentiment_task() -> seqio.Task:
  """Label "positive" iff the sentence says "good" (the other words are the same, shuffled): readable from the bag
  of words alone."""
  rng = np.random.default_rng(0)
  fillers = ["the", "movie", "was", "very", "really"]

  def rows(split, shuffle_files=False, seed=None):
    del shuffle_files, seed
    n = 300 if split == "train" else 100
    out = {"inputs": [], "targets": []}
    for i in range(n):
      positive = bool(rng.integers(2)) if split == "train" else i % 2 == 0
      words = fillers + ["good" if positive else "bad"]
      rng.shuffle(words)
      out["inputs"].append(" ".join(words))
      out["targets"].append("positive" if positive else "negative")
    return tf.data.Dataset.from_tensor_slices(out)

  return seqio.Task("probe_test_sentiment", seqio.FunctionDataSource(rows, splits=("train", "validation")),
                    output_features=vocab.make_output_features(TINY_VOCAB),
                    preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim])


def test_pooled_features_ignore_padding():
  model, params = _model()
  row = np.array([[5, 9, 12, 1] + [0] * 12], np.int32)
  longer = np.array([[5, 9, 12, 1] + [0] * 28], np.int32)
  a, b = probe.pooled_features(model, params, row, 4), probe.pooled_features(model, params, longer, 4)
  for name in probe.FEATURES:
    assert a[name].shape == (1, CONFIG.emb_dim)
    numerics.assert_close(b[name], a[name], err_msg=name)  # The network on 16 against 32 positions.
  numerics.assert_close(a["embeddings"][0], np.asarray(params["token_embedder"]["embedding"])[[5, 9, 12, 1]]
                        .mean(0), roundings=numerics.FEW)  # A mean of 4 rows.


def test_decoder_feature_is_the_hidden_state_the_first_logits_are_read_from():
  model, params = _model()
  rows = np.array([[5, 9, 12, 1, 0, 0], [7, 3, 1, 0, 0, 0], [4, 4, 4, 4, 4, 1]], np.int32)
  feats = probe.pooled_features(model, params, rows, 2)  # Two batches, the second padded.
  start = np.zeros((3, 1), np.int32)
  logits, hidden = model.apply({"params": params}, rows, start, return_hidden=True)
  numerics.assert_close(feats["decoder"], np.asarray(hidden["decoder"])[:, 0])
  head = np.asarray(params["decoder"]["logits_dense"]["kernel"])  # T5 1.1: an untied LM head.
  # The features' network rounding carried through one emb_dim-term contraction, on the scale of its terms.
  terms = (np.abs(feats["decoder"]) @ np.abs(head)).max()
  numerics.assert_close(feats["decoder"] @ head, np.asarray(logits)[:, 0],
                        roundings=numerics.NETWORK + numerics.sum_of(CONFIG.emb_dim), scale=terms)
  numerics.assert_differs(feats["decoder"][1], feats["decoder"][0])  # It depends on the input.


def test_probe_reads_a_lexical_label_above_the_majority_class():
  model, params = _model()
  out = probe.probe_task(model, params, _sentiment_task(), {"inputs": 48, "targets": 8}, train_examples=300)
  assert out["train_rows"] == 300 and out["val_rows"] == 100 and out["majority"] == pytest.approx(50.0)
  assert out["embeddings"] >= 95.0  # "good" vs "bad" is one embedding apart.
  assert out["encoder"] > 75.0
  assert {"decoder", "zero_shot", "label_scores"} <= out.keys()  # Values: a random decoder need not read "good".


def test_label_scores_are_rank_classification_scores_and_zero_shot_is_their_argmax():
  from xprompt_jax.evaluation import labels, scoring
  model, params = _model()
  words = ["negative", "positive"]
  candidates = labels.tokenize_candidates(words, TINY_VOCAB)
  rows = np.array([[5, 9, 12, 1, 0, 0], [7, 3, 1, 0, 0, 0], [4, 4, 4, 4, 4, 1]], np.int32)
  got = probe.label_scores(model, params, rows, candidates, batch_size=2)  # Two batches, the second padded.
  want = np.asarray(scoring.rank_classification_scores(model, params, rows, candidates))
  assert got.shape == (3, 2)
  numerics.assert_close(got, want)  # Batches of 2 (one padded) against one batch of 3.
  task = _sentiment_task()
  out = probe.probe_task(model, params, task, {"inputs": 48, "targets": 8}, train_examples=300)
  from xprompt_jax.evaluation import eval_data
  val = eval_data.load_split(task, "validation", {"inputs": 48, "targets": 8})
  scores = probe.label_scores(model, params, val.inputs, candidates)
  said = [words[i] for i in np.argmax(scores, 1)]
  assert out["zero_shot"] == pytest.approx(100.0 * np.mean([s == y for s, y in zip(said, probe.labels(val))]))


def test_probe_needs_two_labels():
  with pytest.raises(ValueError, match="at least two labels"):
    probe.probe_accuracy(np.zeros((4, 2)), ["a"] * 4, np.zeros((2, 2)), ["a", "b"])


def _lm_batch(rows: int, seed: int = 0, same: bool = False) -> dict:
  rng = np.random.default_rng(seed)
  enc = rng.integers(2, CONFIG.vocab_size, size=(1 if same else rows, 12)).astype(np.int32)
  dec = rng.integers(2, CONFIG.vocab_size, size=(1 if same else rows, 7)).astype(np.int32)
  if same:
    enc, dec = np.repeat(enc, rows, 0), np.repeat(dec, rows, 0)
  weights = np.ones_like(dec, np.float32)
  weights[0, :2] = 0.0  # Row 0's first target token is at position 2.
  weights[:, -1] = 0.0
  return {"encoder_input_tokens": enc, "decoder_target_tokens": dec,
          "decoder_input_tokens": np.concatenate([np.zeros_like(dec[:, :1]), dec[:, :-1]], 1),
          "decoder_loss_weights": weights}


def test_encoder_reliance_matches_the_validation_loss_and_scores_each_rows_first_target_token():
  from xprompt_jax.pretraining import train as pretrain
  model, params = _model()
  batches = [_lm_batch(4, 0), _lm_batch(4, 1)]
  out = probe.encoder_reliance(model, params, batches)
  assert out["rows"] == 8 and out["tokens"] == 8 * 6 - 2 * 2
  assert all(np.isfinite(v) for v in out.values())
  loss = pretrain.validation_loss(jax.jit(pretrain.make_eval_step(model)), params, batches)
  numerics.assert_close(out["matched"], loss)  # Two programs of the same forward passes and token means.
  first, count = 0.0, 0
  for b in batches:
    logits = model.apply({"params": params}, b["encoder_input_tokens"], b["decoder_input_tokens"])
    nll = -np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), b["decoder_target_tokens"][..., None], -1)[..., 0]
    for row in range(4):
      first += nll[row, int(np.argmax(b["decoder_loss_weights"][row] > 0))]
      count += 1
  numerics.assert_close(out["matched_first"], first / count)
  numerics.assert_differs(out["swapped"], out["matched"])  # Random cross-attention still reads the input.


def test_encoder_reliance_is_zero_when_every_row_has_the_same_input():
  model, params = _model()
  out = probe.encoder_reliance(model, params, [_lm_batch(3, same=True)])
  # The same jitted program on the same values (the rows are identical, so swapping them changes nothing).
  numerics.assert_close(out["swapped"], out["matched"], roundings=numerics.FEW)
  numerics.assert_close(out["swapped_first"], out["matched_first"], roundings=numerics.FEW)


def test_encoder_reliance_rejects_one_row_batches():
  model, params = _model()
  with pytest.raises(ValueError, match="at least 2 rows"):
    probe.encoder_reliance(model, params, [_lm_batch(1)])


def test_encoder_reliance_rejects_token_ids_outside_the_vocabulary():
  model, params = _model()
  batch = _lm_batch(2)
  batch["decoder_target_tokens"][1, 3] = CONFIG.vocab_size
  with pytest.raises(ValueError, match=f"decoder_target_tokens holds token id {CONFIG.vocab_size}"):
    probe.encoder_reliance(model, params, [batch])


def test_encoder_reliance_needs_a_weighted_target_token():
  model, params = _model()
  with pytest.raises(ValueError, match="no weighted target token"):
    probe.encoder_reliance(model, params, [])
