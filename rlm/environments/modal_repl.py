"""ModalREPL: the worker in a Modal Sandbox, over ``Sandbox.exec`` stdin/stdout.

A composition: ``WorkerEnv`` (``rlm.environments.host``) driving a worker that
``ExecTransport`` runs through ``ModalAdapter`` (``rlm.environments.transports.modal``).

Needs ``pip install 'rlmx[modal]'``; importing this module does not.
"""

from __future__ import annotations

from typing import Any

from rlm.environments.base_env import IsolatedEnv
from rlm.environments.host.worker_env import WorkerEnv
from rlm.environments.transports.exec import ExecTransport
from rlm.environments.transports.modal import ModalAdapter, modal_sdk


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
            modal_sdk()  # fail before anything starts
        self.app_name = app_name
        self._adapter = adapter = ModalAdapter(
            app_name, image, timeout, block_network, sandbox, sandbox_kwargs
        )
        super().__init__(ExecTransport(adapter, python), **kwargs)

    @property
    def sandbox(self) -> Any:
        return self._adapter.sandbox
