"""A time limit for a cell that runs in the host process (best effort).

Nothing can kill a thread of this process, so a cell at its deadline is *interrupted*:
``CellTimeout`` is raised inside it. How depends on where the cell runs:

* on the main thread, a watchdog thread sends it SIGALRM, and a handler installed for
  the cell's duration (the previous one is put back after) raises ``CellTimeout``.
  Blocking calls such as ``time.sleep`` or a socket read wake up too;
* on any other thread (or if SIGALRM is not ours to handle), ``CellTimeout`` is raised
  asynchronously in it (``PyThreadState_SetAsyncExc``): Python code stops at its next
  instruction, a blocking call only once it returns.

``CellTimeout`` is a ``BaseException``, like ``KeyboardInterrupt``: the cell's own
``except Exception`` (or a sub-call's) does not swallow it. A cell that catches
``BaseException`` and carries on cannot be stopped.

No timer of the process is used (``setitimer`` is left alone), so a host's own alarms
are untouched; a SIGALRM the host receives while a cell runs goes to the host's handler.
"""

from __future__ import annotations

import ctypes
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

from rlm.environments.host.recovery import CellClock

_FLOOR = 0.02  # the watchdog never polls faster than this (a paused clock)

_set_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)
_clear_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)


class CellTimeout(BaseException):
    """Raised inside a cell that ran past its time limit."""


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class CellDeadline:
    """Interrupts the calling thread's cell once ``clock`` passes ``limit`` seconds.

    Use as a context manager around the cell's code only; ``fired`` says whether the
    deadline was reached (the cell may still have ended on its own just then)."""

    def __init__(self, limit: float, clock: CellClock, cell: int) -> None:
        self.limit = limit
        self.clock = clock
        self.cell = cell
        self.fired = False
        # Raised in the cell: a class of its own, so that a cell running inside another
        # cell (an in-process child RLM) tells its own deadline from the outer one's.
        self.timeout: type[CellTimeout] = type("CellTimeout", (CellTimeout,), {})
        self._thread = 0
        self._lock = threading.Lock()
        self._done = False
        self._handled = False
        self._previous: Any = None
        self._uses_signal = False

    def __enter__(self) -> CellDeadline:
        self._thread = threading.get_ident()
        self.clock.start(self.cell)
        if _on_main_thread() and hasattr(signal, "SIGALRM") and hasattr(signal, "pthread_kill"):
            previous = signal.getsignal(signal.SIGALRM)
            if previous is not None:  # None: installed from C, not ours to replace
                self._previous = previous
                signal.signal(signal.SIGALRM, self._on_alarm)
                self._uses_signal = True
        _WATCHDOG.add(self)
        return self

    def remaining(self) -> float:
        return self.limit - self.clock.elapsed()

    def fire(self) -> None:
        """Interrupt the cell, unless it has ended (called by the watchdog)."""
        with self._lock:
            if self._done:
                return
            self.fired = True
            if self._uses_signal:
                signal.pthread_kill(self._thread, signal.SIGALRM)
            else:
                _set_async_exc(self._thread, self.timeout)

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        if self.fired and not self._handled:  # ours
            self._handled = True
            if not self._done:  # else the cell has ended: nothing left to interrupt
                raise self.timeout
            return
        if callable(self._previous):  # not ours: the host's alarm
            self._previous(signum, frame)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            with self._lock:  # from here on the watchdog cannot fire
                self._done = True
        finally:
            _WATCHDOG.discard(self)
            if self._uses_signal:
                if self.fired and not self._handled:
                    # Setting SIG_IGN discards our SIGALRM if it is still pending.
                    signal.signal(signal.SIGALRM, signal.SIG_IGN)
                signal.signal(signal.SIGALRM, self._previous)
            elif self.fired:
                _clear_async_exc(self._thread, None)  # if not raised yet, it never will be


class _Watchdog:
    """One daemon thread for every deadline of the process, started on first use (a
    thread per cell would cost more than a small cell itself)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._active: set[CellDeadline] = set()
        self._thread: threading.Thread | None = None

    def add(self, deadline: CellDeadline) -> None:
        with self._cond:
            self._active.add(deadline)
            if self._thread is None or not self._thread.is_alive():  # also after a fork
                self._thread = threading.Thread(
                    target=self._run, name="rlm-cell-deadlines", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def discard(self, deadline: CellDeadline) -> None:
        with self._cond:
            self._active.discard(deadline)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._active:
                    self._cond.wait()
                due = []
                wait = None
                for deadline in list(self._active):
                    left = deadline.remaining()
                    if left <= 0:
                        due.append(deadline)
                        self._active.discard(deadline)
                    else:
                        wait = left if wait is None else min(wait, left)
                if not due:
                    # A paused clock (a cell waiting for sub-calls) is polled, not spun on.
                    self._cond.wait(max(wait or _FLOOR, _FLOOR))
            for deadline in due:
                deadline.fire()


_WATCHDOG = _Watchdog()
