"""A root run's ``max_timeout`` as a timer that stops the work in flight.

The loop checks elapsed time between steps and a reservation refuses calls once the
time is up, but neither stops what is already running. A ``Deadline`` does: when the
limit passes it cancels the call tree's token (``CancelToken``), with a reason that
names the limit. The drivers turn that into cancelling the model call in flight and
interrupting the running cell (``rlm.core.turn``: through the environment's
``SupportsInterrupt``, else the cell is abandoned after a grace), and the turn then
raises ``TimeoutExceededError`` with its partial answer instead of
``CancellationError`` (``fired`` tells them apart).

``CellStopper`` is how a stopped run stops its running cell: it asks the environment
(``SupportsInterrupt``), again for a moment if the cell has not started yet.

Only a root turn arms one: a child's limits are what remains of its parent's, so the
root's deadline covers the whole tree. One daemon timer thread per armed turn, stopped
when the turn ends; a run without ``max_timeout`` makes none.
"""

from __future__ import annotations

import threading
import time

from rlm.base.cancel import CancelToken
from rlm.base.ports import SupportsInterrupt


class Deadline:
    """Cancels ``token`` once ``limit`` seconds have passed since ``started``
    (a ``time.perf_counter()`` value), unless ``stop()`` came first."""

    def __init__(self, token: CancelToken, limit: float, started: float) -> None:
        self.token = token
        self.limit = limit
        self.started = started
        self.elapsed: float | None = None  # set when it fires
        self._timer = threading.Timer(max(limit - (time.perf_counter() - started), 0.0), self._fire)
        self._timer.daemon = True
        self._timer.name = "rlm-deadline"

    @property
    def fired(self) -> bool:
        """True once the limit passed and the tree was cancelled for it."""
        return self.elapsed is not None

    def start(self) -> Deadline:
        self._timer.start()
        return self

    def stop(self) -> None:
        """Disarm (idempotent); a deadline that already fired stays fired."""
        self._timer.cancel()

    def _fire(self) -> None:
        if self.token.cancelled:  # cancelled for another reason first: not a timeout
            return
        self.elapsed = time.perf_counter() - self.started
        self.token.cancel(f"max_timeout of {self.limit:g}s reached")


def interrupt_cell(env: object) -> bool:
    """Ask ``env`` to stop its running cell, if it can (``SupportsInterrupt``); never
    raises, never waits. True if an interrupt was delivered."""
    if not isinstance(env, SupportsInterrupt):
        return False
    try:
        return bool(env.interrupt_cell())
    except Exception:  # best effort: the run is being stopped anyway
        return False


class CellStopper:
    """Stops one cell of ``env`` when called (a token callback: never blocks). A cell
    that has not started yet when the run is stopped (it is on its way to its thread or
    its worker) is asked again, briefly, until it has started or ``ended()``."""

    RETRY = 0.025  # seconds between attempts
    ATTEMPTS = 20  # CELL_GRACE's worth: a cell not started by then is abandoned anyway

    def __init__(self, env: object) -> None:
        self.env = env
        self.done = False
        self._tries = 0

    def ended(self) -> None:
        self.done = True

    def __call__(self) -> None:
        if self.done or interrupt_cell(self.env):
            return
        self._tries += 1
        if self._tries < self.ATTEMPTS:
            retry = threading.Timer(self.RETRY, self)
            retry.daemon = True
            retry.start()
