"""IPythonREPL: a persistent REPL in a real Jupyter kernel (ipykernel + jupyter_client).

``KernelTransport`` starts a kernel with ``jupyter_client.KernelManager`` (in a
private working directory, with a scrubbed environment), and runs ``ipython_agent``
in it: the rlmx worker ``Server``, connected back to the host over a Unix socket
guarded by a one-time token. Everything else is ``WorkerEnv``'s: the same namespace
semantics (``context_N``/``history_N``, ``answer``, ``FINAL_VAR``, ``SHOW_VARS``,
custom tools), ``llm_query`` & co. relayed over that socket, snapshots after every
cell, and the timeout policy, carried out with the kernel's own means:

1. each cell runs inside an execute_request (``KernelSupervisor`` sends it);
2. at the cell timeout the kernel is interrupted (``KernelManager.interrupt_kernel``)
   and the namespace survives;
3. if the cell ignores that, or the kernel dies (``os._exit``, a segfault), the kernel
   is killed, a new one started and the namespace restored from the snapshot.

The kernel runs as the host user with the host's file system and network: it is
**not a security boundary** (use ``sandbox`` or ``docker`` for untrusted code).

Needs ``pip install 'rlmx[ipython]'``; importing this module does not.
"""

from __future__ import annotations

from typing import Any

from rlm.environments.base_env import NonIsolatedEnv
from rlm.environments.kernel_transport import KernelTransport
from rlm.environments.worker_client import WorkerClient
from rlm.environments.worker_env import WorkerEnv
from rlm.environments.worker_supervisor import Reply, WorkerSupervisor
from rlm.environments.worker_tools import split_tools


class _KernelInterrupts:
    """A client whose interrupts are kernel interrupts (everything else delegated)."""

    def __init__(self, client: WorkerClient, transport: KernelTransport) -> None:
        self._client = client
        self._transport = transport

    def interrupt(self, cell: int) -> None:
        self._transport.interrupt()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class KernelSupervisor(WorkerSupervisor):
    """WorkerSupervisor whose cells are execute_requests, interrupted by the kernel."""

    transport: KernelTransport

    def run_cell(self, client: WorkerClient, code: str, cell: int) -> tuple[Reply | None, str]:
        self.transport.run_next_cell()
        proxy: Any = _KernelInterrupts(client, self.transport)
        return super().run_cell(proxy, code, cell)


class IPythonREPL(WorkerEnv, NonIsolatedEnv):
    """A persistent REPL in a Jupyter kernel (see the module docstring).

    Keyword arguments, besides WorkerEnv's (``cell_timeout`` 120 s, ``interrupt_grace``
    2 s, ``start_timeout`` 60 s, ``output_limit``, ``snapshot_limit_mb``...):
    ``kernel_name`` (the kernelspec, default "python3": this interpreter's ipykernel)
    and ``kernel_env`` (extra environment variables for the kernel, which otherwise
    gets only ``PATH``, ``LANG``, ``LC_ALL``, ``HOME``/``TMPDIR`` = its working
    directory). rlms's ``kernel_mode`` ("in_process"/"subprocess"), ``startup_timeout``
    and ``subcall_timeout`` are accepted: rlmx always runs a kernel subprocess,
    ``startup_timeout`` is ``start_timeout``, and sub-calls wait for the host.
    """

    def __init__(
        self,
        kernel_name: str = "python3",
        kernel_env: dict[str, str] | None = None,
        kernel_mode: str = "subprocess",
        startup_timeout: float | None = None,
        subcall_timeout: float | None = None,
        cell_timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        if kernel_mode not in ("in_process", "subprocess"):
            raise ValueError(
                f"kernel_mode must be 'in_process' or 'subprocess', not {kernel_mode!r}"
            )
        self.kernel_name = kernel_name
        if startup_timeout is not None:
            kwargs["start_timeout"] = startup_timeout
        if cell_timeout is not None:  # rlms's None meant "no limit": keep the default cap
            kwargs["cell_timeout"] = cell_timeout
        transport = KernelTransport(kernel_name, kernel_env)
        transport.start_timeout = float(kwargs.get("start_timeout", 60.0))
        super().__init__(transport, **kwargs)

    def setup(self) -> None:
        # Cells must be execute_requests: the same supervisor, with KernelSupervisor's
        # run_cell (built from the arguments WorkerEnv gave its own).
        old = self.supervisor
        values, sources = split_tools(self.custom_tools)
        tools = {"values": values, "sources": sources} if values or sources else None
        self.supervisor = KernelSupervisor(
            old.transport,
            old.state,
            old.relay,
            old.timeouts,
            self.worker_args(),
            tools,
            type(self).__name__,
        )
        super().setup()
