"""DaytonaREPL: the worker in a Daytona sandbox, as an asynchronous session command.

``DaytonaAdapter`` creates the sandbox (``Daytona(DaytonaConfig(...)).create(...)``)
and runs the worker launcher in a session of its own with
``process.execute_session_command(..., SessionExecuteRequest(run_async=True))``. Input
goes through ``send_session_command_input`` and output arrives through
``get_session_command_logs_async``; both carry text, so the channel is base64 lines
(``text = True``). The command lives as long as the sandbox, so the REPL is
persistent; ``kill`` deletes the session (which ends its processes) after the
launcher's in-band kill.

Needs ``pip install 'rlmx[daytona]'``; importing this module does not.
"""

from __future__ import annotations

import contextlib
import queue
import shlex
import uuid
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

_END = object()
DEFAULT_IMAGE = "python:3.12-slim"  # when image options are given without an image


def _daytona() -> Any:
    try:
        import daytona  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise MissingExtraError("The daytona environment", "daytona", "daytona") from None
    return daytona


class DaytonaAdapter(ExecAdapter):
    text = True

    def __init__(
        self,
        config: dict[str, Any],
        create_params: Any = None,
        sandbox: Any = None,
        image_options: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.create_params = create_params
        self.image_options = dict(image_options or {})
        self.sandbox = sandbox
        self._owned = sandbox is None
        self._sdk: Any = None
        self._loop: LoopThread | None = None
        self._session: str | None = None
        self._command: str | None = None
        self._tail = TailBuffer()

    def _sandbox(self) -> Any:
        self._sdk = self._sdk or _daytona()
        if self.sandbox is None:
            client = self._sdk.Daytona(self._sdk.DaytonaConfig(**self.config))
            self.sandbox = client.create(self.create_params or self._image_params())
        return self.sandbox

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

    def stderr_tail(self) -> str:
        return self._tail.text()

    def close(self) -> None:
        sandbox, self.sandbox = self.sandbox, None
        if sandbox is not None and self._owned:
            with contextlib.suppress(Exception):
                sandbox.delete()
        if self._loop is not None:
            self._loop.close()


class DaytonaREPL(WorkerEnv, IsolatedEnv):
    """A persistent REPL whose code runs in a Daytona sandbox.

    Keyword arguments, besides WorkerEnv's: ``api_key`` (default: the SDK reads
    ``DAYTONA_API_KEY``), ``target`` (region, e.g. "us"), ``create_params`` (a
    ``CreateSandboxFromImageParams``/``CreateSandboxFromSnapshotParams``; default:
    Daytona's default Python sandbox), or rlms's ``name``, ``image``, ``cpu``,
    ``memory`` (GB), ``disk`` (GB) and ``auto_stop_interval`` to build one from an
    image, ``sandbox`` (an existing sandbox; not deleted at cleanup) and ``python``
    ("python3").
    """

    def __init__(
        self,
        api_key: str | None = None,
        target: str | None = None,
        create_params: Any = None,
        sandbox: Any = None,
        python: str = "python3",
        name: str | None = None,
        image: Any = None,
        cpu: int | None = None,
        memory: int | None = None,
        disk: int | None = None,
        auto_stop_interval: int | None = None,
        **kwargs: Any,
    ) -> None:
        if sandbox is None:
            _daytona()  # fail before anything starts
        config = {k: v for k, v in {"api_key": api_key, "target": target}.items() if v}
        options = {"name": name, "image": image, "cpu": cpu, "memory": memory, "disk": disk}
        options["auto_stop_interval"] = auto_stop_interval
        image_options = {k: v for k, v in options.items() if v is not None}
        adapter = DaytonaAdapter(config, create_params, sandbox, image_options)
        super().__init__(ExecTransport(adapter, python), **kwargs)

    @property
    def sandbox(self) -> Any:
        return self.transport.adapter.sandbox  # type: ignore[attr-defined]
