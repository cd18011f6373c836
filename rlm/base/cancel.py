"""A cooperative cancel token, one per call tree (a root turn and all its children).

Whoever wants the tree to stop calls ``cancel()``: ``RLM.cancel()`` from any thread, a
turn that saw Ctrl-C or task cancellation. Everyone else either polls ``cancelled``
(the drivers between effects, the handler before it launches a call; a plain attribute
read, so the uncancelled path costs nothing) or registers a wake-up with ``on_cancel``
(waiters in the governor, the async root task, futures on the handler's loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import threading
from collections.abc import Callable, Iterator

from rlm.base.errors import CancellationError

DEFAULT_REASON = "Execution cancelled by user"


def _noop() -> None:
    return None


class CancelToken:
    """Set once, never reset: a cancelled tree stays cancelled (the next turn gets a new
    token). Callbacks run once, in the thread that cancels, and must not block."""

    __slots__ = ("_callbacks", "_event", "_ids", "_lock", "cancelled", "reason")

    def __init__(self) -> None:
        self.cancelled = False
        self.reason = DEFAULT_REASON
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: dict[int, Callable[[], object]] = {}
        self._ids = itertools.count()

    def cancel(self, reason: str = DEFAULT_REASON) -> None:
        """Cancel the tree (idempotent, thread-safe)."""
        with self._lock:
            if self.cancelled:
                return
            self.reason = reason
            self.cancelled = True
            callbacks, self._callbacks = list(self._callbacks.values()), {}
        self._event.set()
        for callback in callbacks:
            with contextlib.suppress(Exception):  # a waiter already gone: nothing to wake
                callback()

    def on_cancel(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Run ``callback`` on cancellation (now, if already cancelled). Returns a
        function that unregisters it; call it when the wait is over."""
        with self._lock:
            if not self.cancelled:
                key = next(self._ids)
                self._callbacks[key] = callback

                def unregister() -> None:
                    with self._lock:
                        self._callbacks.pop(key, None)

                return unregister
        callback()
        return _noop

    def error(self) -> CancellationError:
        return CancellationError(None, self.reason)

    def raise_if_cancelled(self) -> None:
        if self.cancelled:
            raise self.error()

    def wait(self, timeout: float | None) -> bool:
        """Sleep up to ``timeout`` seconds; returns early (``True``) when cancelled."""
        return self._event.wait(timeout)


# The token of the call tree whose LM call runs in this context: set around a sync call
# by the engine (``CallPipeline.drive``), so a client that can stop mid-call (llama.cpp's
# stopping criteria) stops when the tree is cancelled.
_call_token: contextvars.ContextVar[CancelToken | None] = contextvars.ContextVar(
    "rlm_call_token", default=None
)


def current_call_token() -> CancelToken | None:
    """The cancel token of the LM call running in this context, if the engine set one."""
    return _call_token.get()


class call_token:  # used as ``with call_token(token):``, like a function
    """While inside, ``current_call_token()`` is ``token``. A class rather than a
    ``contextmanager`` generator: every sync LM call enters one."""

    __slots__ = ("_reset", "_token")

    def __init__(self, token: CancelToken | None) -> None:
        self._token = token

    def __enter__(self) -> None:
        self._reset = _call_token.set(self._token)

    def __exit__(self, *exc: object) -> None:
        _call_token.reset(self._reset)


@contextlib.contextmanager
def cancelling_current_task(token: CancelToken) -> Iterator[None]:
    """While inside, cancelling ``token`` (from any thread) cancels the running asyncio
    task, so whatever it awaits (an LM request, a cell) stops at once. Must be entered and
    left on the task itself; the task's cancel count is restored on the way out."""
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("cancelling_current_task() needs a running task")
    loop = task.get_loop()
    state = {"inside": True, "fired": False}

    def fire() -> None:  # on the loop: the task is parked at an await inside the block
        if state["inside"] and not task.done():
            state["fired"] = True
            task.cancel()

    unregister = token.on_cancel(lambda: loop.call_soon_threadsafe(fire))
    try:
        yield
    finally:
        state["inside"] = False
        unregister()
        if state["fired"]:
            task.uncancel()


async def acquire_lock(lock: threading.Lock) -> None:
    """``lock.acquire()`` from a coroutine: polls (1 ms, backing off to 20 ms) rather than
    parking a thread on the lock, so any number of waiting tasks hold no threads and a
    cancelled waiter leaves nothing behind."""
    delay = 0.001
    while not lock.acquire(blocking=False):
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.02)
