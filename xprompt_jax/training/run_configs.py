"""The bundle of gin-bound configs one training run starts from, shared by the pipelines that chain many runs.

    configs = RunConfigs.from_gin("super_glue_rte_v102")          # every config as gin binds it
    run = configs.for_run("super_glue_cb_v102", seed=1, inputs_length=64)
    run.check_metric_keys()                                        # a bad TrainConfig.best_metric: one line
    loop.train(model_dir, method=method, **run.train_kwargs())

`pipelines.compare` runs every method on every task from one bundle; `pipelines.mpt.Base` extends it with the
distillation and task-sampling configs its stages add.
"""
import dataclasses
from typing import Any, Optional

from xprompt_jax.evaluation import metric_keys
from xprompt_jax.models.config import T5Config
from xprompt_jax.training import data as data_lib
from xprompt_jax.training import loop
from xprompt_jax.training import optim
from xprompt_jax.training import partitioning
from xprompt_jax.training import step as step_lib


@dataclasses.dataclass(frozen=True)
class RunConfigs:
  """The model, input, optimizer, loop, loss, evaluation and mesh configs of a `loop.train` call."""
  config: T5Config
  data: data_lib.DataConfig
  opt: optim.OptimizerConfig
  train: loop.TrainConfig
  loss: step_lib.LossConfig
  eval: Any  # evaluation.evaluator.EvalConfig (imported lazily: the evaluator imports the training modules).
  mesh: partitioning.MeshConfig

  @classmethod
  def gin_fields(cls, task: str) -> dict[str, Any]:
    """Each config as gin binds it, `DataConfig.mixture_or_task_name` set to `task` (subclasses add theirs)."""
    from xprompt_jax.evaluation import evaluator as eval_lib
    return {"config": T5Config(), "data": data_lib.DataConfig(mixture_or_task_name=task),
            "opt": optim.OptimizerConfig(), "train": loop.TrainConfig(), "loss": step_lib.LossConfig(),
            "eval": eval_lib.EvalConfig(), "mesh": partitioning.MeshConfig()}

  @classmethod
  def from_gin(cls, task: str):
    return cls(**cls.gin_fields(task))

  def for_run(self, task: str, seed: Optional[int] = None, inputs_length: Optional[int] = None):
    """The configs of one run on `task`: `seed` (None: unchanged) seeds the input order and the initialisation;
    `inputs_length` (None: unchanged) sets the training length, which evaluation lengths default to."""
    data = dataclasses.replace(self.data, mixture_or_task_name=task,
                               inputs_length=inputs_length or self.data.inputs_length,
                               seed=self.data.seed if seed is None else seed)
    train = self.train if seed is None else dataclasses.replace(self.train, seed=seed)
    return dataclasses.replace(self, data=data, train=train)

  def eval_tasks(self) -> tuple[str, ...]:
    """What `loop.train` evaluates: `TrainConfig.eval_tasks`, else the task's `registry_utils.evaluation_tasks`."""
    return loop.default_eval_tasks(self.train, self.data, self.eval)

  def check_metric_keys(self) -> None:
    """A `TrainConfig.best_metric` that the evaluation will not report raises a one-line ValueError naming the
    keys it will report (before anything is loaded or trained)."""
    metric_keys.check_key("TrainConfig.best_metric", self.train.best_metric, self.eval_tasks(), self.eval)

  def train_kwargs(self) -> dict[str, Any]:
    """The keyword arguments of `loop.train` these configs fill."""
    return {"config": self.config, "data_cfg": self.data, "opt_cfg": self.opt, "mesh_cfg": self.mesh,
            "train_cfg": self.train, "loss_cfg": self.loss, "eval_cfg": self.eval}
