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
  back at its ceiling. A 429 that ends a call (its retries spent) leaves with
  ``retry_after`` set: the provider's, else the pause the governor chose.
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

The window, the AIMD state and the pause live in a ``RateWindow``
(``rlm.core.rate_window``), which governors of several trees may share: one per
upstream for a whole server (``shared_governor``, or ``RLM(governor=...)``, which gives
the RLM's tree a governor of its own over that window: ``for_tree``). A 429 seen by one
tree then pauses and narrows them all; the circuit breaker, the child gate and
cancellation stay per tree.

One state machine behind the window's ``threading.Lock`` serves threads (``run``) and
asyncio (``arun``); only the way a waiter sleeps differs. With no cap, no 429, no open
circuit and nothing cancelled, a call takes no lock at all: it appends to and pops from
a list.
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
from rlm.core.rate_window import RateWindow, wake
from rlm.core.waiters import TaskWaiter, ThreadWaiter, Waiter

A = TypeVar("A")
T = TypeVar("T")

# Told of each retry: the error, the 0-based attempt that failed, seconds until the next.
OnRetry = Callable[[BaseException, int, float], None]


def _noop() -> None:
    return None


class Governor:
    """Admission, pacing, retries and the circuit breaker for one call tree.

    ``window``: a ``RateWindow`` shared with other trees' governors (then
    ``max_inflight``, its ceiling, is the window's and must not be given here)."""

    def __init__(
        self,
        max_inflight: int | None = None,
        max_children: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        history: int = 1024,
        window: RateWindow | None = None,
    ) -> None:
        if window is not None and max_inflight is not None:
            raise ValueError("max_inflight belongs to the shared window; give one or the other")
        self.rate = (
            window if window is not None else RateWindow(max_inflight, clock=clock, history=history)
        )
        self.children = ChildGate(max_children)
        self._lock = self.rate.lock
        self._tripped: dict[object, BaseException] = {}  # client key -> the error

    def for_tree(self, max_children: int | None = None) -> Governor:
        """A governor for another call tree over this one's window: the pacing (window,
        AIMD, pauses on 429) is shared; the circuit breaker and the child gate
        (``max_children``) are the new tree's own."""
        return Governor(max_children=max_children, window=self.rate)

    # -- state -------------------------------------------------------------------------

    @property
    def max_inflight(self) -> int | None:
        return self.rate.max_inflight

    @property
    def window(self) -> float | None:
        return self.rate.window

    @property
    def inflight(self) -> int:
        return len(self.rate.slots)

    @property
    def peak(self) -> int:
        return self.rate.peak

    @property
    def rate_limits(self) -> int:
        return self.rate.rate_limits

    @property
    def retries(self) -> int:
        return self.rate.retries

    @property
    def window_history(self) -> deque[tuple[float, float | None]]:
        return self.rate.window_history

    def tripped(self, key: object = None) -> BaseException | None:
        """The auth/quota error that opened the circuit for ``key``, if any."""
        return self._tripped.get(key)

    @property
    def _open(self) -> bool:
        """True when nothing throttles the tree: the lock-free path may admit."""
        return self.rate.open and not self._tripped

    # -- the state machine (every method below runs under self._lock) -----------------

    def _trip(self, key: object, cause: BaseException) -> None:
        self._tripped[key] = cause
        for waiter in [w for w in self.rate.waiters if w.key is key]:
            wake(waiter)  # it polls, finds its circuit open and leaves the queue

    def _poll(self, waiter: Waiter, token: CancelToken | None) -> tuple[bool, float | None]:
        """For a queued call: admitted yet? If not, how long to sleep (``None``: until
        woken). Raises, after cleaning up, if its circuit opened or the tree was cancelled."""
        with self._lock:
            rate = self.rate
            if not waiter.granted:
                rate.drain()  # a pause may have ended
            cause = self._tripped.get(waiter.key)
            if cause is not None or (token is not None and token.cancelled):
                rate.forget(waiter)
                if cause is not None:
                    raise CircuitOpenError(cause)
                assert token is not None
                raise token.error()
            if waiter.granted:
                return True, None
            return False, rate.left()

    def _abandon(self, waiter: Waiter) -> None:
        with self._lock:
            self.rate.forget(waiter)

    # -- admission ---------------------------------------------------------------------

    def _try_enter(self, token: CancelToken | None, waiter: Waiter) -> int | None:
        """The epoch if admitted at once; else ``waiter`` joins the queue (``None``)."""
        if token is not None and token.cancelled:
            raise token.error()
        with self._lock:
            cause = self._tripped.get(waiter.key)
            if cause is not None:
                raise CircuitOpenError(cause)
            rate = self.rate
            if not rate.waiters and rate.room():
                rate.admit()
                return rate.epoch
            rate.waiters.append(waiter)
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
            return self.rate.admit_fast()  # atomic append; never queues: no waiter built
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
            rate = self.rate
            try:
                if not isinstance(exc, Exception):  # cancellation, Ctrl-C: never retried
                    return None
                if is_fatal(exc):
                    if key not in self._tripped:
                        self._trip(key, exc)
                    return None
                retry_after = exc.retry_after if isinstance(exc, ProviderError) else None
                if is_rate_limit(exc):
                    rate.rate_limits += 1
                    rate.cut(epoch)
                    pause = rate.pause_for(policy.delay(attempt, retry_after))
                    if attempt >= policy.max_retries:
                        if isinstance(exc, ProviderError) and exc.retry_after is None:
                            exc.retry_after = round(pause, 3)  # our own pause
                        return None
                    rate.retries += 1
                    return 0.0  # re-queue: the pause holds it back
                if attempt >= policy.max_retries or not is_retryable(exc):
                    return None
                rate.retries += 1
                return policy.delay(attempt, retry_after)
            finally:
                rate.release()

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
        attempt, rate = 0, self.rate
        while True:
            if token is not None and token.cancelled:
                raise token.error()
            # The lock-free admission: every sync LM call takes it while nothing throttles.
            if rate.cap is None and not self._tripped and not rate.paused_until:
                epoch = rate.admit_fast()
            else:
                epoch = self._enter(token, key)
            try:
                result = fn(arg)
            except BaseException as exc:
                delay = self._failed(exc, attempt, policy, epoch, key)
                if delay is None:
                    raise
                if on_retry is not None:
                    on_retry(exc, attempt, rate.wait(delay))
            else:
                rate.release_fast()
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
        attempt, rate = 0, self.rate
        while True:
            epoch = await self._aenter(token, key)
            try:
                result = await fn(arg)
            except BaseException as exc:
                delay = self._failed(exc, attempt, policy, epoch, key)
                if delay is None:
                    raise
                if on_retry is not None:
                    on_retry(exc, attempt, rate.wait(delay))
            else:
                rate.release_fast()
                return result
            if delay > 0:
                await asyncio.sleep(delay)
            if token is not None:
                token.raise_if_cancelled()
            attempt += 1

    def snapshot(self) -> dict[str, Any]:
        """A consistent view of the governor (its window's state is shared), for reports
        and tests."""
        with self._lock:
            return {
                **self.rate.snapshot(),
                "tripped": [str(cause) for cause in self._tripped.values()],
                "children": self.children.active,
            }


# -- one governor per upstream, for a whole process ------------------------------------

_shared: dict[tuple[str, str | None], Governor] = {}
_shared_lock = threading.Lock()


def shared_governor(
    backend: str, base_url: str | None = None, *, max_inflight: int | None = None
) -> Governor:
    """The process's governor for the upstream ``(backend, base_url)``, made on first use
    with ``max_inflight`` (later calls get the same one, whatever they pass). Give it to
    every RLM that calls that upstream (``RLM(..., governor=shared_governor(...))``):
    each call tree then gets its own governor over its window (``for_tree``), so a 429
    pauses and narrows all of them at once."""
    key = (backend, base_url.rstrip("/") if base_url else None)
    with _shared_lock:
        governor = _shared.get(key)
        if governor is None:
            governor = _shared[key] = Governor(max_inflight)
        return governor
