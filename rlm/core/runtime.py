"""A background asyncio loop that sync code can submit coroutines to, and the thread
pool that async turns use for blocking work.

The handler uses it for batched sub-calls: one long-lived loop per session, so async
HTTP clients keep their connection pools across batches (``asyncio.run`` per batch
would build and tear down a loop, and orphan those pools).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from rlm.core.elastic_pool import ElasticThreadPool

if TYPE_CHECKING:
    from rlm.base.cancel import CancelToken

T = TypeVar("T")


class AsyncRuntime:
    """A daemon thread running an event loop, started on first use."""

    def __init__(self, name: str = "rlm-runtime") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=run, name=self._name, daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def in_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def run(self, coro: Coroutine[Any, Any, T], cancel: CancelToken | None = None) -> T:
        """Run ``coro`` on the loop and wait for it from this (non-loop) thread.

        Cancelling ``cancel`` cancels the coroutine's task on the loop (so its in-flight
        calls stop) and raises ``CancellationError`` here at once."""
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError("AsyncRuntime.run() called from its own loop thread")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        unregister = cancel.on_cancel(future.cancel) if cancel is not None else None
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            if cancel is not None and cancel.cancelled:
                raise cancel.error() from None
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            if unregister is not None:
                unregister()

    def run_until_done(self, coro: Coroutine[Any, Any, T], interrupt: Callable[[], object]) -> T:
        """Run ``coro`` on the loop and wait for its end, however it ends. If this
        thread is interrupted while it waits (Ctrl-C), ``interrupt()`` is called (it
        should make ``coro`` wind down), ``coro`` is waited for, and the interruption
        is re-raised."""
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError("AsyncRuntime.run_until_done() called from its own loop thread")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            if not future.done():
                interrupt()
                with contextlib.suppress(BaseException):  # its own outcome: superseded
                    future.result()
            raise

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        if not loop.is_running():
            loop.close()


# Blocking work of async turns (REPL cells, opening a turn) runs here rather than in
# asyncio's default executor: that one has min(32, cpus + 4) threads, and a cell holds
# its thread for as long as its sub-calls take, so N concurrent runs would queue behind
# each other. Threads are made on demand, reused, and let go after _BLOCKING_IDLE
# seconds without work (a server's thread count follows its load back down); the cap
# only bounds a runaway.
_BLOCKING_WORKERS = 512
_BLOCKING_IDLE = 10.0
_blocking_pool: ElasticThreadPool | None = None
_blocking_lock = threading.Lock()


def _pool() -> ElasticThreadPool:
    global _blocking_pool
    with _blocking_lock:
        if _blocking_pool is None:
            _blocking_pool = ElasticThreadPool(
                _BLOCKING_WORKERS, _BLOCKING_IDLE, thread_name_prefix="rlm-blocking"
            )
        return _blocking_pool


def run_blocking(fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """``fn(*args)`` on a worker thread, in a copy of the caller's context (like
    ``asyncio.to_thread``), as a future of the running loop."""
    context = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    return loop.run_in_executor(_pool(), functools.partial(context.run, fn, *args))
