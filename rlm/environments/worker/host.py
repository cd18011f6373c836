"""The worker's side of sub-calls: ``llm_query`` & co. become requests to the host.

A request carries the id of the cell that made it, so the host can attribute usage
and completions to that cell; the calling thread blocks until the host replies. Any
thread of a cell may call at once: replies are matched by request id.

Standard library only, Python 3.9 compatible.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable
from typing import Any

from rlm.environments.worker.protocol import Channel, ChannelClosed, FrameTooLarge

UNREACHABLE = "Error: the host is unreachable"


class _Pending:
    """One request in flight. A bare lock, held until the reply arrives, wakes the
    waiting thread faster than an Event; a timeout's SIGINT still interrupts it."""

    __slots__ = ("done", "reply")

    def __init__(self) -> None:
        self.done = threading.Lock()
        self.done.acquire()
        self.reply: dict[str, Any] | None = None

    def wait(self) -> None:
        self.done.acquire()

    def set(self) -> None:
        with contextlib.suppress(RuntimeError):  # already released
            self.done.release()


class HostBridge:
    """Sends sub-call requests over ``channel`` and waits for their replies."""

    def __init__(self, channel: Channel, current_cell: Callable[[], int]) -> None:
        self._channel = channel
        self._current_cell = current_cell
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._closed = False

    def request(self, op: str, **fields: Any) -> dict[str, Any] | None:
        """Send request ``op`` and block for the host's reply (None if the host is
        gone). Called from any thread of a cell."""
        slot = _Pending()
        with self._lock:
            if self._closed:
                return None
            request_id = next(self._ids)
            self._pending[request_id] = slot
        try:
            message = dict(fields, op=op, id=request_id, cell=self._current_cell())
            try:
                self._channel.send(message)
            except FrameTooLarge as exc:  # nothing was sent: the REPL sees why
                return {"error": f"the sub-call request was not sent: {exc}"}
            except (ChannelClosed, OSError):
                return None
            slot.wait()
        finally:
            with self._lock:
                self._pending.pop(request_id, None)
        return slot.reply

    def ask(self, op: str, prompts: list[Any], model: str | None, schema: Any = None) -> list[str]:
        """One reply text per prompt (``op``: ``llm``, ``llm_batched``, ``rlm`` or
        ``rlm_batched``; ``schema``: a typed ``llm_query``'s). Failures come back as
        ``"Error: ..."`` texts, like LocalREPL's."""
        fields: dict[str, Any] = {"prompts": prompts, "model": model}
        if schema is not None:
            fields["schema"] = schema
        reply = self.request(op, **fields)
        texts = reply.get("texts") if reply is not None else None
        if not isinstance(texts, list) or len(texts) != len(prompts):
            error = reply.get("error") if reply is not None else None
            return [f"Error: {error}" if error else UNREACHABLE] * len(prompts)
        return [str(t) for t in texts]

    def deliver(self, message: dict[str, Any]) -> None:
        """Hand a host reply to the thread waiting for it (called by the reader)."""
        with self._lock:
            slot = self._pending.get(message.get("re"))  # type: ignore[arg-type]
        if slot is not None:
            slot.reply = message
            slot.set()

    def close(self) -> None:
        """The host is gone: release every waiting thread."""
        with self._lock:
            self._closed = True
            pending = list(self._pending.values())
        for slot in pending:
            slot.set()
