"""Tree helpers: '/'-paths, and validation messages that name each missing, unexpected or wrongly shaped path."""
import jax
import numpy as np
import pytest

from xprompt_jax.checkpoints import tree
from xprompt_jax.models.config import T5Config


def test_flatten_unflatten_round_trip():
  nested = {"a": {"b": np.zeros(2), "c": {"d": np.ones(3)}}, "e": np.zeros(1)}
  flat = tree.flatten(nested)
  assert sorted(flat) == ["a/b", "a/c/d", "e"]
  back = tree.unflatten(flat)
  assert back["a"]["c"]["d"] is nested["a"]["c"]["d"]


def test_mismatches_name_every_problem():
  expected = {"x": {"k": jax.ShapeDtypeStruct((2, 3), np.float32), "gone": jax.ShapeDtypeStruct((4,), np.float32)}}
  params = {"x": {"k": np.zeros((3, 2)), "extra": np.zeros(5)}}
  problems = tree.mismatches(params, expected)
  assert "missing parameter x/gone (expected shape (4,))" in problems
  assert "unexpected parameter x/extra (shape (5,))" in problems
  assert "shape mismatch for x/k: checkpoint has (3, 2), model expects (2, 3)" in problems
  with pytest.raises(tree.CheckpointError, match=r"checkpoint SRC does not match[\s\S]*x/gone[\s\S]*x/extra"):
    tree.validate(params, expected, "SRC")


def test_validate_accepts_matching_tree_and_expected_params_is_the_model_tree():
  config = T5Config(vocab_size=16, emb_dim=4, num_heads=2, head_dim=3, mlp_dim=5, num_encoder_layers=1,
                    num_decoder_layers=2)
  expected = tree.expected_params(config)
  params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), expected)
  tree.validate(params, expected, "ok")
  flat = tree.flatten(expected)
  assert flat["encoder/layers_0/attention/query/kernel"].shape == (4, 6)
  assert "decoder/layers_1/mlp/wi_1/kernel" in flat and "encoder/layers_1/mlp/wi_0/kernel" not in flat
  assert tree.to_numpy({"a": jax.numpy.ones(2)})["a"].__class__ is np.ndarray


def test_shape_of_accepts_arrays_structs_and_tuples():
  assert tree.shape_of(np.zeros((2, 3))) == (2, 3)
  assert tree.shape_of(jax.ShapeDtypeStruct((4,), np.float32)) == (4,)
  assert tree.shape_of((5, 6)) == (5, 6)
  assert tree.mismatches({"a": (2, 3)}, {"a": jax.ShapeDtypeStruct((2, 4), np.float32)}) == [
      "shape mismatch for a: checkpoint has (2, 3), model expects (2, 4)"]


def test_stack_and_unstack_layers():
  config = T5Config(vocab_size=16, emb_dim=4, num_heads=2, head_dim=3, mlp_dim=5, num_encoder_layers=2,
                    num_decoder_layers=3)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), tree.expected_params(config))
  stacked = tree.stack_layers(params)
  assert tree.is_scanned(stacked) and not tree.is_scanned(params)
  tree.validate(stacked, tree.expected_params(config.replace(scan_layers=True)), "stacked")
  np.testing.assert_array_equal(stacked["decoder"]["layers"]["mlp"]["wo"]["kernel"][2],
                                params["decoder"]["layers_2"]["mlp"]["wo"]["kernel"])
  back = tree.unstack_layers(stacked)
  assert sorted(tree.flatten(back)) == sorted(tree.flatten(params))
  for key, value in tree.flatten(params).items():
    np.testing.assert_array_equal(tree.flatten(back)[key], value)
  assert tree.unscanned(config.replace(scan_layers=True)) == config
  broken = dict(params, encoder={k: v for k, v in params["encoder"].items() if k != "layers_0"})
  broken["encoder"]["layers_2"] = params["encoder"]["layers_1"]
  with pytest.raises(tree.CheckpointError, match=r"cannot stack encoder: layers \[0\] are missing"):
    tree.stack_layers(broken)
