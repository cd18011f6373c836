"""The Modal transport: the worker in a Modal Sandbox, over ``Sandbox.exec`` stdin/stdout.

``ModalAdapter`` creates one sandbox per environment (``modal.Sandbox.create``) and
runs the worker launcher with ``sandbox.exec(..., text=False)``: stdin and stdout
are byte streams, so the channel needs no encoding. The exec'd process lives as long
as the sandbox (``timeout``), so the REPL is persistent. ``llm_query`` & co. travel
over that same stream: the sandbox is created with ``block_network=True`` by default
and never holds a credential. Modal cannot signal an exec'd process; the launcher's
in-band kill (and closing its stdin) stops the worker instead.

``ModalREPL`` (``rlm.environments.modal_repl``) runs ``WorkerEnv`` on it. The SDK is
imported when a sandbox is first needed, not with this module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from rlm.environments.transports.exec import SandboxAdapter, Send, TailBuffer, import_sdk


def modal_sdk() -> Any:
    """The ``modal`` SDK (``MissingExtraError`` if it is not installed)."""
    return import_sdk("modal", "modal", "modal", "modal")


class ModalAdapter(SandboxAdapter):
    def __init__(
        self,
        app_name: str,
        image: Any,
        timeout: int,
        block_network: bool,
        sandbox: Any = None,
        sandbox_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(sandbox)
        self.app_name = app_name
        self.image = image
        self.timeout = timeout
        self.block_network = block_network
        self.sandbox_kwargs = dict(sandbox_kwargs or {})
        self._process: Any = None

    def _create(self) -> Any:
        modal = modal_sdk()
        app = modal.App.lookup(self.app_name, create_if_missing=True)
        image = self.image or modal.Image.debian_slim(python_version="3.12")
        return modal.Sandbox.create(
            app=app,
            image=image,
            timeout=self.timeout,
            block_network=self.block_network,
            **self.sandbox_kwargs,
        )

    def _delete(self, sandbox: Any) -> None:
        sandbox.terminate()

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
