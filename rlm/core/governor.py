"""One concurrency governor per call tree: every LM call of a session passes through it.

The root's model calls, ``llm_query``/``llm_query_batched``, ``rlm_query``/
``rlm_query_batched`` and every child share it, because children share their parent's
``LMHandler`` and the handler owns the governor. It does four things:

* **Window.** At most ``window`` calls are in flight tree-wide; ``max_inflight``
  (``RLM(max_inflight_llm_calls=...)``) is the window's ceiling, ``None`` is unlimited.
  Waiters are admitted first-come first-served.
* **AIMD on rate limits.** A 429 halves the window (once per round: only a call launched
  after the last cut can cut again), pauses new launches for the provider's
  ``Retry-After`` or the policy's jittered back-off, and re-queues the call. Each success
  then adds ``1/window``: one slot per window-full of successes, until the window is
  back at its ceiling.
* **Retries.** The governor is the only retry layer for the calls it runs: the caller
  passes the client's ``retry_policy``, taken over when the client entered the engine
  (``rlm.clients.legacy.adopt``), so the client itself tries once per call. Transient
  errors back off outside the window, with jitter. A logical call makes at most
  ``1 + max_retries`` attempts, as it would without the governor. Each retry is told
  to the caller's ``on_retry`` as it is decided (no silent pauses).
* **Circuit breaker.** An auth or quota error (missing key, 401/402/403, "insufficient
  quota") trips it for that client (``key``): its queued calls and every later call fail
  at once with ``CircuitOpenError`` instead of launching doomed requests, until the
  session closes. Other clients of the tree (a root whose own key works) carry on.

One state machine behind one ``threading.Lock`` serves threads (``run``) and asyncio
(``arun``); only the way a waiter sleeps differs. With no cap, no 429, no open circuit
and nothing cancelled, a call takes no lock at all: it appends to and pops from a list.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from rlm.base.cancel import CancelToken
from rlm.base.errors import CircuitOpenError, ProviderError
from rlm.clients.retry import DEFAULT_POLICY, RetryPolicy, is_retryable
from rlm.core.child_slots import ChildGate
from rlm.core.error_kinds import is_fatal, is_rate_limit
from rlm.core.waiters import TaskWaiter, ThreadWaiter, Waiter

A = TypeVar("A")
T = TypeVar("T")

# Told of each retry: the error, the 0-based attempt that failed, seconds until the next.
OnRetry = Callable[[BaseException, int, float], None]


def _noop() -> None:
    return None


class Governor:
    """Admission, pacing, retries and the circuit breaker for one call tree."""

    def __init__(
        self,
        max_inflight: int | None = None,
        max_children: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        history: int = 1024,
    ) -> None:
        if max_inflight is not None and max_inflight < 1:
            raise ValueError("max_inflight must be >= 1 or None")
        self.max_inflight = max_inflight
        self.children = ChildGate(max_children)
        self._clock = clock
        self._lock = threading.Lock()
        self._window: float | None = None if max_inflight is None else float(max_inflight)
        self._ceiling = self._window  # the window when nothing is throttling it
        self._cap: int | None = max_inflight  # int(window), read on the fast path
        self._recover_to: float | None = self._window
        # One entry per call in flight. list.append/pop are atomic, so while nothing
        # throttles the tree, calls enter and leave without the lock.
        self._slots: list[None] = []
        self._waiters: deque[Waiter] = deque()
        self._paused_until = 0.0
        self._epoch = 0  # bumped by every cut: a call from an older epoch cannot cut again
        self._tripped: dict[object, BaseException] = {}  # client key -> the error
        self.peak = 0
        self.rate_limits = 0
        self.retries = 0
        # (monotonic time, window) at start and after every change; None is unlimited.
        self.window_history: deque[tuple[float, float | None]] = deque(maxlen=history)
        self.window_history.append((clock(), self._window))

    # -- state -------------------------------------------------------------------------

    @property
    def window(self) -> float | None:
        return self._window

    @property
    def inflight(self) -> int:
        return len(self._slots)

    def tripped(self, key: object = None) -> BaseException | None:
        """The auth/quota error that opened the circuit for ``key``, if any."""
        return self._tripped.get(key)

    @property
    def _open(self) -> bool:
        """True when nothing throttles the tree: the lock-free path may admit."""
        return self._cap is None and not self._tripped and not self._paused_until

    # -- the state machine (every method below runs under self._lock) -----------------

    def _room(self) -> bool:
        if self._paused_until:
            if self._clock() < self._paused_until:
                return False
            self._paused_until = 0.0
        return self._cap is None or len(self._slots) < self._cap

    def _admit(self) -> None:
        self._slots.append(None)
        self.peak = max(self.peak, len(self._slots))

    def _drain(self) -> None:
        waiters = self._waiters
        while waiters and self._room():
            waiter = waiters.popleft()
            self._admit()
            waiter.granted, waiter.epoch = True, self._epoch
            waiter.wake()

    def _release(self) -> None:
        self._slots.pop()
        if self._waiters:
            self._drain()

    def _set_window(self, window: float | None) -> None:
        self._window = window
        self._cap = None if window is None else max(1, int(window))
        self.window_history.append((self._clock(), window))

    def _cut(self) -> None:
        """Multiplicative decrease, once per epoch."""
        base = self._window if self._window is not None else float(max(len(self._slots), 1))
        if self._window is None:  # unlimited: recover up to the level that hit the limit
            self._recover_to = base
        self._epoch += 1
        self._set_window(max(1.0, base / 2))

    def _grow(self) -> None:
        """Additive increase: +1 slot per window-full of successful calls."""
        window, target = self._window, self._recover_to
        if window is None or target is None or window >= target:
            return
        if self._paused_until and self._clock() < self._paused_until:
            return  # no growth while the provider asked us to wait
        window += 1.0 / window
        self._set_window(self._ceiling if window >= target else window)

    def _trip(self, key: object, cause: BaseException) -> None:
        self._tripped[key] = cause
        doomed = [w for w in self._waiters if w.key is key]
        self._waiters = deque(w for w in self._waiters if w.key is not key)
        for waiter in doomed:
            waiter.wake()

    def _poll(self, waiter: Waiter, token: CancelToken | None) -> tuple[bool, float | None]:
        """For a queued call: admitted yet? If not, how long to sleep (``None``: until
        woken). Raises, after cleaning up, if its circuit opened or the tree was cancelled."""
        with self._lock:
            if not waiter.granted:
                self._drain()  # a pause may have ended
            cause = self._tripped.get(waiter.key)
            if cause is not None or (token is not None and token.cancelled):
                self._forget(waiter)
                if cause is not None:
                    raise CircuitOpenError(cause)
                assert token is not None
                raise token.error()
            if waiter.granted:
                return True, None
            left = self._paused_until - self._clock() if self._paused_until else None
            return False, None if left is None else max(left, 0.0)

    def _forget(self, waiter: Waiter) -> None:
        if waiter.granted:
            self._release()
        elif waiter in self._waiters:
            self._waiters.remove(waiter)

    def _abandon(self, waiter: Waiter) -> None:
        with self._lock:
            self._forget(waiter)

    # -- admission ---------------------------------------------------------------------

    def _try_enter(self, token: CancelToken | None, waiter: Waiter) -> int | None:
        """The epoch if admitted at once; else ``waiter`` joins the queue (``None``)."""
        if token is not None and token.cancelled:
            raise token.error()
        with self._lock:
            cause = self._tripped.get(waiter.key)
            if cause is not None:
                raise CircuitOpenError(cause)
            if not self._waiters and self._room():
                self._admit()
                return self._epoch
            self._waiters.append(waiter)
        return None

    def _enter(self, token: CancelToken | None, key: object) -> int:
        waiter = ThreadWaiter(key)
        epoch = self._try_enter(token, waiter)
        if epoch is not None:
            return epoch
        unregister = token.on_cancel(waiter.wake) if token is not None else _noop
        try:
            while True:
                waiter.event.clear()  # before polling, so a wake-up is never lost
                admitted, timeout = self._poll(waiter, token)
                if admitted:
                    return waiter.epoch
                waiter.event.wait(timeout)
        except BaseException:
            self._abandon(waiter)
            raise
        finally:
            unregister()

    async def _aenter(self, token: CancelToken | None, key: object) -> int:
        if self._open:
            if token is not None and token.cancelled:
                raise token.error()
            self._admit()  # atomic append; never queues, so no waiter to build
            return self._epoch
        waiter = TaskWaiter(key, asyncio.get_running_loop())
        epoch = self._try_enter(token, waiter)
        if epoch is not None:
            return epoch
        unregister = token.on_cancel(waiter.wake) if token is not None else _noop
        try:
            while True:
                waiter.future = waiter.loop.create_future()
                admitted, timeout = self._poll(waiter, token)
                if admitted:
                    return waiter.epoch
                await asyncio.wait((waiter.future,), timeout=timeout)
        except BaseException:
            self._abandon(waiter)
            raise
        finally:
            unregister()

    # -- outcomes ----------------------------------------------------------------------

    def _succeeded(self) -> None:
        self._slots.pop()
        if self._waiters or self._window != self._ceiling:
            with self._lock:
                self._grow()
                self._drain()

    def _failed(
        self,
        exc: BaseException,
        attempt: int,
        policy: RetryPolicy,
        epoch: int,
        key: object,
    ) -> float | None:
        """Release the call's slot and decide: seconds to wait before retrying, or ``None``
        to give up and re-raise."""
        with self._lock:
            try:
                if not isinstance(exc, Exception):  # cancellation, Ctrl-C: never retried
                    return None
                if is_fatal(exc):
                    if key not in self._tripped:
                        self._trip(key, exc)
                    return None
                retry_after = exc.retry_after if isinstance(exc, ProviderError) else None
                if is_rate_limit(exc):
                    self.rate_limits += 1
                    if epoch == self._epoch:
                        self._cut()
                    pause = self._clock() + policy.delay(attempt, retry_after)
                    self._paused_until = max(self._paused_until, pause)
                    if attempt >= policy.max_retries:
                        return None
                    self.retries += 1
                    return 0.0  # re-queue: the pause holds it back
                if attempt >= policy.max_retries or not is_retryable(exc):
                    return None
                self.retries += 1
                return policy.delay(attempt, retry_after)
            finally:
                self._release()

    # -- running calls -----------------------------------------------------------------

    def run(
        self,
        fn: Callable[[A], T],
        arg: A,
        token: CancelToken | None = None,
        policy: RetryPolicy | None = None,
        key: object = None,
        on_retry: OnRetry | None = None,
    ) -> T:
        """``fn(arg)`` under the window, with retries under ``policy`` (``None``: the
        default policy); blocks this thread while queued. ``key`` names the client, for
        its circuit breaker; ``on_retry`` hears of each retry before its wait."""
        policy = DEFAULT_POLICY if policy is None else policy
        attempt, slots = 0, self._slots
        while True:
            # The lock-free admission of _aenter and _succeeded, inlined: every sync LM
            # call takes this path.
            if token is not None and token.cancelled:
                raise token.error()
            if self._cap is None and not self._tripped and not self._paused_until:
                slots.append(None)
                if len(slots) > self.peak:
                    self.peak = len(slots)  # a statistic: a lost race here is harmless
                epoch = self._epoch
            else:
                epoch = self._enter(token, key)
            try:
                result = fn(arg)
            except BaseException as exc:
                delay = self._failed(exc, attempt, policy, epoch, key)
                if delay is None:
                    raise
                if on_retry is not None:
                    on_retry(exc, attempt, self._wait(delay))
            else:
                slots.pop()
                if self._waiters or self._window != self._ceiling:
                    with self._lock:
                        self._grow()
                        self._drain()
                return result
            if delay > 0:
                if token is not None:
                    token.wait(delay)
                else:
                    time.sleep(delay)
            attempt += 1

    async def arun(
        self,
        fn: Callable[[A], Awaitable[T]],
        arg: A,
        token: CancelToken | None = None,
        policy: RetryPolicy | None = None,
        key: object = None,
        on_retry: OnRetry | None = None,
    ) -> T:
        """Async form of ``run``: queued calls await without blocking the loop."""
        policy = DEFAULT_POLICY if policy is None else policy
        attempt = 0
        while True:
            epoch = await self._aenter(token, key)
            try:
                result = await fn(arg)
            except BaseException as exc:
                delay = self._failed(exc, attempt, policy, epoch, key)
                if delay is None:
                    raise
                if on_retry is not None:
                    on_retry(exc, attempt, self._wait(delay))
            else:
                self._succeeded()
                return result
            if delay > 0:
                await asyncio.sleep(delay)
            if token is not None:
                token.raise_if_cancelled()
            attempt += 1

    def _wait(self, delay: float) -> float:
        """Seconds until a retry may start (a rate limit's pause holds it back)."""
        paused = self._paused_until
        return max(delay, paused - self._clock()) if paused else delay

    def snapshot(self) -> dict[str, Any]:
        """A consistent view of the governor, for reports and tests."""
        with self._lock:
            paused = self._paused_until - self._clock() if self._paused_until else 0.0
            return {
                "window": self._window,
                "inflight": len(self._slots),
                "queued": len(self._waiters),
                "peak": self.peak,
                "paused_for": max(paused, 0.0),
                "rate_limits": self.rate_limits,
                "retries": self.retries,
                "tripped": [str(cause) for cause in self._tripped.values()],
                "children": self.children.active,
            }
