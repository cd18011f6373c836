"""Tree-wide cap on concurrent child runs (``RLM(max_concurrent_subcalls=...)``).

Every ``rlm_query`` child holds a slot of its tree's ``ChildGate`` while it runs. A child
that spawns children of its own lends its slot out while it waits for them
(``ChildSlot.lent``), so a tree deeper than the cap cannot deadlock: a run waiting for a
slot never holds one.

Children are always driven synchronously (from REPL cells, on threads), so the gate is a
plain ``threading.Condition``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from rlm.base.cancel import CancelToken


class ChildGate:
    """At most ``limit`` child runs at once (``None``: no limit, only counted)."""

    def __init__(self, limit: int | None = None) -> None:
        if limit is not None and limit < 1:
            raise ValueError("the child limit must be >= 1 or None")
        self.limit = limit
        self.active = 0
        self.peak = 0
        self._cond = threading.Condition(threading.Lock())

    def _wake_all(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def enter(self, token: CancelToken | None = None) -> None:
        """Take a slot, waiting if the tree is at its cap. Raises ``CancellationError``
        if ``token`` is cancelled first."""
        with self._cond:
            if self.limit is None or self.active < self.limit:
                self._take()
                return
        unregister = token.on_cancel(self._wake_all) if token is not None else None
        try:
            with self._cond:
                while self.limit is not None and self.active >= self.limit:
                    if token is not None and token.cancelled:
                        raise token.error()
                    self._cond.wait()
                self._take()
        finally:
            if unregister is not None:
                unregister()

    def _take(self) -> None:
        self.active += 1
        self.peak = max(self.peak, self.active)

    def exit(self) -> None:
        with self._cond:
            self.active -= 1
            self._cond.notify_all()


class ChildSlot:
    """One child run's slot. ``close()`` gives it back when the run ends."""

    def __init__(self, gate: ChildGate) -> None:
        self._gate = gate
        self._lock = threading.Lock()
        self._lent = 0
        self._closed = False

    @contextmanager
    def lent(self) -> Iterator[None]:
        """Give the slot back while this run waits on children of its own (several
        sub-calls may overlap: the first one lends it, the last one takes it back)."""
        with self._lock:
            self._lent += 1
            if self._lent == 1 and not self._closed:
                self._gate.exit()
        try:
            yield
        finally:
            with self._lock:
                self._lent -= 1
                if self._lent == 0 and not self._closed:
                    self._gate.enter()  # never cancelled: the slot must be whole again

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._lent == 0:
                self._gate.exit()
