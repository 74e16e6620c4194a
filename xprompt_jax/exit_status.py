"""Exit statuses of the `xprompt-jax` commands that a supervisor (the launcher's `supervise`) acts on.

0: finished. 1: bad input or a failed run (one line on stderr). `PREEMPTED`: stopped by SIGTERM (a Spot
preemption, the launcher's `stop`, the Cloud TPU preemption notice) after saving at a step boundary; rerunning the
same command resumes. The value is sysexits' EX_TEMPFAIL ("temporary failure; try again").
"""
PREEMPTED = 75
