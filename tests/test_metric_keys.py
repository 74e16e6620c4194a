"""evaluation.metric_keys: the keys an evaluation reports, predicted from the metric fns' declarations, must be the
keys real evaluations return (task evaluators, a mixture, mode both, and the training loop's `<name>/<key>`), so a
configuration naming a metric can be checked before any training without the declaration drifting."""
import jax
import pytest
import seqio

from xprompt_jax import tasks  # noqa: F401  (registers the tasks)
from xprompt_jax.evaluation import evaluator as ev_lib
from xprompt_jax.evaluation import metric_keys
from xprompt_jax.models import t5
from xprompt_jax.models.config import T5Config
from xprompt_jax.tasks import mixtures

CFG = T5Config(vocab_size=32128, emb_dim=16, num_heads=2, head_dim=4, mlp_dim=16, num_encoder_layers=1,
               num_decoder_layers=1)
LENGTHS = {"inputs": 48, "targets": 6}
MIXTURE = "metric_keys_test_mix"


@pytest.fixture(scope="module")
def params():
  return t5.init_params(CFG, jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def mixture():
  return mixtures.make_mixture(MIXTURE, ["super_glue_rte_v102", "super_glue_cb_v102",
                                         "super_glue_wsc_v102_simple_eval", "super_glue_wsc_v102_simple_train"])


def eval_config(mode):
  return ev_lib.EvalConfig(mode=mode, batch_size=8, max_examples=8, feature_lengths=LENGTHS)


CASES = [("super_glue_rte_v102", "rank"), ("super_glue_rte_v102", "both"), ("super_glue_cb_v102", "rank"),
         ("super_glue_cb_v102", "both"), ("super_glue_multirc_v102", "rank"), ("super_glue_multirc_v102", "decode"),
         ("super_glue_wsc_v102_simple_eval", "decode"), ("super_glue_cb_v102_rank", "both"), (MIXTURE, "rank"),
         (MIXTURE, "both"), ("super_glue_wsc_v102_simple_eval", "auto"), ("super_glue_cb_v102", "auto"),
         (MIXTURE, "auto")]


@pytest.mark.parametrize("name, mode", CASES)
def test_predicted_keys_are_the_keys_a_real_evaluation_returns(shared, params, mixture, name, mode):
  del shared, mixture
  cfg = eval_config(mode)
  evaluator = ev_lib.make_evaluator(name, t5.T5(CFG), CFG, cfg)
  actual = evaluator.evaluate(params)
  predicted = metric_keys.evaluator_keys(name, cfg)
  assert len(predicted) == len(set(predicted))
  assert set(predicted) == set(actual)


def test_an_impossible_mode_fails_as_in_the_evaluator(shared):
  del shared
  cfg = eval_config("rank")
  with pytest.raises(ValueError, match="cannot be rank-classified") as real:
    ev_lib.make_evaluator("super_glue_wsc_v102_simple_eval", t5.T5(CFG), CFG, cfg)
  with pytest.raises(ValueError) as predicted:
    metric_keys.evaluator_keys("super_glue_wsc_v102_simple_eval", cfg)
  assert str(predicted.value) == str(real.value)


def test_the_training_loop_reports_the_predicted_keys(shared, tmp_path, mixture):
  """loop.train (0 steps: just its final evaluation) prefixes each evaluator's keys as predicted."""
  del shared
  from xprompt_jax.methods.prompt import PromptTuning
  from xprompt_jax.training import data as data_lib
  from xprompt_jax.training import loop, partitioning
  names = ("super_glue_multirc_v102", mixture)
  cfg = eval_config("rank")  # Mode "both" (rank/, decode/ inside each evaluator's keys) is pinned above.
  result = loop.train(
      str(tmp_path / "run"), config=CFG, method=PromptTuning(length=2, prompt_init="random_uniform"), eval_cfg=cfg,
      data_cfg=data_lib.DataConfig(mixture_or_task_name="super_glue_rte_v102", inputs_length=32, targets_length=6,
                                   batch_size=8),
      mesh_cfg=partitioning.MeshConfig(data=1, model=1),
      train_cfg=loop.TrainConfig(num_train_steps=0, eval_tasks=names, progress_bar=False, async_checkpointing=False))
  predicted = metric_keys.evaluation_keys(names, cfg)
  assert set(predicted) == set(result["eval"]) and len(predicted) == len(result["eval"])
  assert "super_glue_multirc_v102/f1" in predicted and f"{mixture}/super_glue_cb_v102/mean_3class_f1" in predicted
  assert f"{mixture}/average/score" in predicted


def test_every_registered_task_declares_its_metric_keys():
  """No shipped task has keys the check cannot know (an undeclared metric fn would silently skip it)."""
  for name in seqio.TaskRegistry.names():
    task = seqio.get_mixture_or_task(name)
    for fns in (task.predict_metric_fns, task.score_metric_fns):
      assert metric_keys.fn_keys(fns) is not None, (name, fns)


def test_check_key_names_the_reported_keys():
  rank = eval_config("rank")
  metric_keys.check_key("TrainConfig.best_metric", None, ("super_glue_rte_v102",), rank)
  metric_keys.check_key("TrainConfig.best_metric", "super_glue_rte_v102/accuracy", ("super_glue_rte_v102",), rank)
  with pytest.raises(ValueError, match=r"^XPromptPipelineConfig.select_metric='f1_score': super_glue_multirc_v102 "
                     r"\(EvalConfig.mode='rank'\) reports f1, exact_match; bind one of them$"):
    metric_keys.check_key("XPromptPipelineConfig.select_metric", "f1_score", ("super_glue_multirc_v102",), rank,
                          prefix="super_glue_multirc_v102")
  with pytest.raises(ValueError, match=r"'super_glue_rte_v102/accuracy': the evaluation on super_glue_rte_v102 "
                     r"\(EvalConfig.mode='both'\) reports super_glue_rte_v102/rank/accuracy, "
                     r"super_glue_rte_v102/decode/accuracy; bind one of them"):
    metric_keys.check_key("TrainConfig.best_metric", "super_glue_rte_v102/accuracy", ("super_glue_rte_v102",),
                          eval_config("both"))
