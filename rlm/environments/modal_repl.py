"""ModalREPL: the worker in a Modal Sandbox, over ``Sandbox.exec`` stdin/stdout.

``ModalAdapter`` creates one sandbox per environment (``modal.Sandbox.create``) and
runs the worker launcher with ``sandbox.exec(..., text=False)``: stdin and stdout
are byte streams, so the channel needs no encoding. The exec'd process lives as long
as the sandbox (``timeout``), so the REPL is persistent. ``llm_query`` & co. travel
over that same stream: the sandbox is created with ``block_network=True`` by default
and never holds a credential. Modal cannot signal an exec'd process; the launcher's
in-band kill (and closing its stdin) stops the worker instead.

Needs ``pip install 'rlmx[modal]'``; importing this module does not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from rlm.base.errors import MissingExtraError
from rlm.environments.base_env import IsolatedEnv
from rlm.environments.exec_transport import ExecAdapter, ExecTransport, Send, TailBuffer
from rlm.environments.worker_env import WorkerEnv


def _modal() -> Any:
    try:
        import modal  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise MissingExtraError("The modal environment", "modal", "modal") from None
    return modal


class ModalAdapter(ExecAdapter):
    def __init__(
        self,
        app_name: str,
        image: Any,
        timeout: int,
        block_network: bool,
        sandbox: Any = None,
        sandbox_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.app_name = app_name
        self.image = image
        self.timeout = timeout
        self.block_network = block_network
        self.sandbox = sandbox
        self._owned = sandbox is None
        self.sandbox_kwargs = dict(sandbox_kwargs or {})
        self._process: Any = None
        self._tail = TailBuffer()

    def _sandbox(self) -> Any:
        if self.sandbox is None:
            modal = _modal()
            app = modal.App.lookup(self.app_name, create_if_missing=True)
            image = self.image or modal.Image.debian_slim(python_version="3.12")
            self.sandbox = modal.Sandbox.create(
                app=app,
                image=image,
                timeout=self.timeout,
                block_network=self.block_network,
                **self.sandbox_kwargs,
            )
        return self.sandbox

    def start(self, argv: list[str]) -> tuple[Send, Iterator[bytes]]:
        process = self._sandbox().exec(*argv, text=False)
        self._process = process

        def send(data: bytes) -> None:
            process.stdin.write(data)
            process.stdin.drain()

        self._tail = TailBuffer()
        self._tail.drain(process.stderr)
        return send, iter(process.stdout)

    def alive(self) -> bool:
        process = self._process
        return process is not None and process.poll() is None

    def exit_code(self) -> int | None:
        return self._process.poll() if self._process is not None else None

    def kill(self) -> None:
        process = self._process
        if process is not None:
            with contextlib.suppress(Exception):
                process.stdin.write_eof()  # the launcher kills the worker at EOF
                process.stdin.drain()

    def stderr_tail(self) -> str:
        return self._tail.text()

    def close(self) -> None:
        sandbox, self.sandbox = self.sandbox, None
        if sandbox is not None and self._owned:
            with contextlib.suppress(Exception):
                sandbox.terminate()


class ModalREPL(WorkerEnv, IsolatedEnv):
    """A persistent REPL whose code runs in a Modal Sandbox.

    Keyword arguments, besides WorkerEnv's (``cell_timeout``, ``interrupt_grace``,
    ``start_timeout``...): ``app_name`` ("rlm-sandbox"), ``image`` (a ``modal.Image``;
    default Debian slim with Python 3.12), ``timeout`` (sandbox lifetime in seconds,
    600), ``block_network`` (True: the worker needs no network), ``sandbox`` (an
    existing ``modal.Sandbox`` to use; it is not terminated at cleanup),
    ``sandbox_kwargs`` (more ``Sandbox.create`` arguments) and ``python``
    ("python3", the interpreter inside the image).
    """

    def __init__(
        self,
        app_name: str = "rlm-sandbox",
        image: Any = None,
        timeout: int = 600,
        block_network: bool = True,
        sandbox: Any = None,
        sandbox_kwargs: dict[str, Any] | None = None,
        python: str = "python3",
        **kwargs: Any,
    ) -> None:
        if sandbox is None:
            _modal()  # fail before anything starts
        self.app_name = app_name
        adapter = ModalAdapter(app_name, image, timeout, block_network, sandbox, sandbox_kwargs)
        super().__init__(ExecTransport(adapter, python), **kwargs)

    @property
    def sandbox(self) -> Any:
        return self.transport.adapter.sandbox  # type: ignore[attr-defined]
