"""WorkerEnv: a persistent REPL whose code runs in a worker process, on any transport.

It gives out-of-process environments LocalREPL's behaviour (``SupportsPersistence``,
``SupportsSnapshot``, ``execute_code`` & co.) and the guarantees an in-process REPL
cannot give: every cell has a time limit, and a cell that hangs or kills its worker
costs that cell only.

Timeout policy, per cell (``cell_timeout`` seconds of the cell's own running time;
time the cell spends waiting for ``llm_query``/``rlm_query`` answers is not counted):

1. interrupt the cell in the worker (``KeyboardInterrupt``): the namespace survives;
2. if it has not stopped ``interrupt_grace`` seconds later, kill the worker, start a
   new one and restore the namespace from the last snapshot;
3. the cell's stderr says which cell timed out and which names could not be restored.

A worker that dies (segfault, ``os._exit``, the OOM killer, a resource limit) is
handled like step 2, and reported as that cell's error. When a run is stopped
(``SupportsInterrupt``: ``interrupt_cell()``), the running cell goes through steps 1-3 at
once; the worker, interrupted in time, stays for the next turn. Snapshots are taken by the
worker after every cell (see ``rlm.environments.worker.snapshot`` for the policy);
``WorkerSupervisor`` carries the policy out.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from rlm.base.types import REPLResult
from rlm.environments.base_env import (
    DEFAULT_MAX_CONCURRENT_SUBCALLS,
    BaseEnv,
    IsolatedEnv,
)
from rlm.environments.host.client import DEFAULT_MAX_FRAME_MB, NO_VALUE, WorkerRequestError
from rlm.environments.host.recovery import WorkerValue, to_locals
from rlm.environments.host.spares import Spare, SparePlan, WarmSpares
from rlm.environments.host.state import (
    ORIGIN_ISOLATED,
    ORIGIN_LOCAL_PROCESS,
    Delta,
    Entry,
    WorkerState,
    host_copy,
)
from rlm.environments.host.subcall_relay import SubcallFn, SubcallRouting
from rlm.environments.host.supervisor import (
    DEFAULT_MAX_PENDING_SUBCALLS,
    Limits,
    Reply,
    Timeouts,
    WorkerSupervisor,
)
from rlm.environments.host.tools import split_tools
from rlm.environments.transports.base import Transport

if TYPE_CHECKING:
    from rlm.base.ports import SubcallRoute

DEFAULT_CELL_TIMEOUT = 120.0  # seconds of a cell's own running time
MAX_CELL_TIMEOUT = 3600.0  # host cap: larger requests are clamped
DEFAULT_INTERRUPT_GRACE = 2.0
DEFAULT_SNAPSHOT_TIMEOUT = 60.0  # saving one cell's snapshot delta
DEFAULT_OUTPUT_LIMIT = 1_000_000  # characters kept per stream and cell (head + tail)
MAX_OUTPUT_LIMIT = 16_000_000
DEFAULT_SNAPSHOT_LIMIT_MB = 1024

__all__ = ["DEFAULT_CELL_TIMEOUT", "MAX_CELL_TIMEOUT", "WorkerEnv", "WorkerValue"]


class WorkerEnv(SubcallRouting, BaseEnv):
    """A REPL served by a worker process that ``transport`` places and controls.

    Keyword arguments besides BaseEnv's and LocalREPL's: ``cell_timeout`` (120 s,
    capped at 3600), ``interrupt_grace`` (2 s), ``start_timeout`` (60 s),
    ``control_timeout`` (300 s, for requests outside cells), ``snapshot_timeout``
    (60 s), ``output_limit`` (1,000,000 characters per stream and cell, head and tail
    kept), ``snapshots`` (True: snapshot after every cell), ``snapshot_limit_mb``
    (1024: the most snapshot data kept on the host, and per variable),
    ``cell_wall_timeout`` (4 x ``cell_timeout``: wall-clock seconds per cell, time
    waiting for sub-calls included), ``max_frame_mb`` (8: the largest frame the host
    reads from the worker; an oversize one restarts the worker) and
    ``max_pending_subcalls`` (32: the worker's sub-call requests answered at once;
    further ones get an error).

    Warm spares (``host.spares``): an environment handed a ``spares`` pool (the engine
    passes its RLM's) takes a started, never-used worker from it instead of starting
    one; a non-persistent one has the next spare started in the background when it is
    cleaned up (not while it runs: a starting worker would slow its cells).
    ``warm_spare=False`` opts out. Only transports given as a factory (a callable that
    makes a new one) and subclasses that define ``spare_key`` take part.
    """

    def __init__(
        self,
        transport: Transport | Callable[[], Transport],
        lm_handler_address: tuple[str, int] | None = None,
        context_payload: Any = None,
        setup_code: str | None = None,
        persistent: bool = False,
        depth: int = 1,
        subcall_fn: SubcallFn | None = None,
        custom_tools: dict[str, Any] | None = None,
        custom_sub_tools: dict[str, Any] | None = None,
        compaction: bool = False,
        max_concurrent_subcalls: int = DEFAULT_MAX_CONCURRENT_SUBCALLS,
        lm_route: SubcallRoute | None = None,
        lm_handler_token: str | None = None,
        cell_timeout: float = DEFAULT_CELL_TIMEOUT,
        interrupt_grace: float = DEFAULT_INTERRUPT_GRACE,
        start_timeout: float = 60.0,
        control_timeout: float = 300.0,
        snapshot_timeout: float = DEFAULT_SNAPSHOT_TIMEOUT,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        snapshots: bool = True,
        snapshot_limit_mb: float = DEFAULT_SNAPSHOT_LIMIT_MB,
        cell_wall_timeout: float | None = None,
        max_frame_mb: float = DEFAULT_MAX_FRAME_MB,
        max_pending_subcalls: int = DEFAULT_MAX_PENDING_SUBCALLS,
        spares: WarmSpares | None = None,
        warm_spare: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            persistent=persistent,
            depth=depth,
            max_concurrent_subcalls=max_concurrent_subcalls,
            **kwargs,
        )
        self._keep_tools(custom_tools, custom_sub_tools)
        relay = self._route_subcalls(lm_route, lm_handler_address, lm_handler_token, subcall_fn)
        self.compaction = compaction
        self.cell_timeout = min(float(cell_timeout), MAX_CELL_TIMEOUT)
        self.output_limit = max(1000, min(int(output_limit), MAX_OUTPUT_LIMIT))
        self.snapshots = snapshots
        self.state = WorkerState(compaction, int(snapshot_limit_mb * 2**20))
        values, sources = split_tools(self.custom_tools)
        timeouts = Timeouts(
            self.cell_timeout,
            interrupt_grace,
            start_timeout,
            control_timeout,
            snapshot_timeout,
            min(float(cell_wall_timeout or 0), 4 * MAX_CELL_TIMEOUT),
        )
        self.worker_limits = Limits(int(max_frame_mb * 2**20), max(1, int(max_pending_subcalls)))
        self.spares = spares if warm_spare else None
        self._spare: Spare | None = None
        self._plan: SparePlan | None = None
        self._spare_key: Hashable | None = None
        if callable(transport):  # a factory: spares of this placement can be started
            key = self.spare_key() if self.spares is not None else None
            if key is not None:
                self._spare_key = key
                self._plan = SparePlan(
                    transport,
                    self.worker_args(),
                    self.worker_limits.max_frame_bytes,
                    timeouts.start,
                )
                assert self.spares is not None
                self._spare = self.spares.take(key, wait=timeouts.start)
            transport = self._spare.transport if self._spare is not None else transport()
        self.transport = transport
        self._close_transport = weakref.finalize(self, transport.close)  # if never cleaned up
        tools = {"values": values, "sources": sources} if values or sources else None
        # The supervisor gets no reference back to this env (its arguments are computed
        # here), so a forgotten env is collected and its finalizer stops the worker.
        self.supervisor = WorkerSupervisor(
            transport,
            self.state,
            relay,
            timeouts,
            self.worker_args(),
            tools,
            type(self).__name__,
            self.worker_limits,
        )
        self._lock = threading.RLock()
        self._cell = 0
        self._last_vars: dict[str, list[Any]] = {}
        self._closed = False
        self._initialize(context_payload, setup_code)

    def worker_args(self) -> list[str]:
        """Arguments for the worker program; subclasses add their own (limits)."""
        limit = self.state.limit_bytes
        args = ["--output-limit", str(self.output_limit), "--max-value-bytes", str(limit)]
        args += ["--max-frame-bytes", str(self.worker_limits.max_frame_bytes)]
        if self.compaction:
            args.append("--compaction")
        if not self.snapshots:
            args.append("--no-snapshots")
        return args

    def spare_key(self) -> Hashable | None:
        """What a warm spare must match to serve this environment (its placement and
        worker arguments), or None: this environment never uses spares."""
        return None

    def setup(self) -> None:
        """Start the worker, or take over a warm spare's (called once, by the
        constructor)."""
        with self._lock:
            spare, self._spare = self._spare, None
            self.supervisor.start(spare.client if spare is not None else None)

    def _control(self, op: str, value: Any = NO_VALUE, **fields: Any) -> Reply:
        with self._lock:
            self._check_open()
            return self.supervisor.control(op, self._cell, value, **fields)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} has been cleaned up")

    # -- cells ------------------------------------------------------------------------------

    def execute_code(self, code: str) -> REPLResult:
        started = time.perf_counter()
        with self._lock:
            self._check_open()
            supervisor = self.supervisor
            client = supervisor.alive_client(self._cell)
            self._cell += 1
            cell = self._cell
            supervisor.collect_calls(cell)
            try:
                reply, error = supervisor.run_cell(client, code, cell)
            except KeyboardInterrupt:
                supervisor.abandon(cell)
                raise
            finally:
                calls = supervisor.collect_calls(None)
            notes, supervisor.notes = supervisor.notes, []
            reply = reply or {}
            if "vars" in reply:
                self._last_vars = reply["vars"] or {}
            stderr = "".join(f"{note}\n" for note in notes) + str(reply.get("stderr") or "")
            if error:
                stderr += ("" if not stderr or stderr.endswith("\n") else "\n") + error + "\n"
            return REPLResult(
                stdout=str(reply.get("stdout") or ""),
                stderr=stderr,
                locals=to_locals(self._last_vars),
                execution_time=time.perf_counter() - started,
                rlm_calls=calls,
                final_answer=reply.get("final_answer"),
            )

    def interrupt_cell(self) -> bool:
        """``SupportsInterrupt``: stop the running cell (interrupted in the worker, the
        worker replaced if it does not stop within ``interrupt_grace``). Returns at
        once, from any thread; True if a cell was running."""
        return self.supervisor.interrupt_cell()

    # -- SupportsPersistence ----------------------------------------------------------------

    def load_context(self, context_payload: Any) -> None:
        self.add_context(context_payload, 0)

    def add_context(self, context_payload: Any, context_index: int | None = None) -> int:
        with self._lock:
            inputs = self.state.inputs
            index = inputs.add_context(host_copy(context_payload), context_index)
            self._control("add_context", inputs.contexts[index], index=index)
            return index

    def get_context_count(self) -> int:
        return self.state.inputs.context_count

    def add_history(
        self, message_history: list[dict[str, Any]], history_index: int | None = None
    ) -> int:
        with self._lock:
            inputs = self.state.inputs
            index = inputs.add_history(host_copy(message_history), history_index)
            self._control("add_history", inputs.histories[index], index=index)
            return index

    def get_history_count(self) -> int:
        return self.state.inputs.history_count

    def append_compaction_entry(self, entry: list[dict[str, Any]] | dict[str, Any]) -> None:
        """Append a trajectory segment or a summary to ``history`` (compaction mode)."""
        history = self.state.inputs.compaction_history
        if history is not None:
            with self._lock:
                history.append(host_copy(entry))
                self._control("append_compaction", history[-1])

    # -- variables -----------------------------------------------------------------------------

    def lookup_variable(self, name: str) -> str | None:
        if not isinstance(name, str) or not name.isidentifier():
            return None
        reply = self._control("lookup", name=name)
        value, body = reply.get("value"), reply.get("body")
        if reply.get("utf8") and isinstance(body, bytes):  # streamed (over the frame cap)
            value = body.decode("utf-8", "surrogatepass")
        return value if isinstance(value, str) else None

    def set_variable(self, name: str, value: Any) -> None:
        """Bind ``name`` in the namespace (e.g. the engine's ``final_answer_N``)."""
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"Cannot bind {name!r} in the REPL namespace")
        try:
            self._control("set", value, name=name)
        except WorkerRequestError as exc:
            raise ValueError(str(exc)) from None

    def reset_answer(self) -> None:
        self._control("reset_answer")

    # -- SupportsSnapshot ------------------------------------------------------------------------

    def snapshot(self) -> tuple[bytes, list[str]]:
        """A full snapshot: inputs plus every variable that could be saved, and the
        names that could not."""
        with self._lock:
            self._control("snapshot")  # its entries are committed before the reply
            origin = ORIGIN_ISOLATED if isinstance(self, IsolatedEnv) else ORIGIN_LOCAL_PROCESS
            return self.state.to_blob(origin), sorted(self.state.unsaved)

    delta_hashed_here = True  # snapshot_delta's digests are computed in this process

    def snapshot_delta(self) -> Delta:
        """For durable stores: every saved entry's metadata with its digest, the bodies
        not given before (by digest), and the names that could not be saved. The worker
        already sent a delta after every cell, so this asks it nothing (unless
        per-cell snapshots are off: then it takes a full one first). Like LocalREPL's,
        an in-place edit of a large value that keeps its length is not seen until the
        name is rebound (``rlm.environments.worker.snapshot``)."""
        with self._lock:
            if not self.snapshots:
                self._control("snapshot")
            return self.state.delta()

    def snapshot_reset(self) -> None:
        """The last delta was not stored: the next one carries every body."""
        self.state.forget_given()

    def restore_parts(self, metas: list[dict[str, Any]], load: Callable[[str], bytes]) -> list[str]:
        """Replace the namespace with a durable delta's entries (on a fresh worker),
        loading each body by its digest with ``load``; the inputs stay. Returns the
        names that could not be restored."""
        failed: dict[str, str] = {}
        entries: dict[str, Entry] = {}
        digests: dict[str, str] = {}
        for meta in metas:
            name, digest = str(meta.get("name")), meta.get("digest")
            try:
                body = load(str(digest)) if digest else None
            except Exception as exc:
                failed[name] = f"{type(exc).__name__}: {exc}"[:200]
                continue
            entries[name] = ({k: v for k, v in meta.items() if k != "digest"}, body)
            if digest:
                digests[name] = str(digest)
        with self._lock:
            self._check_open()
            self.state.load_parts(entries, digests)
            return sorted({**failed, **self.supervisor.restart()})

    def restore(self, data: bytes) -> list[str]:
        """Replace the namespace with snapshot ``data`` (on a fresh worker); returns the
        names that could not be restored."""
        with self._lock:
            self._check_open()
            state = WorkerState.from_blob(data, self.compaction, self.state.limit_bytes)
            self.state = self.supervisor.state = state
            return sorted(self.supervisor.restart())

    # -- lifecycle ---------------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Stop the worker and release the transport. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self.supervisor.close()
        self._close_transport()
        # A one-shot environment's owner will want another: its spare is started now,
        # once this worker is gone, so it never competes with a running completion.
        spares, key, plan = self.spares, self._spare_key, self._plan
        if spares is not None and key is not None and plan and not self.persistent:
            spares.refill(key, plan)
