"""Stopping the cell an in-process REPL is running, from any other thread.

The engine asks for it when a run is stopped (``max_timeout``, ``RLM.cancel()``, an
asyncio cancellation from outside: ``SupportsInterrupt``). Nothing can kill a thread of
this process, so the cell is *interrupted*: ``CellStopped`` is raised asynchronously in
the thread running it (``PyThreadState_SetAsyncExc``, as a cell's own deadline does in
``rlm.environments.inprocess.deadline``). Python code stops at its next instruction; a
blocking call (``time.sleep``, a socket read) only once it returns.

An asynchronous exception lands wherever its thread happens to be, so one is armed only
while the thread runs the cell's own code:

* the cell's code runs as a *region* (``CellStops.run``): an interrupt with no region
  open is refused, and one still pending when its region ends is withdrawn, so it never
  reaches the REPL's or the engine's code after the cell;
* the cell's calls into the engine (``llm_query``, ``rlm_query``, ``budget()``) are
  *shielded* (``CellStops.shielded``): an interrupt that comes meanwhile is held, and
  armed when the call returns into the cell. A child RLM whose cell runs inside such a
  call (on the same thread) has a REPL of its own, which stops that cell.

``CellStopped`` is a ``BaseException``, like ``KeyboardInterrupt``: the cell's own
``except Exception`` does not swallow it (a cell that catches ``BaseException`` and
carries on is interrupted again when its next sub-call returns, and otherwise cannot be
stopped). Each region raises a class of its own, turned into ``CellInterrupted`` by the
region it was meant for: a cell ends on its own interruption only, and lets one meant
for an enclosing cell through.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from rlm.environments.inprocess.deadline import _clear_async_exc, _set_async_exc

T = TypeVar("T")


class CellStopped(BaseException):
    """Raised asynchronously inside an in-process cell whose run was stopped (each
    region raises a subclass of its own)."""


class CellInterrupted(BaseException):
    """What an interrupted cell ends with: its own ``CellStopped``, as ``run`` raises it."""


@dataclass(eq=False, slots=True)
class _Region:
    """One cell's code running on ``thread``."""

    thread: int
    # What is raised in it: a class of its own, made when it is first armed (most cells
    # never are), so an exception meant for another region is never taken for its own.
    signal: type[CellStopped] | None = None
    shields: int = 0  # calls into the engine in progress (the interrupt is held)
    armed: bool = False  # an exception is set on the thread and not withdrawn since
    closed: bool = False  # ended: no longer in its REPL's open regions


class CellStops:
    """The interrupts of one REPL's cells (see the module docstring).

    ``run`` the cell's code, ``shielded`` its calls into the engine; ``interrupt()``
    from any thread. A cell that re-enters its own REPL (``execute_code`` from a cell)
    opens a nested region on the same thread: the innermost is interrupted first, the
    outer ones once it has ended."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._regions: list[_Region] = []  # open regions, innermost last
        self._requested = False  # stands until the outermost region ends

    @property
    def running(self) -> bool:
        """True while a cell's code runs."""
        return bool(self._regions)

    def interrupt(self) -> bool:
        """Stop the running cell: True if one was running (the interrupt is armed now,
        or as soon as the cell's call into the engine returns)."""
        with self._lock:
            if not self._regions:
                return False
            self._requested = True
            self._arm()
            return True

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` as a cell's code: interruptible while it runs. An interrupted
        cell raises ``CellInterrupted``; an outer region's interrupt passes through."""
        region = _Region(threading.get_ident())
        try:
            try:
                try:
                    self._open(region)
                    return fn(*args)
                finally:
                    self._close(region)
            finally:
                # Again, in case the interrupt landed just as the first began (it is then
                # the exception raised: nothing else can be pending); a region it closed
                # is left alone without taking the lock.
                if not region.closed:
                    self._close(region)
        except CellStopped as exc:
            if region.signal is None or type(exc) is not region.signal:
                raise  # an outer region's
            raise CellInterrupted("the run was stopped") from None

    def shielded(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` as a call from the cell into the engine: an interrupt is held
        until it returns. A pending one may still be raised before the call starts."""
        region = self._hold()
        try:
            return fn(*args)
        finally:
            if region is not None:
                self._release(region)

    # -- with the lock held: arming and withdrawing --------------------------------------

    def _arm(self) -> None:
        if not self._requested or not self._regions:
            return
        region = self._regions[-1]
        if not region.shields and not region.armed:
            region.armed = True
            if region.signal is None:
                region.signal = type("CellStopped", (CellStopped,), {})
            _set_async_exc(region.thread, region.signal)

    def _withdraw(self, region: _Region) -> None:
        if region.armed:
            region.armed = False
            _clear_async_exc(region.thread, None)  # a no-op if it was raised already

    # -- regions and shields -----------------------------------------------------------

    def _open(self, region: _Region) -> None:
        with self._lock:
            if self._regions:  # re-entry: only the innermost region is ever armed
                self._withdraw(self._regions[-1])
            self._regions.append(region)
            if self._requested:  # an outer region of this REPL was interrupted: this one too
                self._arm()

    def _close(self, region: _Region) -> None:
        with self._lock:
            if region.closed or region not in self._regions:
                return
            if region.armed:
                self._withdraw(region)
            self._regions.remove(region)
            region.closed = True
            if self._regions:
                self._arm()  # the cell that re-entered this REPL is next
            else:
                self._requested = False

    def _hold(self) -> _Region | None:
        with self._lock:
            if not self._regions or self._regions[-1].thread != threading.get_ident():
                return None  # not the cell's own thread (one the cell started)
            region = self._regions[-1]
            self._withdraw(region)  # first: nothing can be pending after it
            region.shields += 1
            return region

    def _release(self, region: _Region) -> None:
        with self._lock:
            region.shields -= 1
            if self._regions and self._regions[-1] is region:
                self._arm()
