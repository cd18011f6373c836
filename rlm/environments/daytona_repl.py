"""DaytonaREPL: the worker in a Daytona sandbox, as an asynchronous session command.

A composition: ``WorkerEnv`` (``rlm.environments.host``) driving a worker that
``ExecTransport`` runs through ``DaytonaAdapter`` (``rlm.environments.transports.daytona``).

Needs ``pip install 'rlmx[daytona]'``; importing this module does not.
"""

from __future__ import annotations

from typing import Any

from rlm.environments.base_env import IsolatedEnv
from rlm.environments.host.worker_env import WorkerEnv
from rlm.environments.transports.daytona import DaytonaAdapter, daytona_sdk
from rlm.environments.transports.exec import ExecTransport


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
            daytona_sdk()  # fail before anything starts
        config = {k: v for k, v in {"api_key": api_key, "target": target}.items() if v}
        options = {"name": name, "image": image, "cpu": cpu, "memory": memory, "disk": disk}
        options["auto_stop_interval"] = auto_stop_interval
        image_options = {k: v for k, v in options.items() if v is not None}
        self._adapter = adapter = DaytonaAdapter(config, create_params, sandbox, image_options)
        super().__init__(ExecTransport(adapter, python), **kwargs)

    @property
    def sandbox(self) -> Any:
        return self._adapter.sandbox
