"""`xprompt-jax <command> [--flags]`: one console script, one module per subcommand.

The subcommand module is imported only after the command name is read, so each command defines just its own
absl flags (T5X names: --gin_file, --gin.NAME=value, --gin_search_paths, --model_dir, ...).
"""
import importlib
import os
import sys

COMMANDS = {
    "score": "Score targets given inputs (sum of log-probabilities, T5X convention).",
    "convert": "Convert checkpoints between T5X, Orbax and Hugging Face safetensors.",
    "train": "Train a parametrisation of a frozen T5 from a gin config.",
    "eval": "Evaluate a trained parametrisation on a task's validation split.",
    "infer": "Write predictions for a task or a jsonl file.",
    "compile": "Ahead-of-time compile the train/eval step for a TPU topology and report memory and FLOPs.",
    "xprompt": "Run XPrompt end to end: prompt tuning, importance, pruning sweep, rewinding, controls, report.",
    "mpt": "Multitask prompt tuning end to end: teachers, distilled source training, target adaptation, ablations.",
    "export": "Write a run's prompt as a PEFT adapter or a google-research/prompt-tuning file/checkpoint.",
    "import": "Turn a PEFT adapter or a prompt-tuning prompt into a run (step-0 checkpoint) for eval/infer/train.",
    "inspect": "Nearest vocabulary tokens of prompt vectors and prompt-prompt similarity.",
    "plot": "PNG curves of a run's metrics, method comparison bars and XPrompt figures.",
    "ensemble": "Evaluate N prompts in one replicated batch with majority-vote ensembling.",
    "table": "Run one paper table (every task x seed x stage) and write it next to the paper's numbers.",
    "pretrain": "Pretrain all parameters of a T5 (span corruption, then LM adaptation) and export it as T5X.",
    "launch": "Create a Cloud TPU VM slice, install, run, follow logs, stop and delete (gcloud; docs/launch.md).",
}
MODULES = {"import": "import_"}  # Command names that are Python keywords.


def _usage() -> str:
  width = max(map(len, COMMANDS))
  lines = ["usage: xprompt-jax <command> [--flags]   (xprompt-jax <command> --help for its flags)", "",
           "commands:"]
  lines += [f"  {name:<{width}}  {doc}" for name, doc in COMMANDS.items()]
  return "\n".join(lines)


def _closed_event_loop(value) -> bool:
  return isinstance(value, RuntimeError) and str(value) == "Event loop is closed"


def _quiet_closed_event_loop(previous):
  """sys.excepthook without one shutdown race: after a failed checkpoint read, tensorstore completes the read's
  futures on orbax's asyncio loop once Python has closed it and prints `RuntimeError: Event loop is closed`
  tracebacks after the command's own one-line error. Every other exception is reported as before."""
  def hook(kind, value, tb):
    if _closed_event_loop(value):
      return
    previous(kind, value, tb)
  hook.quiet_closed_event_loop = True
  return hook


def run(argv=None):
  """Console-script entry point."""
  if not getattr(sys.excepthook, "quiet_closed_event_loop", False):
    sys.excepthook = _quiet_closed_event_loop(sys.excepthook)
    previous_unraisable = sys.unraisablehook

    def unraisable(args):
      if not _closed_event_loop(args.exc_value):
        previous_unraisable(args)
    sys.unraisablehook = unraisable
  argv = list(sys.argv if argv is None else argv)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
    print(_usage())
    return 0 if len(argv) >= 2 else 2
  name = argv[1]
  if name not in COMMANDS:
    import difflib
    close = difflib.get_close_matches(name, COMMANDS, n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    print(f"xprompt-jax: unknown command {name!r}.{hint}\n\n{_usage()}", file=sys.stderr)
    return 2
  if name == "launch":  # Its own flags and no JAX: the launching machine needs only gcloud and absl.
    from xprompt_jax.launch import tpu_vm
    tpu_vm.run([f"xprompt-jax {name}"] + argv[2:])
    return 0
  try:
    module = importlib.import_module(f"xprompt_jax.commands.{MODULES.get(name, name)}")
  except ModuleNotFoundError as e:
    if e.name == f"xprompt_jax.commands.{MODULES.get(name, name)}":
      print(f"xprompt-jax: command {name!r} is not available in this build.", file=sys.stderr)
      return 2
    raise
  from absl import app
  _show_command_flags_in_help(module)
  if not any(a.startswith(("--verbosity", "-v=", "--v=")) for a in argv[2:]):
    argv = argv[:2] + ["--verbosity=-1"] + argv[2:]  # Warnings and errors only; --verbosity=0 shows INFO logs.
  app.run(_reporting_errors(name, module.main), argv=[f"xprompt-jax {name}"] + argv[2:], flags_parser=_flags_parser)
  return 0


def _show_command_flags_in_help(module):
  """`xprompt-jax <command> --help` lists the command's flags (absl shows the key flags of sys.argv[0])."""
  from absl import flags
  from xprompt_jax.commands import common
  for owner in (module.__name__, common.__name__):
    for flag in flags.FLAGS.get_flags_for_module(owner):
      flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


# Errors a user can fix: printed as one clear message (no traceback), exit status 1.
_USER_ERRORS = (ValueError, KeyError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
                FileExistsError)


def _is_user_error(e: BaseException) -> bool:
  """Errors a user can fix: the listed kinds, a full disk, and gin's missing required bindings."""
  import errno
  if isinstance(e, _USER_ERRORS):
    return True
  if isinstance(e, OSError):
    return e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
  return isinstance(e, RuntimeError) and str(e).startswith("Required bindings for")


def _message(e: BaseException) -> str:
  import errno
  if isinstance(e, OSError) and not isinstance(e, _USER_ERRORS) and e.errno in (errno.ENOSPC, errno.EDQUOT):
    return (f"no space left on the device writing {e.filename or 'a file'} ({e.strerror}): free space and rerun the "
            "same command (a training run resumes from its last checkpoint)")
  if isinstance(e, OSError) and not isinstance(e, _USER_ERRORS) and e.errno == errno.EROFS:
    return f"{e.filename or 'the output'} is on a read-only file system: choose a writable folder"
  message = str(e.args[0] if isinstance(e, KeyError) and e.args else e)
  if isinstance(e, RuntimeError):  # gin: "Required bindings for `X` not provided in config: ['name']".
    import re
    m = re.match(r"Required bindings for `([\w.]+)` not provided in config: \['(\w+)'", message)
    name = f"{m.group(1)}.{m.group(2)}" if m else "NAME"
    message += f" (bind it: --gin.{name}=VALUE, or give a --gin_file that does)"
  return message


def _reporting_errors(name, main):
  def wrapped(argv):
    try:
      return main(argv)
    except KeyboardInterrupt:
      if os.environ.get("XPROMPT_TRACEBACK"):
        raise
      print(f"xprompt-jax {name}: interrupted (Ctrl-C) before a save; rerun the same command to resume from the "
            "last checkpoint", file=sys.stderr)
      sys.exit(130)
    except (*_USER_ERRORS, OSError, RuntimeError) as e:
      if os.environ.get("XPROMPT_TRACEBACK") or not _is_user_error(e):
        raise
      message = _message(e)
      # gin appends "  In call to configurable 'X' (<function ...>)" lines: the message already names the setting.
      message = "\n".join(line for line in message.splitlines() if not line.startswith("  In call to configurable"))
      print(f"xprompt-jax {name}: error: {message}", file=sys.stderr)
      sys.exit(1)
  return wrapped


def _flags_parser(argv):
  from absl import flags
  from xprompt_jax import exit_status
  from xprompt_jax.commands import common
  name = argv[0]
  try:
    return exit_status.parse_with_help(flags.FLAGS, common.rewrite_gin_flags(argv))
  except (flags.Error, ValueError) as e:  # Unknown, malformed or badly typed flags: one line, not a traceback.
    if os.environ.get("XPROMPT_TRACEBACK"):
      raise
    hint = f" ({name} --help lists the flags)" if isinstance(e, flags.Error) else ""
    print(f"{name}: error: {e}{hint}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  sys.exit(run())
