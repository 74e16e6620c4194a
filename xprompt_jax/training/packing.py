"""Prompt-aware packing: several examples per row, each packed segment with its own copy of the soft prompt.

T5X packs examples into rows with `*_segment_ids` (attention stays within a segment) and `*_positions`. A soft
prompt cannot simply be prepended to a packed row: every example must see the prompt, and only its own copy.
Here the data side reserves `prompt_length` encoder positions at the start of every segment and marks them in
`encoder_prompt_positions` (prompt row index there, -1 elsewhere); `T5.encode` writes the prompt rows into those
positions (`xprompt_jax.models.t5._scatter_prompt`). Each segment of the row then reads
`[prompt copy | inputs]`, exactly the unpacked encoder input without its padding.

Relative positions: the model uses `arange` over the whole row, as T5X does, not the per-segment
`*_positions`. T5's attention bias depends only on `key_position - query_position`, which is the same under
both numberings for two positions of one segment; pairs from different segments are masked by the segment ids,
and the causal decoder mask compares row positions, which order a segment's tokens as its own positions do. So a
packed segment computes what the unpacked example computes (`tests/test_packing.py` checks the per-example
losses). The per-segment `*_positions` are still emitted for T5X-compatible consumers.

    rows = pack_examples(examples, encoder_length=612, decoder_length=16, prompt_length=100)
    for batch in packed_batches(examples, batch_size=8, ...): state, metrics = train_step(state, batch, frozen)
"""
import dataclasses
from typing import Iterable, Iterator, Mapping, Sequence

import jax.numpy as jnp
import numpy as np

Example = Mapping[str, np.ndarray]  # {"inputs": [n] int ids ending in EOS, "targets": [m] ...} (seqio, trimmed).

PACKED_FEATURES = ("encoder_input_tokens", "encoder_prompt_positions", "encoder_segment_ids", "encoder_positions",
                   "decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights", "decoder_segment_ids",
                   "decoder_positions")


@dataclasses.dataclass
class _Row:
  """One packed row being filled."""
  encoder_length: int
  decoder_length: int
  enc_used: int = 0
  dec_used: int = 0
  segments: list = dataclasses.field(default_factory=list)

  def fits(self, enc: int, dec: int, max_segments: int) -> bool:
    return (self.enc_used + enc <= self.encoder_length and self.dec_used + dec <= self.decoder_length
            and len(self.segments) < max_segments)


def _lengths(example: Example, index: int, prompt_length: int, encoder_length: int, decoder_length: int):
  try:
    inputs, targets = np.asarray(example["inputs"]), np.asarray(example["targets"])
  except KeyError as e:
    raise ValueError(f"example {index} has no {e.args[0]!r} feature (keys: {sorted(example)})") from e
  enc, dec = prompt_length + inputs.shape[0], targets.shape[0]
  if enc > encoder_length or dec > decoder_length or dec == 0:
    raise ValueError(f"example {index}: prompt {prompt_length} + inputs {inputs.shape[0]} = {enc} encoder positions "
                     f"and {dec} targets do not fit a packed row of encoder_length={encoder_length}, "
                     f"decoder_length={decoder_length} (or it has no targets); trim it or enlarge the row")
  return inputs, targets


def _empty_row(encoder_length: int, decoder_length: int) -> dict[str, np.ndarray]:
  enc = lambda fill: np.full((encoder_length,), fill, np.int32)
  dec = lambda fill: np.full((decoder_length,), fill, np.int32)
  return {"encoder_input_tokens": enc(0), "encoder_prompt_positions": enc(-1), "encoder_segment_ids": enc(0),
          "encoder_positions": enc(0), "decoder_input_tokens": dec(0), "decoder_target_tokens": dec(0),
          "decoder_loss_weights": dec(0), "decoder_segment_ids": dec(0), "decoder_positions": dec(0)}


def _write(row: dict, segment: int, e0: int, d0: int, inputs: np.ndarray, targets: np.ndarray,
           prompt_length: int) -> None:
  """Writes one example as segment `segment` (1-based) at encoder offset e0 and decoder offset d0."""
  n, m = prompt_length + inputs.shape[0], targets.shape[0]
  row["encoder_prompt_positions"][e0:e0 + prompt_length] = np.arange(prompt_length)
  row["encoder_input_tokens"][e0 + prompt_length:e0 + n] = inputs
  row["encoder_segment_ids"][e0:e0 + n] = segment
  row["encoder_positions"][e0:e0 + n] = np.arange(n)
  row["decoder_target_tokens"][d0:d0 + m] = targets
  row["decoder_input_tokens"][d0 + 1:d0 + m] = targets[:-1]  # Shifted right within the segment; 0 starts it.
  row["decoder_loss_weights"][d0:d0 + m] = targets > 0
  row["decoder_segment_ids"][d0:d0 + m] = segment
  row["decoder_positions"][d0:d0 + m] = np.arange(m)


def pack_examples(examples: Iterable[Example], encoder_length: int, decoder_length: int, prompt_length: int,
                  max_segments: int = 64) -> Iterator[dict[str, np.ndarray]]:
  """Packed rows (dicts of `PACKED_FEATURES`), filled greedily in example order (T5X's sequential packing).

  A row is closed when the next example does not fit its remaining encoder or decoder positions, or when it
  holds `max_segments` examples (a bound on the per-segment loss bookkeeping, `segment_losses`).
  """
  row = _Row(encoder_length, decoder_length)
  for index, example in enumerate(examples):
    inputs, targets = _lengths(example, index, prompt_length, encoder_length, decoder_length)
    enc, dec = prompt_length + inputs.shape[0], targets.shape[0]
    if not row.fits(enc, dec, max_segments):
      yield _materialise(row, prompt_length)
      row = _Row(encoder_length, decoder_length)
    row.segments.append((row.enc_used, row.dec_used, inputs, targets))
    row.enc_used, row.dec_used = row.enc_used + enc, row.dec_used + dec
  if row.segments:
    yield _materialise(row, prompt_length)


def _materialise(row: _Row, prompt_length: int) -> dict[str, np.ndarray]:
  out = _empty_row(row.encoder_length, row.decoder_length)
  for segment, (e0, d0, inputs, targets) in enumerate(row.segments, start=1):
    _write(out, segment, e0, d0, inputs, targets, prompt_length)
  return out


def stack_rows(rows: Sequence[dict[str, np.ndarray]], batch_size: int) -> dict[str, np.ndarray]:
  """A batch of `batch_size` rows; missing rows are empty (no segment, no loss weight)."""
  if not rows or len(rows) > batch_size:
    raise ValueError(f"stack_rows: {len(rows)} rows for a batch of {batch_size}")
  template = rows[0]
  empty = _empty_row(template["encoder_input_tokens"].shape[0], template["decoder_input_tokens"].shape[0])
  full = list(rows) + [empty] * (batch_size - len(rows))
  return {k: np.stack([r[k] for r in full]) for k in template}


def packed_batches(examples: Iterable[Example], batch_size: int, encoder_length: int, decoder_length: int,
                   prompt_length: int, max_segments: int = 64) -> Iterator[dict[str, np.ndarray]]:
  """Batches of packed rows; the last batch is completed with empty rows, so every batch has one shape."""
  buffer = []
  for row in pack_examples(examples, encoder_length, decoder_length, prompt_length, max_segments):
    buffer.append(row)
    if len(buffer) == batch_size:
      yield stack_rows(buffer, batch_size)
      buffer = []
  if buffer:
    yield stack_rows(buffer, batch_size)


def num_segments(batch: Mapping[str, np.ndarray]) -> int:
  """Real examples in a packed batch."""
  return int(np.sum(np.max(np.asarray(batch["decoder_segment_ids"]), axis=-1)))


def segment_losses(per_token, segment_ids, max_segments: int):
  """`[B, max_segments]` summed per-token losses of segments 1..max_segments (jit-friendly).

  `per_token` and `segment_ids` are `[B, T]`; column s holds the loss of segment s + 1 (0 where absent).
  """
  onehot = segment_ids[..., None] == jnp.arange(1, max_segments + 1)
  return jnp.sum(jnp.where(onehot, per_token[..., None], 0.0), axis=1)
