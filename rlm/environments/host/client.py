"""The host side of the worker protocol: one client over a transport's pipes.

A ``Transport`` (``rlm.environments.transports.base``) places the worker and hands back
two byte pipes. ``WorkerClient`` speaks the protocol over those pipes: its reader
threads match replies to requests (``Future``\\s, so waiting can time out) and pass
every other message, such as the worker's sub-call requests and snapshot entries, to
an ``on_message`` callback.

Nothing a worker sends is ever unpickled, executed or evaluated on the host.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from rlm.base.chunk_io import ChunkReader
from rlm.base.errors import EnvironmentError_, WorkerCrashedError, WorkerTimeoutError
from rlm.environments.transports.base import Transport
from rlm.environments.transports.zipapp import bootstrap_payload
from rlm.environments.worker.payloads import send_value
from rlm.environments.worker.protocol import CHUNK_BYTES, Channel, FrameTooLarge
from rlm.environments.worker.spin import SpinReader

# Largest stream (one snapshot entry) the host accepts from a worker.
DEFAULT_MAX_STREAM_BYTES = 4 << 30
# Largest frame (one JSON message, or one stream chunk) the host reads from a worker:
# refused from its header, before anything is allocated or decoded.
DEFAULT_MAX_FRAME_MB = 8.0

NO_VALUE: Any = object()  # no payload follows the request


class WorkerRequestError(EnvironmentError_):
    """The worker answered a request with an error (the worker itself is fine)."""


def describe_status(status: int | None) -> str:
    """``killed by SIGSEGV``, ``exit status 1``... (128 + N is how wrappers such as
    bubblewrap or a shell report death by signal N)."""
    if status is None:
        return "it stopped answering"
    signum = -status if status < 0 else status - 128 if 128 < status < 160 else 0
    try:
        name = signal.Signals(signum).name if signum else ""
    except ValueError:
        name = ""
    if status < 0:
        return f"killed by {name or f'signal {signum}'}"
    return f"exit status {status}" + (f", killed by {name}" if name else "")


# Handles a message from the worker, in channel order; returns work (answering a
# sub-call) to run off the reading path, or None. The work returns the message to send
# back, if any: it is sent once the thread no longer counts as busy, so the worker's
# next request never finds every thread busy (and a thread started for nothing).
Work = Callable[[], dict[str, Any] | None]
MessageHandler = Callable[[dict[str, Any]], Work | None]
_SPARE_READERS = 2
# A follower looks this often whether the channel is left unread (work running long).
_WATCH_SECONDS = 0.001
# ... for this long after work last started; then it sleeps until work starts again.
_KEEP_WATCHING = 0.05


class WorkerClient:
    """One running worker: requests, replies and the worker's own messages.

    Reading uses leader/followers threads: one thread reads at a time; when a message
    brings work (a sub-call to answer), that thread stops reading and does the work
    itself, so the answer costs no thread hand-off. Most sub-calls are answered before
    any other thread wakes: a follower that watches (every ``_WATCH_SECONDS``, for
    ``_KEEP_WATCHING`` seconds after work last started) takes over reading when it finds
    nobody reading, i.e. when work runs long; other followers sleep, and one is woken
    when work starts and nobody watches. So a slow sub-call leaves the channel unread
    for a millisecond at most, and sub-calls from several worker threads still run
    concurrently. The pool is bounded: at most ``max_threads`` threads; when all are
    busy, reading waits for one to finish (the worker's writes block), so no frame ever
    costs a thread of its own. Owners should refuse excess work before that
    (``WorkerSupervisor`` does, per worker).
    """

    def __init__(
        self,
        transport: Transport,
        on_message: MessageHandler,
        max_stream_bytes: int = DEFAULT_MAX_STREAM_BYTES,
        max_frame_bytes: int = int(DEFAULT_MAX_FRAME_MB * 2**20),
        max_threads: int = 64,
    ) -> None:
        self.transport = transport
        self._on_message = on_message
        self._max_stream_bytes = max_stream_bytes
        # Stream chunks are at most CHUNK_BYTES: the cap never refuses a legal one.
        self.max_frame_bytes = max(int(max_frame_bytes), CHUNK_BYTES + 4096)
        self._max_threads = max(2, max_threads)
        self._pending: dict[int, Future[dict[str, Any]]] = {}
        self._ready: Future[dict[str, Any]] = Future()
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._readers = 0  # reader threads alive
        self._working = 0  # of which doing work
        self._work_started = 0.0  # time.monotonic() when work last started
        self._watching = False  # a follower watches for work running long
        self._sleepers = 0  # followers sleeping until woken
        self._wake = threading.Lock()  # followers wait on it (a binary semaphore)
        self._wake.acquire()
        self._ids = itertools.count(1)
        self._channel: Channel | None = None
        self._spin: SpinReader | None = None  # the channel's reader, if it polls
        self._dead: BaseException | None = None
        self.info: dict[str, Any] = {}

    # -- lifecycle --------------------------------------------------------------------

    def start(self, worker_args: Sequence[str], timeout: float) -> dict[str, Any]:
        """Launch the worker and wait for its ``ready`` message (returned)."""
        pipes = self.transport.launch(worker_args)
        reader: Any = pipes.from_worker
        if not hasattr(reader, "readinto"):
            reader = ChunkReader(iter(reader))
        if isinstance(reader, io.FileIO):  # a local pipe: poll while a reply is due
            self._spin = SpinReader(reader)
            self._spin.when = self._reply_due
            reader = io.BufferedReader(self._spin, 1 << 16)
        elif not isinstance(reader, io.BufferedReader):
            reader = io.BufferedReader(reader, 1 << 16)
        self._channel = Channel(
            reader, pipes.to_worker, self.max_frame_bytes, limit_name="max_frame_mb limit"
        )
        if self.transport.bootstrap:
            with contextlib.suppress(OSError, ValueError):  # a dead worker shows below
                self._channel.send_raw(bootstrap_payload())
        with self._lock:
            self._spawn_reader()
        try:
            self.info = self._ready.result(timeout)
        except FutureTimeout:
            self.kill()
            raise WorkerTimeoutError(f"the worker did not start within {timeout:g} s") from None
        return self.info

    def _reply_due(self) -> bool:
        """Whether a read should poll before it sleeps: it waits for a message (not
        inside a stream, where sleeping reads larger pieces) and a reply is due."""
        channel = self._channel
        return bool(self._pending) and channel is not None and channel.receiving

    @property
    def alive(self) -> bool:
        return self._dead is None and self.transport.poll() is None

    def kill(self) -> None:
        self.transport.kill()
        self._fail(WorkerCrashedError("the worker was stopped"))

    def close(self, timeout: float = 2.0) -> None:
        """Ask the worker to exit, then make sure it has. A transport whose ``kill``
        takes everything down at once (``Transport.close_by_kill``) is just killed: the
        worker keeps nothing worth a goodbye, and waiting for one costs milliseconds."""
        if self._dead is None and not self.transport.close_by_kill:
            with contextlib.suppress(Exception):
                self.request("shutdown", timeout=timeout)
            self.transport.wait(timeout)
        self.transport.close()
        self._fail(WorkerCrashedError("the worker was closed"))

    def adopt(self, on_message: MessageHandler, max_stream_bytes: int, max_threads: int) -> None:
        """Hand a started worker (a warm spare, ``host.spares``) to its owner: its
        messages now go to ``on_message``, under the owner's limits."""
        with self._lock:
            self._on_message = on_message
            self._max_stream_bytes = max_stream_bytes
            self._max_threads = max(2, max_threads)

    def death(self) -> str:
        """Why the worker is gone, for messages: its exit and its last stderr line."""
        status = self.transport.wait(1.0)
        text = describe_status(status)
        if status is None and self._dead is not None:  # alive, but its channel broke
            text = f"its channel broke: {self._dead}"
        lines = [ln for ln in self.transport.stderr_tail().splitlines() if ln.strip()]
        fatal = [ln for ln in lines if ln.startswith(("Fatal Python error", "MemoryError"))]
        return f"{text}: {fatal[-1].strip()}" if fatal else text

    # -- requests ---------------------------------------------------------------------

    def submit(
        self,
        op: str,
        value: Any = NO_VALUE,
        chunks: Iterable[bytes] | None = None,
        **fields: Any,
    ) -> Future[dict[str, Any]]:
        """Send request ``op`` and return its future. ``value`` is streamed after it as
        a payload (see ``payloads``), or ``chunks`` as raw bytes. The future fails with
        WorkerCrashedError if the worker dies first."""
        future: Future[dict[str, Any]] = Future()
        with self._lock:
            if self._dead is not None or self._channel is None:
                raise WorkerCrashedError("the worker is not running")
            request_id = next(self._ids)
            self._pending[request_id] = future
        message = dict(fields, op=op, id=request_id)
        try:
            if chunks is not None:
                self._channel.send_chunks(message, chunks)
            elif value is NO_VALUE:
                self._channel.send(message)
            else:
                send_value(self._channel, message, value)
            if self._spin is not None:
                self._spin.nudge()  # its reply is due: a sleeping reader polls for it
        except TypeError:
            with self._lock:
                self._pending.pop(request_id, None)
            raise
        except (OSError, ValueError, EOFError) as exc:
            self._fail(WorkerCrashedError(f"the worker's channel broke: {exc}"))
        return future

    def request(
        self,
        op: str,
        value: Any = NO_VALUE,
        timeout: float | None = None,
        chunks: Iterable[bytes] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """``submit`` and wait. Raises WorkerTimeoutError, WorkerCrashedError, or
        WorkerRequestError when the worker reports an error."""
        future = self.submit(op, value, chunks, **fields)
        try:
            reply = future.result(timeout)
        except FutureTimeout:
            raise WorkerTimeoutError(f"the worker did not answer {op!r} in {timeout:g} s") from None
        if reply.get("error") is not None:
            raise WorkerRequestError(str(reply["error"]))
        return reply

    def send(self, message: dict[str, Any]) -> None:
        """Send a message that expects no reply (a reply to the worker, an interrupt).
        A dead channel is ignored: the reader reports the death."""
        channel = self._channel
        if channel is None or self._dead is not None:
            return
        with contextlib.suppress(OSError, ValueError, EOFError):
            channel.send(message)

    def interrupt(self, cell: int) -> None:
        """Interrupt ``cell`` if it is still running. In-band: the worker raises
        SIGINT in its own main thread, so no transport needs to deliver signals (and
        a cell blocked in a system call still wakes up)."""
        self.send({"op": "interrupt", "cell": cell})

    # -- reader threads ---------------------------------------------------------------

    def _spawn_reader(self) -> None:
        """Start one more reader thread (caller holds ``_lock``)."""
        self._readers += 1
        threading.Thread(target=self._read_loop, name="rlm-worker-client", daemon=True).start()

    def _read_loop(self) -> None:
        retired = False
        try:
            while self._dead is None:
                if not self._read_lock.acquire(blocking=False):
                    self._follow()  # someone reads: watch or sleep, then look again
                    continue
                try:
                    if self._dead is not None:
                        break
                    work = self._read_one()
                except FrameTooLarge as exc:  # its payload is never read: replace it
                    self._fail(WorkerCrashedError(f"the worker sent an oversize frame ({exc})"))
                    break
                except BaseException as exc:  # EOF, garbage on the channel, a failing callback
                    self._fail(WorkerCrashedError(str(exc) or type(exc).__name__))
                    break
                finally:
                    self._read_lock.release()
                if work is not None and self._work(work):
                    retired = True
                    return
        finally:
            if not retired:
                with self._lock:
                    self._readers -= 1
            if self._dead is not None:
                self._wake_one()  # the next follower sees the death too, and ends

    def _work(self, work: Work) -> bool:
        """Do ``work`` (the read lock is free meanwhile) and send its answer; True if
        this thread retires."""
        with self._lock:
            self._working += 1
            self._work_started = time.monotonic()
            spawn = self._readers == self._working and self._readers < self._max_threads
            if spawn:
                self._spawn_reader()
            wake = not spawn and not self._watching and self._sleepers > 0
        if wake:
            self._wake_one()
        answer = None
        try:
            answer = work()
        finally:
            with self._lock:
                self._working -= 1
                retire = self._readers - self._working > _SPARE_READERS
                if retire:
                    self._readers -= 1
        if answer is not None:
            self.send(answer)
        return retire

    def _follow(self) -> None:
        """Wait while another thread reads: watch for a while after work started (one
        follower at a time), else sleep until woken."""
        with self._lock:
            if self._dead is not None:
                return
            recent = time.monotonic() - self._work_started < _KEEP_WATCHING
            watch = recent and not self._watching
            if watch:
                self._watching = True
            else:
                self._sleepers += 1
        try:
            if self._read_lock.locked():  # else: free again already, look at once
                self._wake.acquire(timeout=_WATCH_SECONDS if watch else -1)
        finally:
            with self._lock:
                if watch:
                    self._watching = False
                else:
                    self._sleepers -= 1

    def _wake_one(self) -> None:
        with contextlib.suppress(RuntimeError):  # already released: one wake pending
            self._wake.release()

    def _read_one(self) -> Work | None:
        """Read and dispatch one message; returns its slow work, if any."""
        channel = self._channel
        assert channel is not None
        message = channel.recv()
        if message.get("stream"):
            message["body"] = channel.read_stream(self._max_stream_bytes)
        if "re" in message:
            with self._lock:
                future = self._pending.pop(message["re"], None)
            if future is not None:
                future.set_result(message)
            return None
        if message.get("op") == "ready" and not self._ready.done():
            self._ready.set_result(message)
            return None
        return self._on_message(message)

    def _fail(self, error: BaseException) -> None:
        with self._lock:
            if self._dead is None:
                self._dead = error
            pending, self._pending = list(self._pending.values()), {}
        for future in pending:
            if not future.done():
                future.set_exception(error)
        if not self._ready.done():
            self._ready.set_exception(error)
        self._wake_one()  # sleeping followers end (each wakes the next)
