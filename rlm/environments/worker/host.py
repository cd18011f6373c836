"""The worker's side of sub-calls: ``llm_query`` & co. become requests to the host.

A request carries the id of the cell that made it, so the host can attribute usage
and completions to that cell; the calling thread blocks until the host replies. Any
thread of a cell may call at once: replies are matched by request id.

Who reads the channel: one reader at a time, holding the read turn (``_turn``). The
worker's reader thread (``reader_loop``) reads whenever nobody else does. A thread
waiting for its reply takes the turn when it is free and reads for itself, so the reply
wakes that thread directly instead of the reader thread, which would then have to wake
it (a thread hand-off costs about as much as the pipe itself). Whatever a waiting thread
reads that is not its reply it handles exactly as the reader thread would (``handle``:
an interrupt, a request for the main thread, another thread's reply), in channel order.

The reader thread steps aside after handing a reply over (for ``_STEP_ASIDE`` seconds,
so that the next sub-call of a loop finds the turn free), and while a waiting thread
holds the turn it looks again after 1, 2, 4... milliseconds (at most ``_MAX_ASIDE``);
it is woken at once when a thread gives the turn back while others still wait. So the
channel is never left unread for longer than ``_MAX_ASIDE``: interrupts, and the host
going away, are still seen while a cell computes between sub-calls.

Standard library only, Python 3.9 compatible.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable
from typing import Any

from rlm.environments.worker.protocol import Channel, ChannelClosed, FrameTooLarge, ProtocolError
from rlm.environments.worker.spin import GiveWay

UNREACHABLE = "Error: the host is unreachable"
# How long the reader thread leaves the channel to a thread that just got its reply.
_STEP_ASIDE = 0.001
# While a waiting thread holds the turn, the reader thread looks again after 1, 2, 4...
# milliseconds, at most this long: the channel is never left unread for longer.
_MAX_ASIDE = 0.02
# What ends reading: the host closed the channel, or sent garbage (it is then unusable).
CHANNEL_ENDED = (ChannelClosed, ProtocolError, OSError, ValueError)


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
    """Sends sub-call requests over ``channel`` and waits for their replies.

    ``read`` takes the next message off the channel (with its stream, if any) and
    ``handle`` acts on a message that is not a reply; both run with the read turn held,
    by the reader thread or by a waiting thread (``Server`` provides them).
    """

    def __init__(
        self,
        channel: Channel,
        current_cell: Callable[[], int],
        read: Callable[[], dict[str, Any]] | None = None,
        handle: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self._channel = channel
        self._current_cell = current_cell
        self._read = read or channel.recv
        self._handle = handle or (lambda message: None)
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._closed = False
        self._turn = threading.Lock()  # held by whoever reads the channel
        self._ended: BaseException | None = None  # how reading ended, once it has
        self._wake = threading.Lock()  # the reader thread waits on it (a semaphore)
        self._wake.acquire()
        self._reader: int | None = None  # the waiting thread that holds the turn, if one
        self._aside = False  # the reader thread leaves the turn to waiting threads
        self._reader_thread: int | None = None  # the reader thread's ident
        self._idle_reads = False  # the idle main thread reads (``read_while_idle``)

    # -- the calling side ---------------------------------------------------------------

    def request(self, op: str, **fields: Any) -> dict[str, Any] | None:
        """Send request ``op`` and block for the host's reply (None if the host is
        gone). Called from any thread of a cell."""
        if self._reader == threading.get_ident():
            # A signal handler of cell code, run while this thread reads for its own
            # sub-call: it may not read in the middle of that read, nor wait for it.
            return {
                "error": "a sub-call cannot be made while this thread reads the reply to another"
            }
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
            self._await(slot)
        finally:
            with self._lock:
                self._pending.pop(request_id, None)
        return slot.reply

    def _await(self, slot: _Pending) -> None:
        """Until ``slot`` has its reply (or the host is gone): read the channel while
        nobody else does, else wait to be handed the reply."""
        while slot.reply is None and not self._closed:
            if not self._turn.acquire(False):
                slot.wait()  # the turn's holder hands the reply over
                continue
            try:
                self._read_with_turn(lambda: slot.reply is not None)
            finally:
                self._after_turn()
            if self._ended is not None:
                return

    def _read_with_turn(self, done: Callable[[], bool]) -> None:
        """With the turn held: read and act on messages until ``done()`` (or the
        channel ends, or the host is gone); then give the turn back."""
        try:
            self._reader = threading.get_ident()
            while not done() and not self._closed and self._ended is None:
                self._take(self._read())
        except CHANNEL_ENDED as exc:
            self._ended = exc  # the reader thread ends the worker (``reader_loop``)
        finally:
            self._reader = None
            self._turn.release()

    def _after_turn(self) -> None:
        """A waiting thread gave the turn back: if other threads wait for replies (or
        the channel ended), the reader thread takes over now, not at its next look."""
        with self._lock:
            wake = len(self._pending) > 1 or self._ended is not None
        if wake:
            with contextlib.suppress(RuntimeError):  # already woken
                self._wake.release()

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

    # -- the reading side ---------------------------------------------------------------

    def _take(self, message: dict[str, Any]) -> bool:
        """Act on one message read with the turn held; True if it was a reply that
        another thread was waiting for."""
        if "re" in message:
            return self.deliver(message)
        self._handle(message)
        return False

    def reader_loop(self) -> None:
        """The reader thread: reads whenever no waiting thread does; returns once the
        channel has ended (the host closed it, or it broke)."""
        self._reader_thread = threading.get_ident()
        aside = 0.0  # how long to leave the turn to waiting threads before looking again
        while self._ended is None:
            if self._idle_reads:  # woken when the main thread stops reading
                self._wake.acquire()
                continue
            if aside:
                self._aside = True
                self._wake.acquire(timeout=aside)
                self._aside = False
            if not self._turn.acquire(False):  # a waiting thread reads
                aside = min(max(2 * aside, _STEP_ASIDE), _MAX_ASIDE)
                continue
            aside = 0.0
            try:
                if self._ended is None and self._take(self._read()):
                    aside = _STEP_ASIDE  # a reply handed over: its thread may read next
            except GiveWay:
                pass  # the idle main thread reads now
            except CHANNEL_ENDED as exc:
                self._ended = exc
            finally:
                self._turn.release()

    def should_give_way(self) -> bool:
        """Whether the calling thread's read is to stop waiting: it is the reader
        thread, waiting for a message (never inside a stream: a stream must be read
        whole), and the idle main thread wants to read (``read_while_idle``)."""
        return (
            self._idle_reads
            and self._channel.receiving
            and threading.get_ident() == self._reader_thread
        )

    def read_while_idle(self, ready: Callable[[], bool], nudge: Callable[[], None]) -> None:
        """The idle main thread reads for itself until ``ready()`` (a request has been
        queued for it), so the host's next request reaches it with no thread
        hand-off. The reader thread gives way (``nudge`` wakes it from its wait, and
        its read raises ``GiveWay``); it is woken to read again once this returns,
        while the main thread goes on with the request."""
        self._idle_reads = True
        try:
            nudge()
            self._turn.acquire()
            self._read_with_turn(ready)
        finally:
            self._idle_reads = False
            with contextlib.suppress(RuntimeError):  # already woken
                self._wake.release()

    def expecting(self) -> bool:
        """Whether a reply is due (a thread waits for one)."""
        return bool(self._pending)

    def resume(self) -> None:
        """Have the reader thread read again now, if it has stepped aside (called when
        the main thread goes idle: the host's next request must not wait for it)."""
        if self._aside:
            with contextlib.suppress(RuntimeError):  # already woken
                self._wake.release()

    def deliver(self, message: dict[str, Any]) -> bool:
        """Hand a host reply to the thread waiting for it; True if one was."""
        with self._lock:
            slot = self._pending.get(message.get("re"))  # type: ignore[arg-type]
        if slot is None:
            return False
        slot.reply = message
        slot.set()
        return True

    def close(self) -> None:
        """The host is gone: release every waiting thread."""
        with self._lock:
            self._closed = True
            pending = list(self._pending.values())
        for slot in pending:
            slot.set()
