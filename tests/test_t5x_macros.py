"""T5X's run macros in the recipes (TRAIN_STEPS with the checkpoint's steps counted, TASK_FEATURE_LENGTHS,
BATCH_SIZE, USE_CACHED_TASKS, MIXTURE_OR_TASK_NAME) reach the settings they set in T5X, and bad values are one
clear error."""
import gin
import pytest

from xprompt_jax.commands import common
from xprompt_jax.training import data as data_lib
from xprompt_jax.training import loop
from xprompt_jax.training import t5x_macros

LESTER = ["models/t5_1_1_base.gin", "methods/prompt.gin", "recipes/lester.gin"]


def _configs(files=LESTER, *bindings, **data_args):
  gin.clear_config()
  try:
    common.parse_gin(files, ["MIXTURE_OR_TASK_NAME = 'super_glue_rte_v102'", *bindings])
    return data_lib.DataConfig(**data_args), loop.TrainConfig()
  finally:
    gin.clear_config()


def test_the_lester_recipe_reads_the_t5x_macros():
  data, train = _configs()
  assert (data.inputs_length, data.targets_length, data.batch_size, data.use_cached) == (512, 8, 32, False)
  assert train.num_train_steps == 30000  # TRAIN_STEPS None: the recipe's 30,000 tuning steps.
  _, train = _configs(LESTER, "TRAIN_STEPS = 1130000")  # T5X: from checkpoint_1100000, 30,000 more.
  assert train.num_train_steps == 30000
  _, train = _configs(LESTER, "INITIAL_CHECKPOINT_PATH = '/hf/t5-base'")  # Any format without TRAIN_STEPS.
  assert train.num_train_steps == 30000
  assert data.mixture_or_task_name == "super_glue_rte_v102"
  data, train = _configs(LESTER, "TRAIN_STEPS = 1110000", "TASK_FEATURE_LENGTHS = {'inputs': 256, 'targets': 4}",
                         "BATCH_SIZE = 8", "USE_CACHED_TASKS = True")
  assert (data.inputs_length, data.targets_length, data.batch_size, data.use_cached) == (256, 4, 8, True)
  assert train.num_train_steps == 10000
  _, train = _configs(LESTER, "TrainConfig.num_train_steps = 2")  # The target itself, bound later, wins.
  assert train.num_train_steps == 2


@pytest.mark.parametrize("files", [["models/t5_1_1_base.gin", "recipes/xprompt_paper.gin"],
                                   ["models/t5_1_1_base.gin", "recipes/mpt_paper.gin"]])
def test_the_xprompt_and_mpt_recipes_read_the_length_and_batch_macros(files):
  data, _ = _configs(files, "TASK_FEATURE_LENGTHS = {'inputs': 128, 'targets': 4}", "BATCH_SIZE = 4",
                     mixture_or_task_name="super_glue_cb_v102")  # MPT's stages name their own tasks.
  assert (data.inputs_length, data.targets_length, data.batch_size) == (128, 4, 4)


@pytest.mark.parametrize("bindings, message", [
    (["TRAIN_STEPS = 30000"], r"TRAIN_STEPS=30000 is not past the initial checkpoint's step 1100000 .* "
                              r"TRAIN_STEPS=1130000 for 30,000"),
    (["TRAIN_STEPS = 1130000", "INITIAL_CHECKPOINT_PATH = '/ckpts/my_t5'"],
     r"the step of INITIAL_CHECKPOINT_PATH='/ckpts/my_t5' cannot be read from its name"),
    (["TASK_FEATURE_LENGTHS = {'inputs': 512}"], r"must be a dict with exactly the keys 'inputs' and 'targets'"),
    (["TASK_FEATURE_LENGTHS = {'inputs': 512, 'targets': 0}"], r"TASK_FEATURE_LENGTHS\['targets'\]=0 must be"),
])
def test_bad_macro_values_name_the_macro(bindings, message):
  with pytest.raises(ValueError, match=message):
    _configs(LESTER, *bindings)


def test_checkpoint_step():
  assert t5x_macros.checkpoint_step("gs://t5-data/pretrained_models/t5x/t5_1_1_lm100k_xxl/checkpoint_1100000") == \
      1100000
  assert t5x_macros.checkpoint_step("/runs/x/checkpoint_20/") == 20
  assert t5x_macros.checkpoint_step("/hf/t5-base") is None
  assert t5x_macros.t5x_tuning_steps(500) == 500  # No initial checkpoint (random weights): nothing to subtract.
