"""The E2B transport: the worker in an E2B sandbox, as a background command with stdin.

``E2BAdapter`` creates the sandbox (``e2b_code_interpreter.Sandbox.create``) and runs
the worker launcher with ``sandbox.commands.run(cmd, background=True, stdin=True)``.
E2B hands stdout to the client as decoded text, so the channel is base64 lines
(``text = True``). Background commands live as long as the sandbox (``timeout``), so
the REPL is persistent; ``kill`` uses ``commands.kill`` (SIGKILL) after the launcher's
in-band kill.

``E2BREPL`` (``rlm.environments.e2b_repl``) runs ``WorkerEnv`` on it. The SDK is
imported when a sandbox is first needed, not with this module.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterator
from typing import Any

from rlm.environments.transports.exec import SandboxAdapter, Send, TailBuffer, import_sdk


def e2b_sandbox_class() -> Any:
    """``e2b_code_interpreter.Sandbox`` (``MissingExtraError`` if it is not installed)."""
    return import_sdk("e2b_code_interpreter", "e2b", "e2b", "e2b-code-interpreter").Sandbox


class E2BAdapter(SandboxAdapter):
    text = True

    def __init__(
        self, timeout: int, sandbox: Any = None, sandbox_kwargs: dict[str, Any] | None = None
    ) -> None:
        super().__init__(sandbox)
        self.timeout = timeout
        self.sandbox_kwargs = dict(sandbox_kwargs or {})
        self._handle: Any = None
        self._exit: int | None = None

    def _create(self) -> Any:
        return e2b_sandbox_class().create(timeout=self.timeout, **self.sandbox_kwargs)

    def _delete(self, sandbox: Any) -> None:
        sandbox.kill()

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
