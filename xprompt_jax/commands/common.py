"""Flags and gin plumbing shared by the subcommands (T5X flag names).

`--gin.NAME=VALUE` is rewritten to a gin binding `NAME = VALUE` (as T5X's gin_utils does), `--gin_file` may be
repeated and is looked up in `--gin_search_paths`, then in the shipped `xprompt_jax/gin` folder.
"""
import os
import re

from absl import flags
import gin

from xprompt_jax import paths

_GIN_FLAG = re.compile(r"^--gin\.([^=]+)=(.*)$", re.S)


def rewrite_gin_flags(argv):
  """Turns every `--gin.NAME=VALUE` into `--gin_bindings=NAME = VALUE`; leaves other arguments alone. A
  `--gin.NAME` without a value is a one-line error."""
  out = []
  for arg in argv:
    if arg.startswith("--gin.") and "=" not in arg:
      raise ValueError(f"{arg} has no value: write {arg}=VALUE (e.g. --gin.TrainConfig.seed=1)")
    m = _GIN_FLAG.match(arg)
    out.append(f"--gin_bindings={m.group(1)} = {m.group(2)}" if m else arg)
  return out


def define_once(define, name, default, help_text, **kwargs):
  """Defines a flag unless another command module imported in the same process (e.g. by tests) already did.

  Commands share flag names (--checkpoint, --inputs, --output): read them as `flags.FLAGS.<name>`.
  """
  if name not in flags.FLAGS:
    define(name, default, help=help_text, **kwargs)


def define_gin_flags():
  """Defines --gin_file/--gin_bindings/--gin_search_paths once (safe to call from several commands)."""
  if "gin_file" in flags.FLAGS:
    return
  flags.DEFINE_multi_string("gin_file", [], "Gin config file(s), relative to --gin_search_paths or the shipped "
                            "gin/ folder (e.g. models/t5_1_1_base.gin).")
  flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings; `--gin.NAME=VALUE` is accepted too.")
  flags.DEFINE_list("gin_search_paths", [], "Extra folders in which --gin_file names are looked up.")


def resolve_gin_file(name: str, search_paths=()) -> str:
  """Absolute path of a gin file, searching the given folders then the shipped configs; a clear error if none."""
  if os.path.isabs(name) or os.path.exists(name):
    if not os.path.exists(name):
      raise FileNotFoundError(f"gin file {name!r} does not exist")
    if os.path.isdir(name):
      raise ValueError(f"--gin_file={name} is a directory; give a .gin file (e.g. {name.rstrip('/')}/<name>.gin)")
    return os.path.abspath(name)
  tried = []
  for folder in [*search_paths, str(paths.gin_dir())]:
    candidate = os.path.join(folder, name)
    tried.append(candidate)
    if os.path.exists(candidate):
      return candidate
  shipped = sorted(str(p.relative_to(paths.gin_dir())) for p in paths.gin_dir().rglob("*.gin"))
  raise FileNotFoundError(f"gin file {name!r} not found; looked in: {', '.join(tried)}. "
                          f"Shipped configs: {', '.join(shipped)}")


# Modules whose @gin.configurable names must exist before a config is parsed (and locked).
CONFIGURABLE_MODULES = (
    "xprompt_jax.models.config",
    "xprompt_jax.methods",
    "xprompt_jax.training.optim",
    "xprompt_jax.training.partitioning",
    "xprompt_jax.training.data",
    "xprompt_jax.training.t5x_macros",
    "xprompt_jax.training.step",
    "xprompt_jax.training.loop",
    "xprompt_jax.evaluation.evaluator",
    "xprompt_jax.tasks",
    "xprompt_jax.pipelines.mpt",
    "xprompt_jax.pipelines.xprompt",
    "xprompt_jax.pretraining.train",
)


def import_configurables(extra=()):
  import importlib
  for name in (*CONFIGURABLE_MODULES, *extra):
    importlib.import_module(name)


def parse_gin(gin_files, gin_bindings, search_paths=(), finalize=True):
  """Parses gin files and bindings; unknown configurables/bindings raise with gin's message (names them)."""
  import_configurables()
  for folder in [*search_paths, str(paths.gin_dir())]:
    gin.add_config_file_search_path(folder)
  files = [resolve_gin_file(f, search_paths) for f in gin_files]
  for path in files:
    _check_gin_text(_read_gin_file(path), path)
  for binding in gin_bindings:
    _check_gin_text(binding, f"--gin binding {binding!r}")
  try:
    gin.parse_config_files_and_bindings(files, gin_bindings, finalize_config=finalize)
  except (ValueError, KeyError, TypeError, SyntaxError) as e:
    raise ValueError(f"gin configuration error: {e}") from e


def _read_gin_file(path: str) -> str:
  try:
    with open(path, encoding="utf-8") as f:
      return f.read()
  except UnicodeDecodeError as e:
    raise ValueError(f"gin file {path}: not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8") from e


def _check_gin_text(text: str, where: str) -> None:
  """An unbalanced bracket or quote in a gin file or binding: one line naming it (and the file's line), where gin
  would raise Python's tokenizer error without saying which binding it read."""
  import io
  import tokenize
  try:
    for _ in tokenize.generate_tokens(io.StringIO(text).readline):
      pass
  except tokenize.TokenError as e:
    line = e.args[1][0] if len(e.args) > 1 else "?"
    at = f"{where}:{line}" if not where.startswith("--gin") else where
    raise ValueError(f"{at}: {e.args[0]} (an unbalanced parenthesis, bracket or quote)") from e
  except SyntaxError as e:  # An unterminated string, an unindent error.
    raise ValueError(f"{where}:{e.lineno}: {e.msg}") from e


def parse_gin_from_flags(finalize=True):
  parse_gin(flags.FLAGS.gin_file, flags.FLAGS.gin_bindings, flags.FLAGS.gin_search_paths, finalize=finalize)


def define_run_flags():
  """--model_dir and --multihost, shared by train/eval/infer."""
  if "model_dir" in flags.FLAGS:
    return
  flags.DEFINE_string("model_dir", None, "Where checkpoints, metrics and predictions go (local or gs://).")
  flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() first (Cloud TPU pods; coordinator, "
                    "process count and id come from the environment or the --coordinator_address flags).")
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host off Cloud TPU).")
  flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host off Cloud TPU).")
  flags.DEFINE_integer("process_id", None, "This process's index (multi-host off Cloud TPU).")


def refuse_gcs(path: str, flag: str, pipeline: str) -> None:
  """XPrompt and MPT write their stage files with local file I/O: a gs:// folder is a one-line error naming the
  gcsfuse mount that works (their stage markers would go to the bucket and their prompts to local disk)."""
  if path and path.startswith("gs://"):
    raise ValueError(f"{flag}={path} is refused for {pipeline}: its stage files (prompts, masks, exports) are "
                     "written with local file I/O; mount the bucket with gcsfuse and pass the mounted folder, e.g. "
                     "/mnt/BUCKET/run (docs/launch.md)")


def refuse_unused_macro(name: str, command: str, why: str) -> None:
  """A T5X run macro the user bound (e.g. `--gin.TRAIN_STEPS=...`) that `command` does not read: one-line error
  instead of silently training something else."""
  try:
    value = gin.query_parameter(f"%{name}")
  except ValueError:  # Not bound anywhere.
    return
  if value is not None:
    raise ValueError(f"--gin.{name}={value!r} has no effect on `xprompt-jax {command}`: {why}")


def init_run(argv):
  """Common start of train/eval/infer: no stray arguments, distributed init, gin parsed, --model_dir given."""
  if len(argv) > 1:
    raise ValueError(f"unexpected positional arguments: {argv[1:]}")
  f = flags.FLAGS
  if f.multihost or f.coordinator_address:
    import jax
    jax.distributed.initialize(coordinator_address=f.coordinator_address, num_processes=f.num_processes,
                               process_id=f.process_id)
  if not f.model_dir:
    raise ValueError("--model_dir is required")
  parse_gin_from_flags()
