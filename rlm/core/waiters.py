"""How a call queued by the governor sleeps: on a thread event or an asyncio future."""

from __future__ import annotations

import asyncio
import threading


class Waiter:
    """A queued call. ``wake`` may be called from any thread, more than once."""

    __slots__ = ("epoch", "granted", "key")

    def __init__(self, key: object) -> None:
        self.granted = False
        self.epoch = 0  # the epoch it was admitted in (not the one it resumes in)
        self.key = key

    def wake(self) -> None:
        raise NotImplementedError


class ThreadWaiter(Waiter):
    __slots__ = ("event",)

    def __init__(self, key: object) -> None:
        super().__init__(key)
        self.event = threading.Event()

    def wake(self) -> None:
        self.event.set()


class TaskWaiter(Waiter):
    __slots__ = ("future", "loop")

    def __init__(self, key: object, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(key)
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()

    def _resolve(self) -> None:
        if not self.future.done():
            self.future.set_result(None)

    def wake(self) -> None:
        self.loop.call_soon_threadsafe(self._resolve)
