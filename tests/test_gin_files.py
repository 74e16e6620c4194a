"""Every shipped gin file parses on its own, and every task it names (directly or through a macro) is registered."""
import gin
import pytest

from xprompt_jax import paths
from xprompt_jax.commands import common
from xprompt_jax.training import data as data_lib

EXTRA = ("xprompt_jax.pipelines.compare", "xprompt_jax.pipelines.mpt", "xprompt_jax.pipelines.xprompt",
         "xprompt_jax.pretraining.train")
GIN_FILES = sorted(str(p.relative_to(paths.gin_dir())) for p in paths.gin_dir().rglob("*.gin"))
TASK_PARAMETERS = ("mixture_or_task_name", "source_tasks", "target_tasks", "extended_source_tasks", "tasks",
                   "mpt_sources", "mpt_targets", "xprompt_tasks", "eval_tasks")


def _value(value):
  """A bound value, a macro resolved to its value."""
  if isinstance(value, gin.config.ConfigurableReference) and value.configurable.name == "macro":
    return gin.query_parameter(value.scoped_selector + ".value")
  return value


def bound_task_names() -> list[str]:
  names = []
  for (_, selector), values in gin.config._CONFIG.items():  # pylint: disable=protected-access
    if selector.endswith("gin.macro"):
      continue
    for key, value in values.items():
      value = _value(value) if key in TASK_PARAMETERS else None
      if isinstance(value, str):
        names.append(value)
      elif isinstance(value, (tuple, list)):
        names += [v for v in value if isinstance(v, str)]
  return names


@pytest.fixture
def parsed():
  common.import_configurables(extra=EXTRA)
  yield lambda name: common.parse_gin([name], [], finalize=False)
  gin.clear_config()


def test_every_folder_is_covered():
  assert {name.split("/")[0] for name in GIN_FILES} >= {"models", "methods", "recipes", "runs", "paper", "pretrain"}


@pytest.mark.parametrize("name", GIN_FILES)
def test_parses_and_names_registered_tasks(parsed, name):
  parsed(name)
  for task in bound_task_names():
    data_lib.get_task(task)  # Raises naming the closest registered names.


def test_a_stale_task_name_is_caught(parsed):
  parsed("recipes/mpt_paper.gin")
  gin.bind_parameter("MPTConfig.extended_source_tasks", ("ag_news_subset",))
  with pytest.raises(Exception, match="ag_news_subset"):
    for task in bound_task_names():
      data_lib.get_task(task)
