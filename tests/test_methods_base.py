"""The method interface: registry, gin configs, parameter counting and the shared checks of every method."""
import pathlib

import gin
import jax
import jax.numpy as jnp
import pytest
from jax.sharding import PartitionSpec

from xprompt_jax import methods
from xprompt_jax.methods import METHODS, count_params, get_method
from xprompt_jax.methods.base import embedding_table
from xprompt_jax.models.config import T5Config
from xprompt_jax.models.t5 import abstract_params
from xprompt_jax.training import partitioning

GIN_DIR = pathlib.Path(__file__).resolve().parents[1] / "gin"
CFG = T5Config(vocab_size=64, emb_dim=16, num_heads=2, head_dim=4, mlp_dim=32, num_encoder_layers=2,
               num_decoder_layers=3, relpos_num_buckets=8, relpos_max_distance=16)
SMALL = {"prompt": dict(length=4), "prefix": dict(length=3, hidden_dim=5), "mpt": dict(length=4, num_tasks=2),
         "xprompt": dict(length=4, pieces=4)}


def test_count_params_on_arrays_and_shapes():
  tree = {"a": jnp.zeros((3, 4)), "b": [jax.ShapeDtypeStruct((5,), jnp.float32), jnp.zeros(())]}
  assert count_params(tree) == 12 + 5 + 1
  assert count_params({}) == 0


def test_registry_builds_every_method_and_names_the_known_ones():
  assert sorted(METHODS) == ["mpt", "prefix", "prompt", "xprompt"]
  for name, kwargs in SMALL.items():
    method = get_method(name, **kwargs)
    assert isinstance(method, METHODS[name]) and isinstance(method, methods.Method) and method.name == name
  with pytest.raises(ValueError, match="unknown method 'lora'; known methods: prompt, prefix, mpt, xprompt"):
    get_method("lora")


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_method_fits_the_interface(name):
  method = get_method(name, **SMALL[name])
  assert hash(method) == hash(get_method(name, **SMALL[name]))  # Usable as a static jit argument.
  frozen = abstract_params(CFG)
  trainable = method.abstract_trainable(CFG, frozen)
  axes = method.logical_axes(CFG)
  is_spec = lambda x: isinstance(x, PartitionSpec)
  assert jax.tree_util.tree_structure(axes, is_leaf=is_spec) == jax.tree_util.tree_structure(trainable)
  for spec, leaf in zip(jax.tree_util.tree_leaves(axes, is_leaf=is_spec), jax.tree_util.tree_leaves(trainable)):
    assert len(spec) == len(leaf.shape)
  partitioning.logical_to_mesh_axes(axes, shapes=trainable)  # Every logical name has a sharding rule.
  assert method.num_params(trainable) == count_params(trainable) > 0
  labels = method.param_labels(trainable)
  if labels is not None:
    assert jax.tree_util.tree_structure(labels) == jax.tree_util.tree_structure(trainable)
  exported = jax.eval_shape(lambda t: method.export(t, CFG), trainable)
  infer = method.inference_method()
  assert jax.tree_util.tree_structure(infer.logical_axes(CFG), is_leaf=is_spec) == \
      jax.tree_util.tree_structure(exported)
  batch = {"task_id": jnp.zeros((2,), jnp.int32)}
  injection = jax.eval_shape(lambda t: method.inject(t, batch, CFG), trainable)
  assert injection.prompt_length == method.prompt_length


@pytest.mark.parametrize("name", sorted(SMALL))
def test_gin_file_binds_the_method(name):
  gin.clear_config()
  try:
    gin.parse_config_files_and_bindings([str(GIN_DIR / "models" / "t5_1_1_base.gin"),
                                         str(GIN_DIR / "methods" / f"{name}.gin")], [])
    method = get_method()
    config = T5Config()
  finally:
    gin.clear_config()
  assert isinstance(method, METHODS[name])
  expected = {"prompt": 76_800, "xprompt": 76_800, "mpt": 77_668,
              "prefix": 10 * 768 + 768 * 512 + 512 + 3 * 2 * (512 * 12 * 768 + 12 * 768)}[name]
  assert method.num_params(method.abstract_trainable(config)) == expected
  text = (GIN_DIR / "methods" / f"{name}.gin").read_text()
  assert text.startswith("#") and "xprompt-jax train" in text and f"methods/{name}.gin" in text


def test_embedding_table_error_names_the_keys():
  with pytest.raises(ValueError, match=r"no token_embedder/embedding \(top-level keys: \['decoder', 'encoder'\]\)"):
    embedding_table({"encoder": {}, "decoder": {}})


def test_check_lengths_is_zero_for_prefixes():
  get_method("prefix").check_lengths(8, 8)
  with pytest.raises(ValueError, match="PromptTuning: prompt length 4 \\+ inputs length 6 = 10 exceeds"):
    get_method("prompt", length=4).check_lengths(8, 6)
