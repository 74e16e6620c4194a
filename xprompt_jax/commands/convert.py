"""`xprompt-jax convert`: rewrite a checkpoint as T5X, Orbax or Hugging Face safetensors.

  xprompt-jax convert --checkpoint=gs://t5-data/.../checkpoint_1100000 --gin_file=models/t5_1_1_base.gin \
      --to=hf --output=/tmp/t5_1_1_base_hf

T5X sources need the architecture (`--gin_file=models/<name>.gin`, `--gin.T5Config.x=...`, or `--model=<preset>`);
HF and Orbax sources carry it. The result is written to a temporary sibling folder and renamed into place, so
`--output` never holds a half-written checkpoint; an existing non-empty `--output` is kept unless `--overwrite`.
"""
import os
import shutil
import tempfile
from typing import Optional

from absl import flags

from xprompt_jax import checkpoints
from xprompt_jax.checkpoints import storage
from xprompt_jax.commands import common
from xprompt_jax.models.config import PRESETS, T5Config


_define = common.define_once
_define(flags.DEFINE_string, "checkpoint", None,
        "Source checkpoint: T5X dir, legacy T5X msgpack, HF or Orbax folder.")
_define(flags.DEFINE_string, "output", None, "Destination folder.")
_define(flags.DEFINE_enum, "to", None, "Destination format.", enum_values=list(checkpoints.WRITABLE_FORMATS))
_define(flags.DEFINE_string, "model", None,
        f"Preset architecture for T5X sources instead of gin: {', '.join(PRESETS)}.")
_define(flags.DEFINE_bool, "overwrite", False, "Replace an existing non-empty --output.")
_define(flags.DEFINE_integer, "max_shard_bytes", 0, "HF only: split model.safetensors into shards of at most "
        "this many bytes (with model.safetensors.index.json); 0 writes one file.")
common.define_gin_flags()
FLAGS = flags.FLAGS


def _non_empty(path: str) -> bool:
  if storage.is_gcs(path):
    return storage.is_dir(path)
  return os.path.isfile(path) or (os.path.isdir(path) and bool(os.listdir(path)))


def convert(source: str, output: str, to: str, config: Optional[T5Config] = None, overwrite: bool = False,
            max_shard_bytes: int = 0) -> T5Config:
  """Loads `source` (validated against `config` or its own config) and writes it as `to` at `output`."""
  if to not in checkpoints.WRITABLE_FORMATS:
    raise ValueError(f"--to={to!r}: choose one of {checkpoints.WRITABLE_FORMATS}")
  if _non_empty(output) and not overwrite:
    raise FileExistsError(f"--output {output} exists and is not empty; pass --overwrite to replace it")
  params, config = checkpoints.load_params(source, config)
  kwargs = {"max_shard_bytes": max_shard_bytes or None} if to == "hf" else {}
  if storage.is_gcs(output):  # No atomic rename on GCS: write in place.
    checkpoints.save_params(params, output, to, config, **kwargs)
    return config
  output = os.path.abspath(output)
  parent = os.path.dirname(output)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.", dir=parent)
  try:
    written = os.path.join(staging, "checkpoint")
    checkpoints.save_params(params, written, to, config, **kwargs)
    if os.path.lexists(output):
      old = os.path.join(staging, "replaced")
      os.rename(output, old)
    os.rename(written, output)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return config


def model_config() -> Optional[T5Config]:
  """The architecture from --model or gin (None when neither is given: the source must carry it)."""
  use_gin = bool(FLAGS.gin_file or FLAGS.gin_bindings)
  if FLAGS.model and use_gin:
    raise ValueError("give either --model or --gin_file/--gin.*, not both")
  if FLAGS.model:
    if FLAGS.model not in PRESETS:
      raise ValueError(f"--model={FLAGS.model!r} is not a preset; choose one of {', '.join(PRESETS)}")
    return PRESETS[FLAGS.model]
  if use_gin:
    common.parse_gin_from_flags()
    return T5Config()
  return None


def main(argv):
  """Runs the conversion; user errors raise ValueError/OSError, which the CLI prints as one line (exit 1)."""
  if len(argv) > 1:
    raise ValueError(f"unexpected positional arguments: {argv[1:]}")
  missing = [f"--{name}" for name in ("checkpoint", "output", "to") if not getattr(FLAGS, name)]
  if missing:
    raise ValueError(f"missing required flag(s): {', '.join(missing)}")
  config = convert(FLAGS.checkpoint, FLAGS.output, FLAGS.to, model_config(), FLAGS.overwrite,
                   FLAGS.max_shard_bytes)
  print(f"wrote {FLAGS.to} checkpoint {FLAGS.output} ({config.name}: {config.num_params():,} parameters)")
  return 0
