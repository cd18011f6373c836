"""One async SDK client per event loop.

An SDK's async client pools connections that belong to the loop that opened them, and
callers may use several loops (``asyncio.run`` per batch), so each running loop gets its
own client, made on first use there. Loops are held weakly: a client goes with its loop.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Coroutine
from contextlib import suppress
from typing import Any, Generic, TypeVar

T = TypeVar("T")

AsyncClose = Callable[[T], Coroutine[Any, Any, object]]


class PerLoop(Generic[T]):
    """A thread-safe cache of one ``T`` per running event loop.

    With ``aclose``, ``close_all`` also closes each item on its own loop (best effort);
    without it, ``close_all`` only forgets them and their connections die with the loop.
    ``first`` supplies the first loop's item (a client built ahead, as ``rlms`` builds its
    ``async_client``); every later loop gets one from ``get``'s factory.
    """

    def __init__(
        self, aclose: AsyncClose[T] | None = None, first: Callable[[], T] | None = None
    ) -> None:
        self._items: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self._aclose = aclose
        self._first = first

    def get(self, factory: Callable[[], T]) -> T:
        """The running loop's item, made by ``factory`` the first time."""
        loop = asyncio.get_running_loop()
        with self._lock:
            item = self._items.get(loop)
            if item is None:
                make, self._first = self._first or factory, None
                item = self._items[loop] = make()
            return item

    def close_all(self) -> None:
        """Forget every item, closing each on its loop when ``aclose`` was given."""
        with self._lock:
            pending = list(self._items.items())
            self._items.clear()
        if self._aclose is None:
            return
        for loop, item in pending:
            # Best effort: an async client's connections die with its loop anyway.
            with suppress(Exception):
                _close_on_loop(loop, item, self._aclose)


_closing: set[Any] = set()  # keeps fire-and-forget close tasks alive until they finish


def _close_on_loop(loop: asyncio.AbstractEventLoop, item: T, aclose: AsyncClose[T]) -> None:
    if loop.is_closed():
        return
    if not loop.is_running():
        loop.run_until_complete(aclose(item))
        return
    try:
        current = asyncio.get_running_loop()
    except RuntimeError:
        current = None
    if current is loop:
        task = loop.create_task(aclose(item))
        _closing.add(task)
        task.add_done_callback(_closing.discard)
    else:
        asyncio.run_coroutine_threadsafe(aclose(item), loop)
