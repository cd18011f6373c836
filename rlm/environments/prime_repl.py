"""PrimeREPL: the worker in a Prime Intellect sandbox, as a live process.

A composition: ``WorkerEnv`` (``rlm.environments.host``) driving a worker that
``ExecTransport`` runs through ``PrimeAdapter`` (``rlm.environments.transports.prime``).

Needs ``pip install 'rlmx[prime]'`` (a ``prime-sandboxes`` with ``open_process``);
importing this module does not.
"""

from __future__ import annotations

from typing import Any

from rlm.environments.base_env import IsolatedEnv
from rlm.environments.host.worker_env import WorkerEnv
from rlm.environments.transports.exec import ExecTransport
from rlm.environments.transports.prime import PrimeAdapter, prime_sdk


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
        prime_sdk()  # fail before anything starts
        request = {
            "name": name,
            "docker_image": docker_image,
            "timeout_minutes": timeout_minutes,
            **(sandbox_kwargs or {}),
        }
        self._adapter = adapter = PrimeAdapter(request, api_key, sandbox_id)
        super().__init__(ExecTransport(adapter, python), **kwargs)

    @property
    def sandbox_id(self) -> str | None:
        return self._adapter.sandbox_id
