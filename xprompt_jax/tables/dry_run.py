"""`xprompt-jax table ... --dry_run`: the same table, configs and code path with sizes and data sources changed.

What changes, and nothing else: the frozen model is a tiny random-weight T5 of the paper config's own family (its
activations, embedding tying and relative-position settings kept; widths and depths shrunk) written as a T5X
checkpoint (msgpack + zarr) under `<results_dir>/dry_run_backbone/` and bound as INITIAL_CHECKPOINT_PATH; steps,
evaluation rows, batch, lengths and the shuffle buffer are capped (`CAPS`; a paper config's 10,000-row buffer would
tokenize a whole local train file before a dry run's first step); every task reads its local ../shared file where one
exists for the split and TFDS mock data with the builder's real feature names and types otherwise (BoolQ train, ReCoRD,
SQuAD, MNLI/QQP dev, ...). Numbers from a dry run say nothing about the methods: they show every stage runs.
"""
import contextlib
import dataclasses
import os

from xprompt_jax.checkpoints import storage
from xprompt_jax.models.config import T5Config

TINY = {"emb_dim": 16, "num_heads": 2, "head_dim": 4, "mlp_dim": 32, "num_encoder_layers": 2,
        "num_decoder_layers": 2}
CAPS = (
    "TrainConfig.num_train_steps = 2", "TrainConfig.eval_period = 2", "TrainConfig.checkpoint_period = 2",
    "TrainConfig.log_period = 1", "TrainConfig.progress_bar = False",
    "DataConfig.inputs_length = 64", "EvalConfig.inputs_length = 64", "DataConfig.shuffle_buffer_size = 64",
    "EvalConfig.max_examples = 4", "EvalConfig.batch_size = 4",
    "XPromptPipelineConfig.num_epochs = None", "XPromptPipelineConfig.importance_max_examples = 4",
    "XPromptPipelineConfig.evaluations_per_stage = None",
    "MPTConfig.teacher_steps = 2", "MPTConfig.source_steps = 2", "MPTConfig.target_steps = 2",
    "PretrainConfig.num_train_steps = 2", "PretrainConfig.export_steps = (1,)", "PretrainConfig.eval_period = 0",
    "PretrainConfig.log_period = 1", "PretrainConfig.checkpoint_period = 2", "PretrainConfig.eval_batches = 1",
    "PretrainConfig.unigram_batches = 1", "PretrainConfig.progress_bar = False",
)
MOCK_EXAMPLES = 40  # Rows per mocked TFDS split: enough for the 32-shot draws.


def tiny_config(config: T5Config) -> T5Config:
  return dataclasses.replace(config, **TINY, name=f"dry_run_{config.name}")


def write_backbone(results_dir: str, config: T5Config) -> str:
  """The tiny random T5 of `config`'s family as a T5X checkpoint (written once; reused by every job)."""
  import jax
  from xprompt_jax.checkpoints import t5x
  from xprompt_jax.models import t5
  tiny = tiny_config(config)
  path = storage.join(results_dir, "dry_run_backbone", tiny.name, "checkpoint_0")
  if not storage.exists(storage.join(path, t5x.MSGPACK_NAME)):
    params = jax.device_get(t5.init_params(tiny, jax.random.PRNGKey(0)))
    t5x.write_t5x(params, path)
  return path


def bindings(config: T5Config, backbone: str, batch_size: int = 2) -> list[str]:
  """The gin bindings of a dry run on top of the paper config: the tiny model, its checkpoint, the caps (the batch:
  the table's `dry_run_batch_size`, the smallest its stages accept)."""
  tiny = tiny_config(config)
  model = [f"T5Config.{k} = {getattr(tiny, k)!r}" for k in (*TINY, "name")]
  return [*model, f"INITIAL_CHECKPOINT_PATH = {backbone!r}", f"TrainConfig.initial_checkpoint = {backbone!r}",
          f"SPAN_CORRUPTION_CHECKPOINT_PATH = {backbone!r}", f"PretrainConfig.initial_checkpoint = {backbone!r}", *CAPS,
          f"DataConfig.batch_size = {batch_size}"]


@contextlib.contextmanager
def data_sources():
  """Local files where ../shared has the split, TFDS mock data (real feature specs) for the rest."""
  from unittest import mock
  import seqio
  import tensorflow_datasets as tfds
  from xprompt_jax.tables import mock_rows
  from xprompt_jax.tasks import sources
  previous = os.environ.get(sources.ENV_VAR)
  sources.set_data_source("auto")
  try:  # Mocked splits have no TFDS metadata: their size (for examples-proportional mixing) is the mock's.
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES, policy=tfds.testing.MockPolicy.USE_CODE), \
        mock.patch.object(seqio.TfdsDataSource, "num_input_examples", lambda self, split: MOCK_EXAMPLES), \
        mock_rows.structured(MOCK_EXAMPLES):
      yield
  finally:
    sources.set_data_source(None)
    if previous is not None:
      os.environ[sources.ENV_VAR] = previous
