"""Every task the paper recipes train on is evaluable as the run resolves it: the evaluation tasks, split and mode
that `mpt.run_pipeline` (paper/mpt_base.gin: teachers, source stage, target adaptation) and `xprompt-jax train`
(paper/prompt_tuning_xxl.gin, the Lester recipe, on each SuperGLUE task) derive from the gin files, run on a couple
of rows with a tiny random T5 and report the tasks' metric keys.

These are the runs that stopped: the MPT recipe at its MNLI teacher (no `validation` split: MNLI is evaluated on its
matched and mismatched sets), then at the SQuAD and ReCoRD teachers (rank mode cannot score free-text answers:
`EvalConfig.mode='auto'` decodes them), then at WSC target adaptation (`simple_train` has no validation split: it
is evaluated on `simple_eval`, by decoding). Real local data is used where ../shared has the split (those cases
skip without it); the others read TFDS mock data with the builders' real feature specs.
"""
import dataclasses

import gin
import jax
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from test_tasks_mpt_extra import MC_NAMES, fake_rows
from xprompt_jax import paths
from xprompt_jax import tasks  # noqa: F401  (registers the tasks)
from xprompt_jax.commands import common
from xprompt_jax.evaluation import evaluator as ev_lib
from xprompt_jax.models import t5
from xprompt_jax.models.config import T5Config
from xprompt_jax.pipelines import mpt
from xprompt_jax.tasks import registry_utils as ru
from xprompt_jax.tasks import sources
from xprompt_jax.training import data as data_lib
from xprompt_jax.training import loop

CFG = T5Config(vocab_size=32128, emb_dim=16, num_heads=2, head_dim=4, mlp_dim=32, num_encoder_layers=1,
               num_decoder_layers=1, name="recipe_eval_tiny")
MPT_SOURCES = ("glue_mnli_v002", "glue_qnli_v002", "glue_qqp_v002", "glue_sst2_v002", "squad_v010_allanswers",
               "super_glue_record_v102")
MPT_EXTRA_SOURCES = ("ag_news_subset_v100", "race_high_v200", "openbookqa_v010", "ai2_arc_challenge_v100",
                     "anli_r1_v010", "hellaswag_v110")
MPT_TARGETS = ("super_glue_multirc_v102", "super_glue_boolq_v102", "super_glue_wic_v102",
               "super_glue_wsc_v102_simple_train", "super_glue_cb_v102")
SUPER_GLUE = ("super_glue_boolq_v102", "super_glue_cb_v102", "super_glue_copa_v102", "super_glue_multirc_v102",
              "super_glue_record_v102", "super_glue_rte_v102", "super_glue_wic_v102",
              "super_glue_wsc_v102_simple_train")
MNLI_SETS = ("glue_mnli_matched_v002", "glue_mnli_mismatched_v002")
EVALUATED_ON = {"glue_mnli_v002": MNLI_SETS, "super_glue_wsc_v102_simple_train": ("super_glue_wsc_v102_simple_eval",)}
DECODED = {"squad_v010_allanswers", "super_glue_record_v102", "super_glue_wsc_v102_simple_eval"}  # Free-text answers.
ACCURACY = {"accuracy"}
KEYS = {
    **{name: ACCURACY for name in MNLI_SETS + ("glue_qnli_v002", "glue_sst2_v002") + MPT_EXTRA_SOURCES},
    "glue_qqp_v002": {"f1", "accuracy"},
    "squad_v010_allanswers": {"em", "f1"},
    "super_glue_record_v102": {"em", "f1"},
    **{name: ACCURACY for name in ("super_glue_boolq_v102", "super_glue_copa_v102", "super_glue_rte_v102",
                                   "super_glue_wic_v102", "super_glue_wsc_v102_simple_eval")},
    "super_glue_cb_v102": {"accuracy", "mean_3class_f1"},
    "super_glue_multirc_v102": {"f1", "exact_match"},
}
CASES = ([("lester", t) for t in SUPER_GLUE] + [("mpt_teacher", t) for t in MPT_SOURCES + MPT_EXTRA_SOURCES]
         + [("mpt_target", t) for t in MPT_TARGETS])


@pytest.fixture(autouse=True)
def auto_data_source():
  """Local files where ../shared has them, TFDS (mocked in `_evaluator`) otherwise."""
  sources.set_data_source("auto")
  yield
  sources.set_data_source(None)


def _parse(gin_file: str, bindings=()):
  gin.clear_config()
  common.import_configurables(extra=("xprompt_jax.pipelines.mpt",))
  common.parse_gin([gin_file], list(bindings), finalize=False)


@pytest.fixture(scope="module")
def mpt_recipe():
  """(MPTConfig, Base) as `xprompt-jax mpt --gin_file=paper/mpt_base.gin` builds them."""
  _parse("paper/mpt_base.gin")
  try:
    cfg = mpt.MPTConfig()
    return cfg, mpt.Base.from_gin(cfg.source_tasks[0])
  finally:
    gin.clear_config()


def _mpt_stage(mpt_recipe, stage: str, task: str):
  """The EvalConfig (as `loop.train` completes it) and evaluation tasks of the MPT stage trained on `task`."""
  cfg, base = mpt_recipe
  split = cfg.source_eval_split if stage == "mpt_teacher" else None  # Targets keep EvalConfig's split.
  eval_cfg, names, _ = mpt.stage_eval(base, [task], split)
  return loop.eval_lib_defaults(eval_cfg, dataclasses.replace(base.data, mixture_or_task_name=task)), names


def _lester_run(task: str):
  """The EvalConfig and evaluation tasks of `xprompt-jax train --gin_file=paper/prompt_tuning_xxl.gin` on `task`."""
  _parse("paper/prompt_tuning_xxl.gin", [f"MIXTURE_OR_TASK_NAME = '{task}'"])
  try:
    data_cfg, train_cfg = data_lib.DataConfig(), loop.TrainConfig()
    eval_cfg = loop.eval_lib_defaults(ev_lib.EvalConfig(), data_cfg)
    return eval_cfg, loop.default_eval_tasks(train_cfg, data_cfg, eval_cfg)
  finally:
    gin.clear_config()


@pytest.fixture(scope="module")
def params():
  return t5.init_params(CFG, jax.random.PRNGKey(0))


def _mock_mc_rows(builder, split, **kwargs):
  """The multiple-choice builders' rows in their TFDS conventions (random mock rows have 30-choice questions)."""
  del kwargs
  rows = fake_rows(builder.name, str(split), 2)
  return tf.data.Dataset.from_generator(lambda: iter(rows), output_signature=builder.info.features.get_tensor_spec())


def _evaluator(name: str, eval_cfg: ev_lib.EvalConfig) -> ev_lib.TaskEvaluator:
  """The task's evaluator on real local data where the task has a local file for the split, else TFDS mock data."""
  source = ru.get_task_or_mixture(name).source
  if eval_cfg.split in getattr(source, "local_splits", {}):
    if paths.shared_dir() is None:
      pytest.skip(f"../shared (or $XPROMPT_SHARED) is absent: {name}[{eval_cfg.split}] is evaluated on its real "
                  "local data")
    return ev_lib.TaskEvaluator(name, t5.T5(CFG), CFG, eval_cfg)
  mocked = {"as_dataset_fn": _mock_mc_rows} if name in MC_NAMES else {}
  with tfds.testing.mock_data(num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE, **mocked):
    return ev_lib.TaskEvaluator(name, t5.T5(CFG), CFG, eval_cfg)


def test_the_recipes_name_the_tasks_tested_here(mpt_recipe):
  cfg, _ = mpt_recipe
  assert cfg.source_tasks == MPT_SOURCES and cfg.extended_source_tasks == MPT_EXTRA_SOURCES
  assert cfg.target_tasks == MPT_TARGETS
  assert set(SUPER_GLUE) == set(tasks.mixtures.SUPER_GLUE_TRAIN_TASKS)


@pytest.mark.parametrize("stage,task", CASES)
def test_recipe_evaluation_resolves_and_runs(mpt_recipe, params, stage, task):
  eval_cfg, names = _lester_run(task) if stage == "lester" else _mpt_stage(mpt_recipe, stage, task)
  assert names == EVALUATED_ON.get(task, (task,))
  assert (eval_cfg.split, eval_cfg.mode) == ("validation", "both")
  few_rows = dataclasses.replace(eval_cfg, batch_size=2, max_examples=2, inputs_length=64)  # Shapes only.
  for name in names:
    ev = _evaluator(name, few_rows)
    assert ev.modes == (("decode",) if name in DECODED else ("rank", "decode")), name
    out = ev.evaluate(params)
    modes = ("decode",) if name in DECODED else ("rank", "decode")
    assert set(out) == {f"{m}/{k}" for m in modes for k in KEYS[name]}, name
    assert all(np.isfinite(v) for v in out.values()), (name, out)


def test_the_mpt_source_stage_evaluates_every_source_on_its_evaluation_tasks(mpt_recipe):
  cfg, base = mpt_recipe
  eval_cfg, names, task_ids = mpt.stage_eval(base, cfg.source_tasks, cfg.source_eval_split, task_ids=True)
  assert eval_cfg.split == "validation"
  assert names == MNLI_SETS + MPT_SOURCES[1:]
  # Both MNLI sets are scored with MNLI's task prompt (MPT task id 0).
  assert task_ids == {**dict.fromkeys(MNLI_SETS, 0), **{t: i for i, t in enumerate(MPT_SOURCES) if i}}
  # Offline the recipe's MNLI and QQP teachers monitor the local re-split dev, which MNLI itself has.
  _, offline, _ = mpt.stage_eval(base, cfg.source_tasks[:3], "resplit_dev")
  assert offline == MPT_SOURCES[:3]


def test_a_recipe_mode_rank_on_a_free_text_task_fails_in_one_line():
  """Asking explicitly for rank mode on ReCoRD (as the recipes did) still fails before reading any data."""
  with pytest.raises(ValueError, match=r"'super_glue_record_v102' cannot be rank-classified.*mode='decode'") as e:
    ev_lib.TaskEvaluator("super_glue_record_v102", t5.T5(CFG), CFG, ev_lib.EvalConfig(mode="rank"))
  assert "\n" not in str(e.value)
