"""Iterate a run's events as they happen: ``for event in rlm.stream(...)``.

Both streams subscribe to the RLM's event bus for the duration of one completion, so
they see the root run and every child run. After the last event, ``result`` holds the
``RLMChatCompletion``; if the run raised, iterating re-raises that exception.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from rlm.base.events import Event, EventBus
from rlm.base.types import RLMChatCompletion

_DONE = object()


class EventStream:
    """Runs the completion on a thread and yields its events in this one."""

    def __init__(
        self,
        bus: EventBus,
        run: Callable[[], RLMChatCompletion],
        cancel: Callable[[], None] | None = None,
    ) -> None:
        self.result: RLMChatCompletion | None = None
        self._cancel = cancel
        self._error: BaseException | None = None
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._unsubscribe = bus.subscribe(self._queue.put)
        # In the caller's context, as ``run_blocking`` does: context variables (e.g. the
        # current OpenTelemetry span, the parent of the run's trace) reach the run.
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._work, run), name="rlm-stream", daemon=True
        )
        self._thread.start()

    def _work(self, run: Callable[[], RLMChatCompletion]) -> None:
        try:
            self.result = run()
        except BaseException as exc:
            self._error = exc
        finally:
            self._unsubscribe()
            self._queue.put(_DONE)

    def cancel(self) -> None:
        """Cancel the run (from any thread); iteration then ends with its error."""
        if self._cancel is not None:
            self._cancel()

    def __iter__(self) -> Iterator[Event]:
        while True:
            try:
                item = self._queue.get()
            except KeyboardInterrupt:  # Ctrl-C while waiting: stop the run too
                self.cancel()
                raise
            if item is _DONE:
                break
            assert isinstance(item, Event)
            yield item
        self._thread.join()
        if self._error is not None:
            raise self._error


class AsyncEventStream:
    """Runs the completion as a task on the current loop and yields its events."""

    def __init__(self, bus: EventBus, run: Callable[[], Awaitable[RLMChatCompletion]]) -> None:
        self.result: RLMChatCompletion | None = None
        self._bus = bus
        self._run = run

    async def _iterate(self) -> AsyncIterator[Event]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[object] = asyncio.Queue()

        def forward(event: Event) -> None:  # from any thread, onto this loop
            loop.call_soon_threadsafe(events.put_nowait, event)

        unsubscribe = self._bus.subscribe(forward)
        task = asyncio.ensure_future(self._run())
        task.add_done_callback(lambda _: events.put_nowait(_DONE))
        # A consumer that stops early never reads the task's exception: mark it read.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            while True:
                item = await events.get()
                if item is _DONE:
                    break
                assert isinstance(item, Event)
                yield item
            unsubscribe()
            while not events.empty():  # events that raced the task's completion
                item = events.get_nowait()
                if isinstance(item, Event):
                    yield item
            self.result = task.result()
        finally:
            unsubscribe()
            if not task.done():
                task.cancel()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()
