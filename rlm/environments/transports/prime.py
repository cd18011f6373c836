"""The Prime transport: the worker in a Prime Intellect sandbox, as a live process.

``PrimeAdapter`` uses the SDK's async client (``prime_sandboxes.AsyncSandboxClient``)
on a private event loop: ``create`` + ``wait_for_creation`` once, then
``open_process(sandbox_id, command)`` for each worker, whose ``write_stdin`` and
``stdout`` carry bytes (no encoding needed). The process lives as long as the sandbox
(``timeout_minutes``), so the REPL is persistent; ``kill`` uses the process's
``kill()`` (SIGKILL) after the launcher's in-band kill.

``PrimeREPL`` (``rlm.environments.prime_repl``) runs ``WorkerEnv`` on it. The SDK is
imported when a sandbox is first needed, not with this module.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterator
from typing import Any

from rlm.environments.transports.exec import (
    ExecAdapter,
    LoopThread,
    Send,
    TailBuffer,
    import_sdk,
)

_CALL_TIMEOUT = 120.0  # one SDK call (creating the sandbox has its own wait)


def prime_sdk() -> Any:
    """The ``prime_sandboxes`` SDK (``MissingExtraError`` if it is not installed)."""
    return import_sdk("prime_sandboxes", "prime", "prime", "prime-sandboxes")


class PrimeAdapter(ExecAdapter):
    def __init__(
        self,
        request: dict[str, Any],
        api_key: str | None = None,
        sandbox_id: str | None = None,
    ) -> None:
        super().__init__()
        self.request = request
        self.api_key = api_key
        self.sandbox_id = sandbox_id
        self._owned = sandbox_id is None
        self._loop: LoopThread | None = None
        self._client: Any = None
        self._process: Any = None

    def _run(self, coro: Any, timeout: float | None = _CALL_TIMEOUT) -> Any:
        assert self._loop is not None
        return self._loop.run(coro, timeout)

    def _ensure_sandbox(self) -> str:
        if self._client is None:
            sdk = prime_sdk()
            self._loop = LoopThread()
            self._client = sdk.AsyncSandboxClient(api_key=self.api_key)
        if self.sandbox_id is None:
            request = prime_sdk().CreateSandboxRequest(**self.request)
            sandbox = self._run(self._client.create(request))
            self.sandbox_id = str(sandbox.id)
            self._run(self._client.wait_for_creation(self.sandbox_id), None)
        return self.sandbox_id

    def start(self, argv: list[str]) -> tuple[Send, Iterator[bytes]]:
        sandbox_id = self._ensure_sandbox()
        process = self._run(self._client.open_process(sandbox_id, shlex.join(argv)))
        self._process, self._tail = process, TailBuffer()
        assert self._loop is not None
        loop = self._loop
        loop.submit(self._drain_stderr(process))

        def send(data: bytes) -> None:
            loop.run(process.write_stdin(data), _CALL_TIMEOUT)

        return send, loop.iterate(process.stdout)

    async def _drain_stderr(self, process: Any) -> None:
        with contextlib.suppress(Exception):
            async for chunk in process.stderr:
                self._tail.add(chunk)

    def alive(self) -> bool:
        return self._process is not None and self._process.returncode is None

    def exit_code(self) -> int | None:
        process = self._process
        if process is None:
            return None
        with contextlib.suppress(Exception):
            return int(self._run(process.wait(), 5.0))
        code = process.returncode
        return code if isinstance(code, int) else None

    def kill(self) -> None:
        process = self._process
        if process is not None:
            with contextlib.suppress(Exception):
                self._run(process.kill(), 10.0)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        sandbox_id, self.sandbox_id = self.sandbox_id, None
        with contextlib.suppress(Exception):
            if self._process is not None:
                self._run(self._process.aclose(), 10.0)
        with contextlib.suppress(Exception):
            if sandbox_id is not None and self._owned:
                self._run(client.delete(sandbox_id))
        with contextlib.suppress(Exception):
            self._run(client.aclose(), 10.0)
        if self._loop is not None:
            self._loop.close()
