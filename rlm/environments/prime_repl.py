"""PrimeREPL: the worker in a Prime Intellect sandbox, as a live process.

``PrimeAdapter`` uses the SDK's async client (``prime_sandboxes.AsyncSandboxClient``)
on a private event loop: ``create`` + ``wait_for_creation`` once, then
``open_process(sandbox_id, command)`` for each worker, whose ``write_stdin`` and
``stdout`` carry bytes (no encoding needed). The process lives as long as the sandbox
(``timeout_minutes``), so the REPL is persistent; ``kill`` uses the process's
``kill()`` (SIGKILL) after the launcher's in-band kill.

Needs ``pip install 'rlmx[prime]'`` (a ``prime-sandboxes`` with ``open_process``);
importing this module does not.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterator
from typing import Any

from rlm.base.errors import MissingExtraError
from rlm.environments.base_env import IsolatedEnv
from rlm.environments.exec_transport import (
    ExecAdapter,
    ExecTransport,
    LoopThread,
    Send,
    TailBuffer,
)
from rlm.environments.worker_env import WorkerEnv

_CALL_TIMEOUT = 120.0  # one SDK call (creating the sandbox has its own wait)


def _prime() -> Any:
    try:
        import prime_sandboxes  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise MissingExtraError("The prime environment", "prime", "prime-sandboxes") from None
    return prime_sandboxes


class PrimeAdapter(ExecAdapter):
    def __init__(
        self,
        request: dict[str, Any],
        api_key: str | None = None,
        sandbox_id: str | None = None,
    ) -> None:
        self.request = request
        self.api_key = api_key
        self.sandbox_id = sandbox_id
        self._owned = sandbox_id is None
        self._loop: LoopThread | None = None
        self._client: Any = None
        self._process: Any = None
        self._tail = TailBuffer()

    def _run(self, coro: Any, timeout: float | None = _CALL_TIMEOUT) -> Any:
        assert self._loop is not None
        return self._loop.run(coro, timeout)

    def _ensure_sandbox(self) -> str:
        if self._client is None:
            sdk = _prime()
            self._loop = LoopThread()
            self._client = sdk.AsyncSandboxClient(api_key=self.api_key)
        if self.sandbox_id is None:
            request = _prime().CreateSandboxRequest(**self.request)
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
        return process.returncode

    def kill(self) -> None:
        process = self._process
        if process is not None:
            with contextlib.suppress(Exception):
                self._run(process.kill(), 10.0)

    def stderr_tail(self) -> str:
        return self._tail.text()

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


class PrimeREPL(WorkerEnv, IsolatedEnv):
    """A persistent REPL whose code runs in a Prime Intellect sandbox.

    Keyword arguments, besides WorkerEnv's: ``name`` ("rlm-sandbox"), ``docker_image``
    ("python:3.12-slim"), ``timeout_minutes`` (60), ``sandbox_kwargs`` (more
    ``CreateSandboxRequest`` fields), ``api_key`` (default: the SDK's configuration),
    ``sandbox_id`` (an existing sandbox; not deleted at cleanup) and ``python``
    ("python3").
    """

    def __init__(
        self,
        name: str = "rlm-sandbox",
        docker_image: str = "python:3.12-slim",
        timeout_minutes: int = 60,
        sandbox_kwargs: dict[str, Any] | None = None,
        api_key: str | None = None,
        sandbox_id: str | None = None,
        python: str = "python3",
        **kwargs: Any,
    ) -> None:
        _prime()  # fail before anything starts
        request = {
            "name": name,
            "docker_image": docker_image,
            "timeout_minutes": timeout_minutes,
            **(sandbox_kwargs or {}),
        }
        adapter = PrimeAdapter(request, api_key, sandbox_id)
        super().__init__(ExecTransport(adapter, python), **kwargs)

    @property
    def sandbox_id(self) -> str | None:
        return self.transport.adapter.sandbox_id  # type: ignore[attr-defined]
