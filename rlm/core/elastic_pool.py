"""A thread pool that grows on demand and shrinks when idle.

``concurrent.futures.ThreadPoolExecutor`` never lets a thread go: a server that once ran
200 turns at a time keeps 200 threads (and their stacks and allocator arenas) for the
rest of its life. Here a thread that has waited ``idle_timeout`` seconds for work exits,
so the count follows the load back down; ``max_workers`` bounds a runaway. Threads are
daemons: a cell stuck in a blocking call never holds up the interpreter's exit.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Item = tuple["concurrent.futures.Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class ElasticThreadPool(concurrent.futures.Executor):
    """``submit`` runs ``fn`` on an idle thread, or on a new one while fewer than
    ``max_workers`` exist (else it waits its turn, first come first served)."""

    def __init__(
        self, max_workers: int, idle_timeout: float = 10.0, thread_name_prefix: str = "pool"
    ) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        if idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive")
        self.max_workers = max_workers
        self.idle_timeout = idle_timeout
        self._prefix = thread_name_prefix
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers = 0  # threads alive
        self._idle = 0  # of them, waiting for work
        self._pending = 0  # items queued and not yet taken
        self._started = 0  # for thread names
        self._shutdown = False

    @property
    def threads(self) -> int:
        """Threads alive now (idle or busy)."""
        return self._workers

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new work after shutdown")
            self._pending += 1
            self._queue.put((future, fn, args, kwargs))
            if self._idle < self._pending and self._workers < self.max_workers:
                self._workers += 1
                self._started += 1
                name = f"{self._prefix}_{self._started}"
                threading.Thread(target=self._work, name=name, daemon=True).start()
        return future

    def _take(self) -> _Item | None:
        """The next item, or ``None`` when this thread should exit (idle too long, or
        shut down)."""
        while True:
            with self._lock:
                self._idle += 1
            try:
                item = self._queue.get(timeout=self.idle_timeout)
            except queue.Empty:
                with self._lock:
                    self._idle -= 1
                    if self._pending == 0:  # nothing on its way to this thread: go
                        self._workers -= 1
                        return None
                continue  # an item was queued as the wait ended: take it
            with self._lock:
                self._idle -= 1
                if item is None:  # shutdown's wake-up
                    self._workers -= 1
                    return None
                self._pending -= 1
            return item

    def _work(self) -> None:
        while True:
            item = self._take()
            if item is None:
                return
            future, fn, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)
            del item, future, fn, args, kwargs  # nothing kept alive while idle

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new work; idle threads exit. Queued work still runs unless
        ``cancel_futures``. ``wait`` is not honoured beyond that: threads are daemons
        and may be stuck in a cell."""
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        self._pending -= 1
                        item[0].cancel()
            for _ in range(self._workers):
                self._queue.put(None)
