"""E2BREPL: the worker in an E2B sandbox, as a background command with stdin.

``E2BAdapter`` creates the sandbox (``e2b_code_interpreter.Sandbox.create``) and runs
the worker launcher with ``sandbox.commands.run(cmd, background=True, stdin=True)``.
E2B hands stdout to the client as decoded text, so the channel is base64 lines
(``text = True``). Background commands live as long as the sandbox (``timeout``), so
the REPL is persistent; ``kill`` uses ``commands.kill`` (SIGKILL) after the launcher's
in-band kill.

Needs ``pip install 'rlmx[e2b]'``; importing this module does not.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterator
from typing import Any

from rlm.base.errors import MissingExtraError
from rlm.environments.base_env import IsolatedEnv
from rlm.environments.exec_transport import ExecAdapter, ExecTransport, Send, TailBuffer
from rlm.environments.worker_env import WorkerEnv


def _sandbox_class() -> Any:
    try:
        from e2b_code_interpreter import Sandbox  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise MissingExtraError("The e2b environment", "e2b", "e2b-code-interpreter") from None
    return Sandbox


class E2BAdapter(ExecAdapter):
    text = True

    def __init__(
        self, timeout: int, sandbox: Any = None, sandbox_kwargs: dict[str, Any] | None = None
    ) -> None:
        self.timeout = timeout
        self.sandbox = sandbox
        self._owned = sandbox is None
        self.sandbox_kwargs = dict(sandbox_kwargs or {})
        self._handle: Any = None
        self._exit: int | None = None
        self._tail = TailBuffer()

    def _sandbox(self) -> Any:
        if self.sandbox is None:
            self.sandbox = _sandbox_class().create(timeout=self.timeout, **self.sandbox_kwargs)
        return self.sandbox

    def start(self, argv: list[str]) -> tuple[Send, Iterator[str]]:
        sandbox = self._sandbox()
        # timeout=0: the command's connection is not limited (the sandbox's is).
        handle = sandbox.commands.run(shlex.join(argv), background=True, stdin=True, timeout=0)
        self._handle, self._exit, self._tail = handle, None, TailBuffer()
        pid = handle.pid

        def send(data: bytes) -> None:
            sandbox.commands.send_stdin(pid, data.decode("ascii"))

        return send, self._stdout(handle)

    def _stdout(self, handle: Any) -> Iterator[str]:
        for out, err, _pty in handle:
            if out is not None:
                yield out
            elif err is not None:
                self._tail.add(err)
        try:
            self._exit = int(handle.wait().exit_code)
        except Exception as exc:  # CommandExitException carries the status
            code = getattr(exc, "exit_code", None)
            self._exit = int(code) if isinstance(code, int) else None

    def exit_code(self) -> int | None:
        return self._exit

    def kill(self) -> None:
        handle = self._handle
        if handle is not None:
            with contextlib.suppress(Exception):
                handle.kill()

    def stderr_tail(self) -> str:
        return self._tail.text()

    def close(self) -> None:
        sandbox, self.sandbox = self.sandbox, None
        if sandbox is not None and self._owned:
            with contextlib.suppress(Exception):
                sandbox.kill()


class E2BREPL(WorkerEnv, IsolatedEnv):
    """A persistent REPL whose code runs in an E2B sandbox.

    Keyword arguments, besides WorkerEnv's: ``timeout`` (sandbox lifetime in seconds,
    300), ``sandbox`` (an existing E2B ``Sandbox``; not killed at cleanup),
    ``sandbox_kwargs`` (more ``Sandbox.create`` arguments, e.g. ``template``,
    ``allow_internet_access=False``) and ``python`` ("python3").
    """

    def __init__(
        self,
        timeout: int = 300,
        sandbox: Any = None,
        sandbox_kwargs: dict[str, Any] | None = None,
        python: str = "python3",
        **kwargs: Any,
    ) -> None:
        if sandbox is None:
            _sandbox_class()  # fail before anything starts
        self.timeout = timeout
        adapter = E2BAdapter(timeout, sandbox, sandbox_kwargs)
        super().__init__(ExecTransport(adapter, python), **kwargs)

    @property
    def sandbox(self) -> Any:
        return self.transport.adapter.sandbox  # type: ignore[attr-defined]
