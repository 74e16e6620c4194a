"""Length bucketing: bounded shapes, no example lost, clear errors."""
import numpy as np
import pytest

from xprompt_jax.training import bucketing


def _examples(lengths):
  return [{"inputs": np.arange(2, n + 2, dtype=np.int32), "targets": np.array([5, 1], np.int32)} for n in lengths]


def test_each_batch_pads_to_its_bucket_and_keeps_every_example():
  lengths = [3, 70, 5, 120, 8, 60, 200, 4]
  batches = list(bucketing.bucketed_batches(_examples(lengths), (16, 64, 128, 256), batch_size=2, targets_length=4))
  shapes = [b["encoder_input_tokens"].shape[1] for b in batches]
  assert set(shapes) <= {16, 64, 128, 256}
  assert sum(bucketing.num_examples(b) for b in batches) == len(lengths)
  first = batches[0]  # 3 and 5 fill the 16-bucket first.
  assert first["encoder_input_tokens"].shape == (2, 16)
  np.testing.assert_array_equal(first["encoder_input_tokens"][0, :4], [2, 3, 4, 0])
  np.testing.assert_array_equal(first["decoder_input_tokens"][0], [0, 5, 1, 0])
  np.testing.assert_array_equal(first["decoder_loss_weights"][0], [1, 1, 0, 0])


def test_bad_boundaries_and_too_long_examples():
  with pytest.raises(ValueError, match="strictly increasing"):
    list(bucketing.bucketed_batches(_examples([3]), (64, 16), 2, 4))
  with pytest.raises(ValueError, match="longer than the largest bucket 16"):
    list(bucketing.bucketed_batches(_examples([30]), (8, 16), 2, 4))


def test_tokenized_examples_from_real_rte(shared):
  del shared
  ex = list(zip(range(5), bucketing.tokenized_examples("super_glue_rte_v102", "validation", 512, 8)))
  assert len(ex) == 5 and all(e["inputs"][-1] == 1 and e["inputs"].ndim == 1 for _, e in ex)
