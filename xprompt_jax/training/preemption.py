"""Stopping a training loop cleanly: SIGTERM (a Spot preemption, `stop`, the Cloud TPU preemption notice) and Ctrl-C
become a decision, taken by every host at the same step boundary, to save and exit (`training.loop.train`)."""
import signal

from absl import logging
import jax
import numpy as np


class Preemption:
  """SIGTERM (spot preemption, `stop`, `kill`) or Ctrl-C (SIGINT) -> save at the next step boundary (the evaluation
  under way, if any, finishes first) and exit cleanly; a second Ctrl-C stops at once, without that save.

  On several hosts the decision is one collective per step: each host's SIGTERM flag is gathered from every host,
  and all of them stop when any of them was signalled (or the Cloud TPU preemption service reached its sync
  point). So every host saves the same step and exits; a host that acted on its own flag alone would leave the
  others waiting in the next step's collectives."""

  def __init__(self):
    self.requested = False
    self.interrupted = False  # Ctrl-C (SIGINT) rather than SIGTERM.
    self.stopping = False  # This process decided to save and exit.
    self._previous = None
    self._previous_int = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
      self._previous_int = signal.signal(signal.SIGINT, self._handle_int)
    except ValueError:  # Not the main thread (e.g. a test runner thread): no handler.
      self._previous = self._previous_int = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint at the next step boundary, then exiting")
    self.requested = True

  def _handle_int(self, signum, frame):
    del signum, frame
    if self.requested:  # The second Ctrl-C: stop now.
      raise KeyboardInterrupt
    print("\nCtrl-C: saving a checkpoint at the next step boundary, then exiting (Ctrl-C again: stop now, "
          "without that save)", flush=True)
    self.requested = self.interrupted = True

  def __exit__(self, *exc):
    if self._previous is None:
      return
    signal.signal(signal.SIGINT, self._previous_int)
    if self.stopping:  # Saved and on the way out: a SIGTERM arriving now (a host's own, after the others' vote or
      # the preemption sync point stopped it) must not kill it with status 143, which a supervisor reads as a crash.
      signal.signal(signal.SIGTERM, lambda signum, frame: logging.warning("SIGTERM while exiting: already saved"))
    else:
      signal.signal(signal.SIGTERM, self._previous)

  def check(self, step: int) -> bool:
    """True on every host at the same step once any host was signalled."""
    self.stopping = self._decide(step)
    return self.stopping

  def _decide(self, step: int) -> bool:
    from jax.experimental import multihost_utils
    requested = self.requested  # Read once: the handler may set it while this step decides.
    if jax.process_count() > 1:
      votes = np.asarray(multihost_utils.process_allgather(np.int32(requested)))
      if votes.any():
        if not requested:
          logging.warning("host(s) %s received SIGTERM: saving step %d with them, then exiting",
                          np.flatnonzero(votes).tolist(), step)
        return True
    elif requested:
      return True
    try:  # Cloud TPU preemption notice, synchronised across hosts (needs jax.distributed).
      return bool(multihost_utils.reached_preemption_sync_point(step))
    except Exception:  # pylint: disable=broad-except  (no preemption service on CPU / single process)
      return False
