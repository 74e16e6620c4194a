"""RunConfigs: one run's configs from gin, per-run task/seed/length, the loop.train keywords, MPT's extension."""
import inspect

import gin
import pytest

from xprompt_jax.pipelines import mpt
from xprompt_jax.training import loop
from xprompt_jax.training import run_configs


@pytest.fixture
def bound():
  gin.clear_config()
  gin.parse_config(["DataConfig.inputs_length = 96", "DataConfig.seed = 7", "TrainConfig.seed = 5",
                    "T5Config.emb_dim = 24", "DistillConfig.weight = 0.25"])
  yield
  gin.clear_config()


def test_from_gin_and_for_run(bound):
  del bound
  configs = run_configs.RunConfigs.from_gin("glue_sst2_v002")
  assert (configs.data.mixture_or_task_name, configs.data.inputs_length, configs.config.emb_dim) == (
      "glue_sst2_v002", 96, 24)
  run = configs.for_run("super_glue_cb_v102", seed=3, inputs_length=64)
  assert (run.data.mixture_or_task_name, run.data.inputs_length, run.data.seed, run.train.seed) == (
      "super_glue_cb_v102", 64, 3, 3)
  same = configs.for_run("super_glue_cb_v102")
  assert (same.data.inputs_length, same.data.seed, same.train.seed) == (96, 7, 5)
  assert configs.data.mixture_or_task_name == "glue_sst2_v002"  # for_run copies; the bundle is unchanged.


def test_train_kwargs_are_loop_train_parameters(bound):
  del bound
  kwargs = run_configs.RunConfigs.from_gin("glue_sst2_v002").train_kwargs()
  assert set(kwargs) <= set(inspect.signature(loop.train).parameters)
  assert kwargs["data_cfg"].inputs_length == 96


def test_mpt_base_extends_the_bundle(bound):
  del bound
  configs = run_configs.RunConfigs.from_gin("glue_sst2_v002").for_run("glue_qnli_v002", seed=2)
  base = mpt.Base.extend(configs)
  assert base.data == configs.data and base.train == configs.train
  assert base.distill.weight == 0.25
  assert mpt.Base.from_gin("glue_sst2_v002").distill.weight == 0.25
  assert isinstance(base.for_run("glue_mnli_v002"), mpt.Base)


def test_eval_tasks_and_best_metric_check():
  """The bundle evaluates what the loop evaluates, and a best_metric it will not report fails before any work."""
  gin.clear_config()
  try:
    configs = run_configs.RunConfigs.from_gin("super_glue_wsc_v102_simple_train")
    assert configs.eval_tasks() == ("super_glue_wsc_v102_simple_eval",)
    assert configs.for_run("super_glue_cb_v102").eval_tasks() == ("super_glue_cb_v102",)
    configs.check_metric_keys()  # best_metric None: nothing to check.
    gin.parse_config(["TrainConfig.best_metric = 'super_glue_cb_v102/f1'"])
    cb = run_configs.RunConfigs.from_gin("super_glue_cb_v102")
    with pytest.raises(ValueError, match=r"^TrainConfig.best_metric='super_glue_cb_v102/f1': the evaluation on "
                       r"super_glue_cb_v102 \(EvalConfig.mode='rank'\) reports super_glue_cb_v102/accuracy, "
                       r"super_glue_cb_v102/mean_3class_f1; bind one of them$"):
      cb.check_metric_keys()
    gin.parse_config(["TrainConfig.best_metric = 'super_glue_cb_v102/mean_3class_f1'"])
    run_configs.RunConfigs.from_gin("super_glue_cb_v102").check_metric_keys()
    gin.parse_config(["TrainConfig.best_metric = 'super_glue_cb_v102/macro_f1'"])  # The old name, mapped (logged).
    assert run_configs.RunConfigs.from_gin("super_glue_cb_v102").train.best_metric == \
        "super_glue_cb_v102/mean_3class_f1"
  finally:
    gin.clear_config()
