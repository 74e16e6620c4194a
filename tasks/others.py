"""The "Others" classification tasks of the MPT paper, in T5's `<task> <key>: <value> ...` -> label-word format.

* `winogrande_v120` (TFDS `winogrande:1.2.0`): `winogrande sentence: .. option1: .. option2: ..` -> option1 / option2
* `yelp_polarity_v020` (`yelp_polarity_reviews:0.2.0`): `yelp_polarity text: ..` -> negative / positive
* `scitail_v100` (`sci_tail:1.0.0`): `scitail premise: .. hypothesis: ..` -> entailment / neutral
* `paws_wiki_v110` (`paws_wiki/labeled_final_raw:1.1.0`): `paws sentence1: .. sentence2: ..` -> not_paraphrase /
  paraphrase

Metric: accuracy (as the MPT paper reports for all four). Each has a `<name>_rank` variant that scores both label
words (`metrics.rank_classification`). WinoGrande's `train` is its largest training set (`train_xl`); the smaller
ones are the extra splits `train_xs` ... `train_l`. Unlabelled test rows (label -1) get the target `<unk>`.
None has a local copy: with `XPROMPT_DATA_SOURCE=local` they raise naming the task.
"""
import dataclasses
import functools

from xprompt_jax.evaluation import metrics
from xprompt_jax.tasks import registry_utils as ru
from xprompt_jax.tasks import sources

_HINT = "This task has no local copy under <shared>/data; it needs TFDS (XPROMPT_DATA_SOURCE=tfds or auto)."
_SPLITS = {"train": "train", "validation": "validation", "test": "test"}


@dataclasses.dataclass(frozen=True)
class ClassificationTask:
  """One TFDS text-classification dataset in T5's format."""
  name: str
  tfds_name: str
  prefix: str
  feature_names: tuple[str, ...]
  label_names: tuple[str, ...]
  splits: tuple[tuple[str, str], ...] = tuple(_SPLITS.items())


WINOGRANDE_TRAIN_SIZES = ("xs", "s", "m", "l", "xl")

TASKS = (
    ClassificationTask("winogrande_v120", "winogrande:1.2.0", "winogrande", ("sentence", "option1", "option2"),
                       ("option1", "option2"),
                       splits=(("train", "train_xl"), ("validation", "validation"), ("test", "test"))
                       + tuple((f"train_{s}", f"train_{s}") for s in WINOGRANDE_TRAIN_SIZES)),
    ClassificationTask("yelp_polarity_v020", "yelp_polarity_reviews:0.2.0", "yelp_polarity", ("text",),
                       ("negative", "positive"), splits=(("train", "train"), ("test", "test"))),
    ClassificationTask("scitail_v100", "sci_tail:1.0.0", "scitail", ("premise", "hypothesis"),
                       ("entailment", "neutral")),
    ClassificationTask("paws_wiki_v110", "paws_wiki/labeled_final_raw:1.1.0", "paws", ("sentence1", "sentence2"),
                       ("not_paraphrase", "paraphrase")),
)


def register_task(task: ClassificationTask) -> None:
  """Registers `task.name` (generation + accuracy) and `task.name + '_rank'` (rank classification)."""
  source = sources.HybridSource(task.name, signature={}, tfds_name=task.tfds_name, tfds_splits=dict(task.splits),
                                hint=_HINT)
  preprocessor = ru.glue_preprocessor(task.prefix, task.label_names, task.feature_names)
  preprocessor = functools.partial(preprocessor, id_key=None)
  ru.add_text_task(task.name, source, preprocessor, postprocess_fn=ru.label_postprocessor(task.label_names),
                   metric_fns=[metrics.accuracy])
  ru.add_rank_task(task.name, source, preprocessor, task.label_names,
                   score_metric_fns=[functools.partial(metrics.rank_classification,
                                                       num_classes=len(task.label_names))])


for _task in TASKS:
  register_task(_task)
