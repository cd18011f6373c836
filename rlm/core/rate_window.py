"""The pacing state of one upstream: the in-flight window, AIMD on 429s, the pause.

A ``RateWindow`` is what the governors of several call trees share when they call the
same upstream (``rlm serve``: one per upstream for every session), so a 429 seen by one
tree pauses and narrows every tree. What belongs to one tree (its circuit breaker, its
child gate, its cancel token) stays in its ``Governor`` (``rlm.core.governor``), which
drives this state machine under the window's ``lock``.

* **Window.** At most ``window`` calls in flight (``None``: unlimited); ``ceiling`` is
  the window when nothing throttles it. Queued calls are admitted first-come
  first-served as slots free up and the pause ends.
* **AIMD.** ``cut`` halves the window once per round (``epoch``: only a call admitted
  after the last cut can cut again); ``grow`` adds ``1/window`` per success until the
  window is back at its ceiling; ``pause_for`` holds new admissions back for the
  provider's ``Retry-After`` or the policy's back-off.

Every method whose name does not start with ``_`` and is not a property runs under
``lock`` (the caller holds it), except ``admit_fast`` / ``release_fast``: while nothing
throttles the window (``open``), calls enter and leave with an atomic ``list.append`` /
``list.pop`` and take no lock at all.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from rlm.core.waiters import Waiter


def wake(waiter: Waiter) -> bool:
    """Wake ``waiter``; False if it cannot be woken (its event loop was closed under it:
    a window shared by many trees must not fail for one tree's leftovers)."""
    try:
        waiter.wake()
    except RuntimeError:  # "Event loop is closed"
        return False
    return True


class RateWindow:
    """The shared half of the governor: window, AIMD, pause and the queue of waiters."""

    def __init__(
        self,
        max_inflight: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        history: int = 1024,
    ) -> None:
        if max_inflight is not None and max_inflight < 1:
            raise ValueError("max_inflight must be >= 1 or None")
        self.max_inflight = max_inflight
        self.clock = clock
        self.lock = threading.Lock()
        self.window: float | None = None if max_inflight is None else float(max_inflight)
        self.ceiling = self.window  # the window when nothing is throttling it
        self.cap: int | None = max_inflight  # int(window), read on the fast path
        self.recover_to: float | None = self.window
        # One entry per call in flight. list.append/pop are atomic, so while nothing
        # throttles the window, calls enter and leave without the lock.
        self.slots: list[None] = []
        self.waiters: deque[Waiter] = deque()
        self.paused_until = 0.0
        self.epoch = 0  # bumped by every cut: a call from an older epoch cannot cut again
        self.peak = 0
        self.rate_limits = 0
        self.retries = 0
        # (monotonic time, window) at start and after every change; None is unlimited.
        self.window_history: deque[tuple[float, float | None]] = deque(maxlen=history)
        self.window_history.append((clock(), self.window))

    @property
    def open(self) -> bool:
        """True when nothing throttles the window: calls may enter without the lock."""
        return self.cap is None and not self.paused_until

    # -- lock-free, while open -----------------------------------------------------------

    def admit_fast(self) -> int:
        """Take a slot without the lock (only while ``open``); the epoch admitted in."""
        slots = self.slots
        slots.append(None)
        if len(slots) > self.peak:
            self.peak = len(slots)  # a statistic: a lost race here is harmless
        return self.epoch

    def release_fast(self) -> None:
        """Give back a successful call's slot; takes the lock only to wake waiters or
        grow a narrowed window."""
        self.slots.pop()
        if self.waiters or self.window != self.ceiling:
            with self.lock:
                self.grow()
                self.drain()

    # -- under the lock ------------------------------------------------------------------

    def room(self) -> bool:
        if self.paused_until:
            if self.clock() < self.paused_until:
                return False
            self.paused_until = 0.0
        return self.cap is None or len(self.slots) < self.cap

    def admit(self) -> None:
        self.slots.append(None)
        self.peak = max(self.peak, len(self.slots))

    def drain(self) -> None:
        """Admit queued waiters while there is room, first come first served."""
        waiters = self.waiters
        while waiters and self.room():
            waiter = waiters.popleft()
            self.admit()
            waiter.granted, waiter.epoch = True, self.epoch
            if not wake(waiter):  # its loop is closed: nobody will take the slot
                waiter.granted = False
                self.slots.pop()

    def release(self) -> None:
        self.slots.pop()
        if self.waiters:
            self.drain()

    def forget(self, waiter: Waiter) -> None:
        """A queued or admitted call that will not run: its slot or its place goes."""
        if waiter.granted:
            self.release()
        elif waiter in self.waiters:
            self.waiters.remove(waiter)

    def _set_window(self, window: float | None) -> None:
        self.window = window
        self.cap = None if window is None else max(1, int(window))
        self.window_history.append((self.clock(), window))

    def cut(self, epoch: int) -> None:
        """Multiplicative decrease, once per epoch (a call admitted before the last cut
        does not cut again)."""
        if epoch != self.epoch:
            return
        base = self.window if self.window is not None else float(max(len(self.slots), 1))
        if self.window is None:  # unlimited: recover up to the level that hit the limit
            self.recover_to = base
        self.epoch += 1
        self._set_window(max(1.0, base / 2))

    def grow(self) -> None:
        """Additive increase: +1 slot per window-full of successful calls."""
        window, target = self.window, self.recover_to
        if window is None or target is None or window >= target:
            return
        if self.paused_until and self.clock() < self.paused_until:
            return  # no growth while the provider asked us to wait
        window += 1.0 / window
        self._set_window(self.ceiling if window >= target else window)

    def pause_for(self, seconds: float) -> float:
        """Hold new admissions back for ``seconds`` (a longer pause already set wins);
        the seconds until the pause ends."""
        now = self.clock()
        if now + seconds > self.paused_until:
            self.paused_until = now + seconds
            # Queued calls sleep until a release wakes them; a release during the pause
            # admits nobody, and with nothing in flight none may come. Woken, each one
            # polls again and sleeps until the pause ends.
            for waiter in self.waiters:
                wake(waiter)
        return self.paused_until - now

    def left(self) -> float | None:
        """Seconds until the pause ends (``None``: no pause)."""
        return max(self.paused_until - self.clock(), 0.0) if self.paused_until else None

    def wait(self, delay: float) -> float:
        """Seconds until a retry may start (a rate limit's pause holds it back)."""
        paused = self.paused_until
        return max(delay, paused - self.clock()) if paused else delay

    def snapshot(self) -> dict[str, Any]:
        paused = self.paused_until - self.clock() if self.paused_until else 0.0
        return {
            "window": self.window,
            "inflight": len(self.slots),
            "queued": len(self.waiters),
            "peak": self.peak,
            "paused_for": max(paused, 0.0),
            "rate_limits": self.rate_limits,
            "retries": self.retries,
        }
