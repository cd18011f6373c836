"""IPythonREPL's ``subprocess`` mode: the rlmx worker in a real Jupyter kernel.

``KernelTransport`` (``rlm.environments.transports.kernel``) starts a kernel with
``jupyter_client.KernelManager`` (in a private working directory, with a scrubbed
environment), and runs the worker's ``kernel_agent`` in it: the rlmx worker
``Server``, connected back to the host over a Unix socket guarded by a one-time token.
Everything else is ``WorkerEnv``'s: the same namespace
semantics (``context_N``/``history_N``, ``answer``, ``FINAL_VAR``, ``SHOW_VARS``,
custom tools), ``llm_query`` & co. relayed over that socket, snapshots after every
cell, and the timeout policy, carried out with the kernel's own means:

1. each cell runs inside an execute_request (``KernelSupervisor`` sends it);
2. at the cell timeout the kernel is interrupted (``KernelManager.interrupt_kernel``)
   and the namespace survives;
3. if the cell ignores that, or the kernel dies (``os._exit``, a segfault), the kernel
   is killed, a new one started and the namespace restored from the snapshot.

Sub-calls are tagged with the cell that made them: the completions of a cell that
timed out while a sub-call was still running are dropped when they arrive, never
reported with a later cell (nor is an answer that cell could no longer submit).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from rlm.base.types import REPLResult
from rlm.environments.base_env import NonIsolatedEnv
from rlm.environments.host.client import WorkerClient
from rlm.environments.host.ipython_common import NO_LIMIT, CellLimitClock, ReentryGuard
from rlm.environments.host.recovery import to_locals
from rlm.environments.host.subcall_relay import SubcallScope
from rlm.environments.host.supervisor import Reply, WorkerSupervisor
from rlm.environments.host.tools import split_tools
from rlm.environments.host.worker_env import WorkerEnv
from rlm.environments.transports.kernel import KernelTransport


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
    """WorkerSupervisor whose cells are execute_requests, interrupted by the kernel, and
    whose cell clock can count wall-clock time."""

    transport: KernelTransport

    def __init__(self, *args: Any, clock: CellLimitClock, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clock = clock

    def run_cell(self, client: WorkerClient, code: str, cell: int) -> tuple[Reply | None, str]:
        self.transport.run_next_cell()
        proxy: Any = _KernelInterrupts(client, self.transport)
        return super().run_cell(proxy, code, cell)


class KernelREPL(WorkerEnv, NonIsolatedEnv):
    """The ``subprocess`` engine of IPythonREPL (see the module docstring).

    ``guard`` refuses re-entry (its ``subcall_fn`` runs inside ``guard.subcall``),
    ``clock`` measures cells; the other keyword arguments are WorkerEnv's, plus
    ``kernel_name`` and ``kernel_env`` (see IPythonREPL)."""

    def __init__(
        self,
        guard: ReentryGuard,
        clock: CellLimitClock,
        kernel_name: str = "python3",
        kernel_env: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.kernel_name = kernel_name
        self._guard = guard
        self._clock = clock
        transport = KernelTransport(kernel_name, kernel_env)
        transport.start_timeout = float(kwargs.get("start_timeout", 60.0))
        super().__init__(transport, **kwargs)

    def _subcall_scope(self) -> SubcallScope:
        return self._guard.subcall

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
            "IPythonREPL",
            clock=self._clock,
        )
        super().setup()

    def execute_code(self, code: str) -> REPLResult:
        with self._guard.cell():
            return super().execute_code(code)

    def set_cell_limit(self, seconds: float | None, wall: bool) -> None:
        """Limit the next cells to ``seconds`` (None: no limit), of wall-clock time if
        ``wall``, else of their own running time."""
        self.cell_timeout = seconds if seconds is not None else NO_LIMIT
        self.supervisor.timeouts.cell = self.cell_timeout
        self._clock.wall = wall

    def view_locals(self) -> Mapping[str, Any]:
        """The variables reported by the last cell (values or previews), read-only."""
        return MappingProxyType(to_locals(self._last_vars))
