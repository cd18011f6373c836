"""A transport for provider sandboxes: the worker started by an SDK's "exec" call.

Cloud providers (Modal, E2B, Daytona, Prime) can all start a process in a sandbox
and stream its stdin/stdout; they differ only in the calls. An ``ExecAdapter`` wraps
those calls (start a process, send it bytes, iterate its output, kill it, delete the
sandbox); ``ExecTransport`` does the rest for all of them:

* it runs ``exec_launcher`` (sent inline with ``python3 -I -c``), which starts the
  worker bootstrap (``bootstrap=True``: the zipapp follows on stdin, nothing is
  uploaded) and relays its channel, base64-encoded for SDKs that carry only text;
* the worker is alive while its output stream is open; its exit status comes from
  the provider once the stream has ended;
* ``kill`` is in-band first (the launcher kills the worker's whole session), then the
  provider's own kill where it has one.

The sandbox itself lives as long as the environment: a restarted worker runs in the
same sandbox, so files survive a restart.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import importlib
import struct
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from rlm.base.errors import MissingExtraError
from rlm.environments.transports.base import Transport, WorkerPipes
from rlm.environments.transports.zipapp import bootstrap_argv

T = TypeVar("T")
Send = Callable[[bytes], None]  # delivers bytes to the process's stdin, in order
_LAUNCHER = (Path(__file__).with_name("exec_launcher.py")).read_text("utf-8")
_FRAME = 1 << 20  # largest data frame sent to the launcher
_TAIL = 16 * 1024


def launcher_argv(python: str, text: bool, worker_args: Sequence[str]) -> list[str]:
    """The command that runs the launcher, which runs the worker bootstrap."""
    mode = "text" if text else "binary"
    return [python, "-I", "-c", _LAUNCHER, mode, *bootstrap_argv(python), *worker_args]


class TailBuffer:
    """The last bytes of a stream (the worker's stderr), for crash reports."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._lock = threading.Lock()

    def add(self, chunk: bytes | str) -> None:
        data = chunk.encode("utf-8", "replace") if isinstance(chunk, str) else chunk
        with self._lock:
            self._data += data
            del self._data[:-_TAIL]

    def text(self) -> str:
        with self._lock:
            return self._data.decode("utf-8", "replace")

    def drain(self, chunks: Any) -> None:
        """Read an iterable of chunks to its end (on a thread)."""
        threading.Thread(target=self._drain, args=(chunks,), daemon=True).start()

    def _drain(self, chunks: Any) -> None:
        with contextlib.suppress(Exception):
            for chunk in chunks:
                self.add(chunk)


class ExecAdapter(ABC):
    """One provider's calls. ``start`` may create the sandbox on first use; what the
    process writes to stderr is kept in ``_tail`` for crash reports."""

    #: The SDK's stdin or stdout carries ``str`` only: use base64 lines both ways.
    text: bool = False

    def __init__(self) -> None:
        self._tail = TailBuffer()

    @abstractmethod
    def start(self, argv: list[str]) -> tuple[Send, Iterator[bytes] | Iterator[str]]:
        """Start ``argv`` in the sandbox; its stdin writer and stdout chunks."""

    def alive(self) -> bool:
        """False once the provider knows the process has ended (checked cheaply)."""
        return True

    def exit_code(self) -> int | None:
        """The ended process's exit status, if the provider reports one."""
        return None

    @abstractmethod
    def kill(self) -> None:
        """Stop the current process with the provider's own means (best effort)."""

    def stderr_tail(self) -> str:
        return self._tail.text()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Delete the sandbox if the adapter created it. Idempotent."""


class SandboxAdapter(ExecAdapter):
    """An adapter for an SDK with sandbox objects: the sandbox is created on first use
    (``_create``) unless one is given, and only one it created is deleted at ``close``
    (``_delete``)."""

    def __init__(self, sandbox: Any = None) -> None:
        super().__init__()
        self.sandbox = sandbox
        self._owned = sandbox is None

    def _sandbox(self) -> Any:
        if self.sandbox is None:
            self.sandbox = self._create()
        return self.sandbox

    @abstractmethod
    def _create(self) -> Any:
        """A new sandbox."""

    @abstractmethod
    def _delete(self, sandbox: Any) -> None:
        """Delete (or terminate) a sandbox this adapter created."""

    def close(self) -> None:
        sandbox, self.sandbox = self.sandbox, None
        if sandbox is not None and self._owned:
            with contextlib.suppress(Exception):
                self._delete(sandbox)


def import_sdk(module: str, environment: str, extra: str, package: str) -> Any:
    """Provider SDK ``module``, imported when first needed: a missing one raises
    ``MissingExtraError`` naming ``pip install 'rlmx[extra]'`` and ``package``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"The {environment} environment", extra, package) from None


class LoopThread:
    """An asyncio loop on a daemon thread, for SDKs that only offer async calls."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="rlm-sdk-loop", daemon=True).start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return self.submit(coro).result(timeout)

    def iterate(self, stream: AsyncIterator[T]) -> Iterator[T]:
        """A blocking iterator over an async one."""

        async def step() -> T:  # __anext__ may be any awaitable, not a coroutine
            return await stream.__anext__()

        while True:
            try:
                yield self.run(step())
            except StopAsyncIteration:
                return

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


class _LauncherStdin:
    """The worker's stdin as the channel sees it: frames for the launcher."""

    def __init__(self, send: Send, text: bool) -> None:
        self._send = send
        self._text = text
        self._lock = threading.Lock()

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        with self._lock:
            for start in range(0, len(view), _FRAME):
                part = bytes(view[start : start + _FRAME])
                if self._text:
                    self._send(b"D" + base64.b64encode(part) + b"\n")
                else:
                    self._send(b"D" + struct.pack(">I", len(part)) + part)
        return len(view)

    def flush(self) -> None:
        pass

    def kill(self) -> None:
        with self._lock:
            self._send(b"K\n" if self._text else b"K")


def _decode_lines(chunks: Iterator[bytes] | Iterator[str]) -> Iterator[bytes]:
    """The launcher's base64 lines, arriving in arbitrary pieces, as bytes."""
    pending = b""
    for chunk in chunks:
        pending += chunk.encode("ascii", "replace") if isinstance(chunk, str) else chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                try:
                    yield base64.b64decode(line, validate=True)
                except binascii.Error:
                    raise ValueError("garbled output from the sandbox") from None


class ExecTransport(Transport):
    """Runs the worker through ``adapter`` (see the module docstring)."""

    bootstrap = True

    def __init__(self, adapter: ExecAdapter, python: str = "python3") -> None:
        self.adapter = adapter
        self.python = python
        self._stdin: _LauncherStdin | None = None
        self._ended: threading.Event | None = None
        self._status: int | None = None
        self._closed = False

    def launch(self, worker_args: Sequence[str]) -> WorkerPipes:
        if self._closed:
            raise RuntimeError("transport is closed")
        self.kill()
        text = self.adapter.text
        send, chunks = self.adapter.start(launcher_argv(self.python, text, worker_args))
        self._stdin = _LauncherStdin(send, text)
        self._ended = ended = threading.Event()
        self._status = None
        raw: Iterator[bytes] = _decode_lines(chunks) if text else chunks  # type: ignore[assignment]
        return WorkerPipes(to_worker=self._stdin, from_worker=_until_end(raw, ended))  # type: ignore[arg-type]

    def poll(self) -> int | None:
        ended = self._ended
        if ended is None:
            return -9
        if not ended.is_set() and self.adapter.alive():
            return None
        if self._status is None:
            code = None
            with contextlib.suppress(Exception):
                code = self.adapter.exit_code()
            self._status = code if code is not None else -9
        return self._status

    def kill(self) -> None:
        stdin, self._stdin = self._stdin, None
        if stdin is None:
            return
        with contextlib.suppress(Exception):
            stdin.kill()
        ended = self._ended
        if ended is not None and ended.wait(1.0):
            return  # the launcher killed the worker and exited
        with contextlib.suppress(Exception):
            self.adapter.kill()
        if ended is not None:
            ended.wait(2.0)  # let the exit status arrive

    def stderr_tail(self) -> str:
        return self.adapter.stderr_tail()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.kill()
        self.adapter.close()


def _until_end(chunks: Iterator[bytes], ended: threading.Event) -> Iterator[bytes]:
    try:
        yield from chunks
    finally:
        ended.set()
