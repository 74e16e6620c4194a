"""In-memory training examples (pipelines.examples): fixed-seed k-shot draws, padded epoch batches, and the endless
cycling stream that is a pure function of its position (so resumed training continues exactly)."""
import numpy as np
import pytest

from xprompt_jax.pipelines import examples as examples_lib
from xprompt_jax.training import data as data_lib


def _toy(n=10):
  return {"x": np.arange(n)[:, None] * np.ones((1, 3), np.int32), "y": np.arange(n)}


def test_draw_shots_is_fixed_by_the_seed():
  a = examples_lib.draw_shots(250, 32, seed=0)
  assert len(set(a.tolist())) == 32 and a.min() >= 0 and a.max() < 250 and (np.diff(a) > 0).all()
  np.testing.assert_array_equal(a, examples_lib.draw_shots(250, 32, seed=0))
  assert not np.array_equal(a, examples_lib.draw_shots(250, 32, seed=1))
  with pytest.raises(ValueError, match="cannot draw 40 shots from a split of 32 examples"):
    examples_lib.draw_shots(32, 40, seed=0)


def test_epoch_batches_pad_the_last_batch_and_report_real_rows():
  out = list(examples_lib.epoch_batches(_toy(10), 4))
  assert [n for _, n in out] == [4, 4, 2]
  assert all(b["y"].shape == (4,) for b, _ in out)
  np.testing.assert_array_equal(out[2][0]["y"], [8, 9, 8, 8])
  np.testing.assert_array_equal(np.concatenate([b["y"][:n] for b, n in out]), np.arange(10))


def test_cycling_stream_is_a_function_of_position():
  fn = examples_lib.cycling_batches_fn(_toy(10), seed=3)
  cfg = data_lib.DataConfig(mixture_or_task_name="unused", batch_size=4)
  stream = fn(cfg, 0)
  first = [next(stream)["y"] for _ in range(5)]  # 20 rows: two whole epochs.
  np.testing.assert_array_equal(np.sort(np.concatenate(first)[:10]), np.arange(10))
  np.testing.assert_array_equal(np.sort(np.concatenate(first)[10:]), np.arange(10))
  assert not np.array_equal(np.concatenate(first)[:10], np.concatenate(first)[10:])  # Reshuffled per epoch.
  resumed = fn(cfg, 3)  # A resumed run skips exactly the batches it consumed.
  np.testing.assert_array_equal(next(resumed)["y"], first[3])
  np.testing.assert_array_equal(next(resumed)["y"], first[4])


def test_load_examples_reads_the_real_cb_train_split(shared):
  del shared
  cfg = data_lib.DataConfig(mixture_or_task_name="super_glue_cb_v102", inputs_length=48, targets_length=4)
  examples = examples_lib.load_examples(cfg)
  assert examples_lib.num_rows(examples) == 250
  assert examples["encoder_input_tokens"].shape == (250, 48)
  assert examples["decoder_target_tokens"].shape == (250, 4) and examples["decoder_loss_weights"].sum() > 0
  assert examples_lib.num_rows(examples_lib.load_examples(cfg, max_examples=7)) == 7
  assert examples_lib.count_examples(cfg) == 250
  with pytest.raises(ValueError, match="needs DataConfig.pack=False"):
    examples_lib.load_examples(data_lib.DataConfig(mixture_or_task_name="super_glue_cb_v102", pack=True))
