"""E2BREPL: the worker in an E2B sandbox, as a background command with stdin.

A composition: ``WorkerEnv`` (``rlm.environments.host``) driving a worker that
``ExecTransport`` runs through ``E2BAdapter`` (``rlm.environments.transports.e2b``).

Needs ``pip install 'rlmx[e2b]'``; importing this module does not.
"""

from __future__ import annotations

from typing import Any

from rlm.environments.base_env import IsolatedEnv
from rlm.environments.host.worker_env import WorkerEnv
from rlm.environments.transports.e2b import E2BAdapter, e2b_sandbox_class
from rlm.environments.transports.exec import ExecTransport


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
            e2b_sandbox_class()  # fail before anything starts
        self.timeout = timeout
        self._adapter = adapter = E2BAdapter(timeout, sandbox, sandbox_kwargs)
        super().__init__(ExecTransport(adapter, python), **kwargs)

    @property
    def sandbox(self) -> Any:
        return self._adapter.sandbox
