"""What both engines of IPythonREPL share (the in-process shell and the kernel this
host drives): the re-entry guard, the cell clock with rlms's wall-clock option, and
the ``cell_timeout`` rules.

``ReentryGuard`` turns two calls that would otherwise hang or corrupt a cell into a
``RuntimeError`` that names the problem:

* ``execute_code`` from the thread that is already running one of the REPL's cells
  (in-process, a cell reaches its REPL through any scaffold function's ``__self__``);
* any call into the REPL from inside its own ``subcall_fn``: the cell that made the
  sub-call holds the REPL while it waits for the answer, so the call would wait forever.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rlm.environments.host.recovery import CellClock
from rlm.environments.host.worker_env import DEFAULT_CELL_TIMEOUT

# A limit no cell reaches, that every blocking wait still accepts.
NO_LIMIT = threading.TIMEOUT_MAX / 4


class ReentryGuard:
    """Tracks which threads run a cell of one REPL, and which run its ``subcall_fn``."""

    def __init__(self, owner: str = "IPythonREPL") -> None:
        self._owner = owner
        self._lock = threading.Lock()
        self._cells: set[int] = set()
        self._subcalls: dict[int, int] = {}  # thread -> nesting depth

    def check(self) -> None:
        """Raise if the calling thread is inside this REPL's ``subcall_fn``."""
        if threading.get_ident() in self._subcalls:
            raise RuntimeError(
                f"Reentrant call into {self._owner} from inside its own subcall_fn: the "
                "cell that made the sub-call holds the REPL until the sub-call returns, so "
                "this call would never run. A subcall_fn must use a REPL of its own."
            )

    @contextmanager
    def cell(self) -> Iterator[None]:
        """Around ``execute_code``: refuse a cell started from inside one of ours."""
        me = threading.get_ident()
        self.check()
        with self._lock:
            if me in self._cells:
                raise RuntimeError(
                    f"Reentrant execute_code: the running cell called execute_code on its "
                    f"own {self._owner} (e.g. through rlm_query.__self__). A cell cannot "
                    "run another cell of its REPL."
                )
            self._cells.add(me)
        try:
            yield
        finally:
            with self._lock:
                self._cells.discard(me)

    @contextmanager
    def subcall(self) -> Iterator[None]:
        """Around a ``subcall_fn`` call (the relay's scope): marks the calling thread as
        inside one, so a call back into the REPL is refused instead of hanging."""
        me = threading.get_ident()
        with self._lock:
            self._subcalls[me] = self._subcalls.get(me, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                depth = self._subcalls.pop(me, 1) - 1
                if depth:
                    self._subcalls[me] = depth


class CellLimitClock(CellClock):
    """``CellClock`` (the cell's own running time, sub-call waits excluded), or the
    cell's wall-clock time when ``wall`` is set (rlms's meaning of ``cell_timeout``)."""

    def __init__(self, wall: bool = False) -> None:
        super().__init__()
        self.wall = wall
        self._wall_start = time.monotonic()

    def start(self, cell: int) -> None:
        super().start(cell)
        self._wall_start = time.monotonic()

    def elapsed(self) -> float:
        if self.wall:
            return time.monotonic() - self._wall_start
        return super().elapsed()


def cell_limit(value: Any, wall_clock: bool | None = None) -> tuple[float | None, bool]:
    """``(seconds or None for no limit, wall clock?)`` for a ``cell_timeout`` argument.

    ``None``: rlmx's policy, ``DEFAULT_CELL_TIMEOUT`` seconds of the cell's own running
    time. A positive number: rlms's meaning, that many seconds of wall-clock time, sub-call
    waits included. Zero or less: no limit (rlms treats these as disabled). ``wall_clock``
    overrides which clock counts (None: as just said)."""
    if value is None:
        return DEFAULT_CELL_TIMEOUT, bool(wall_clock)
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"cell_timeout must be a number of seconds or None, got {value!r}")
    wall = True if wall_clock is None else wall_clock
    if value <= 0 or math.isinf(value):
        return None, wall
    return float(value), wall


def positive_timeout(name: str, value: Any, allow_none: bool) -> float | None:
    """``value`` checked as rlms checks ``startup_timeout``/``subcall_timeout``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        none = " or None (no timeout)" if allow_none else ""
        raise ValueError(f"{name} must be a positive number of seconds{none}, got {value!r}")
    return float(value)
