"""Exit statuses of the `xprompt-jax` commands that a supervisor (the launcher's `supervise`) acts on.

0: finished (and `--help`). 1: bad input or a failed run (one line on stderr). `PREEMPTED`: stopped by SIGTERM (a Spot
preemption, the launcher's `stop`, the Cloud TPU preemption notice) after saving at a step boundary; rerunning the
same command resumes. The value is sysexits' EX_TEMPFAIL ("temporary failure; try again"). `INTERRUPTED` (130, the
shell's 128 + SIGINT): stopped by Ctrl-C, saved at a step boundary (the first Ctrl-C) or not (a second one).
"""
PREEMPTED = 75
INTERRUPTED = 130

HELP_FLAGS = ("--help", "-?", "--helpshort", "--helpfull", "--helpxml")


def parse_with_help(parse, argv):
  """`parse(argv)` (absl's flag parsing), except that `--help`, `-h` and absl's other help flags exit 0 after
  printing the help, as other programs' do (absl exits 1, which scripts and CI read as a failure)."""
  import sys
  argv = [argv[0], *("--help" if a == "-h" else a for a in argv[1:])]
  try:
    return parse(argv)
  except SystemExit as e:
    if e.code == 1 and any(a in HELP_FLAGS for a in argv[1:]):
      sys.exit(0)
    raise
