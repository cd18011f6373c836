"""The Daytona transport: the worker in a Daytona sandbox, as an async session command.

``DaytonaAdapter`` creates the sandbox (``Daytona(DaytonaConfig(...)).create(...)``)
and runs the worker launcher in a session of its own with
``process.execute_session_command(..., SessionExecuteRequest(run_async=True))``. Input
goes through ``send_session_command_input`` and output arrives through
``get_session_command_logs_async``; both carry text, so the channel is base64 lines
(``text = True``). The command lives as long as the sandbox, so the REPL is
persistent; ``kill`` deletes the session (which ends its processes) after the
launcher's in-band kill.

``DaytonaREPL`` (``rlm.environments.daytona_repl``) runs ``WorkerEnv`` on it. The SDK is
imported when a sandbox is first needed, not with this module.
"""

from __future__ import annotations

import contextlib
import queue
import shlex
import uuid
from collections.abc import Iterator
from typing import Any

from rlm.environments.transports.exec import (
    LoopThread,
    SandboxAdapter,
    Send,
    TailBuffer,
    import_sdk,
)

_END = object()
DEFAULT_IMAGE = "python:3.12-slim"  # when image options are given without an image


def daytona_sdk() -> Any:
    """The ``daytona`` SDK (``MissingExtraError`` if it is not installed)."""
    return import_sdk("daytona", "daytona", "daytona", "daytona")


class DaytonaAdapter(SandboxAdapter):
    text = True

    def __init__(
        self,
        config: dict[str, Any],
        create_params: Any = None,
        sandbox: Any = None,
        image_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(sandbox)
        self.config = config
        self.create_params = create_params
        self.image_options = dict(image_options or {})
        self._sdk: Any = None
        self._loop: LoopThread | None = None
        self._session: str | None = None
        self._command: str | None = None

    def _sandbox(self) -> Any:
        self._sdk = self._sdk or daytona_sdk()  # start() needs it, given sandbox or not
        return super()._sandbox()

    def _create(self) -> Any:
        client = self._sdk.Daytona(self._sdk.DaytonaConfig(**self.config))
        return client.create(self.create_params or self._image_params())

    def _delete(self, sandbox: Any) -> None:
        sandbox.delete()

    def _image_params(self) -> Any:
        """rlms's image/resource keywords as ``CreateSandboxFromImageParams`` (None:
        Daytona's default sandbox)."""
        options = dict(self.image_options)
        if not options:
            return None
        resources = {k: options.pop(k) for k in ("cpu", "memory", "disk") if k in options}
        if resources:
            options["resources"] = self._sdk.Resources(**resources)
        options.setdefault("image", DEFAULT_IMAGE)
        return self._sdk.CreateSandboxFromImageParams(**options)

    def start(self, argv: list[str]) -> tuple[Send, Iterator[str]]:
        process = self._sandbox().process
        session = f"rlmx-{uuid.uuid4().hex[:12]}"
        process.create_session(session)
        request = self._sdk.SessionExecuteRequest(command=shlex.join(argv), run_async=True)
        command = process.execute_session_command(session, request).cmd_id
        self._session, self._command, self._tail = session, command, TailBuffer()

        def send(data: bytes) -> None:
            process.send_session_command_input(session, command, data.decode("ascii"))

        return send, self._stdout(process, session, command)

    def _stdout(self, process: Any, session: str, command: str) -> Iterator[str]:
        chunks: queue.Queue[Any] = queue.Queue()

        async def follow() -> None:
            try:
                await process.get_session_command_logs_async(
                    session, command, chunks.put, self._tail.add
                )
            finally:
                chunks.put(_END)

        if self._loop is None:
            self._loop = LoopThread()
        future = self._loop.submit(follow())
        while (chunk := chunks.get()) is not _END:
            yield chunk
        future.result()  # a failed log stream is the channel's error

    def exit_code(self) -> int | None:
        if self.sandbox is None or self._session is None or self._command is None:
            return None
        code = self.sandbox.process.get_session_command(self._session, self._command).exit_code
        return int(code) if isinstance(code, int) else None

    def kill(self) -> None:
        if self.sandbox is not None and self._session is not None:
            with contextlib.suppress(Exception):
                self.sandbox.process.delete_session(self._session)

    def close(self) -> None:
        super().close()
        if self._loop is not None:
            self._loop.close()
