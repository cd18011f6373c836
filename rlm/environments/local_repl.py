"""LocalREPL: the one REPL core, run in this process, in one persistent namespace.

LocalREPL composes ``ReplCore`` (``rlm.environments.worker.repl_core``: the scaffold and
cell rules every REPL shares), ``SubcallRouting`` (its sub-calls, through a
``SubcallRelay``) and the in-process pieces of ``rlm.environments.inprocess``:
per-thread output capture and snapshots.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Self

from rlm.base.types import REPLResult
from rlm.environments.base_env import (
    DEFAULT_MAX_CONCURRENT_SUBCALLS,
    NonIsolatedEnv,
    extract_tool_value,
)
from rlm.environments.host.subcall_relay import SubcallFn, SubcallRouting, outcome_text
from rlm.environments.inprocess.capture import capture
from rlm.environments.inprocess.interrupt import CellInterrupted, CellStopped, CellStops
from rlm.environments.inprocess.scratch import ScratchDir
from rlm.environments.inprocess.snapshots import DEFAULT_MAX_VALUE_BYTES, Delta, LocalSnapshots
from rlm.environments.worker.namespace import CellRecord, Inputs
from rlm.environments.worker.repl_core import ReplCore

if TYPE_CHECKING:
    from rlm.base.ports import SubcallRoute


class LocalREPL(SubcallRouting, ReplCore, NonIsolatedEnv):
    """A persistent Python namespace in the host process.

    LocalREPL is NOT a security boundary: code runs with full builtins and the host's
    privileges (imports, files, network). Use it only for code you would run yourself.
    Two deliberate deviations from plain Python: relative paths given to the builtin
    ``open`` resolve against ``temp_dir`` (no process-wide ``chdir``; other file APIs
    such as ``pathlib`` still see the process cwd), and ``input()`` raises.

    Separate instances run concurrently without sharing output, files or answers;
    ``execute_code`` on one instance is serialised. Output is captured per thread:
    what threads started by the cell's own code print goes to the host's stdout.

    ``SupportsSnapshot``: ``snapshot()``/``restore()`` save and rebind the user variables
    with the worker environments' policy and format (``rlm.environments.inprocess.snapshots``).
    A blob written by a less trusted environment (an isolated worker, an IPython kernel)
    is not loaded unless ``trust_snapshots=True``: it would run that code here.

    ``SupportsInterrupt``: ``interrupt_cell()`` (from any thread) stops the running cell
    at its next Python instruction (``rlm.environments.inprocess.interrupt``; a blocking
    call such as ``time.sleep`` first returns); the cell ends with a
    ``KeyboardInterrupt: ...`` line in its stderr and the namespace stays usable.
    """

    def __init__(
        self,
        lm_handler_address: tuple[str, int] | None = None,
        context_payload: dict[str, Any] | list[Any] | str | None = None,
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
        **kwargs: Any,
    ) -> None:
        super().__init__(
            persistent=persistent,
            depth=depth,
            max_concurrent_subcalls=max_concurrent_subcalls,
            **kwargs,
        )
        self._keep_tools(custom_tools, custom_sub_tools)
        self._route_subcalls(lm_route, lm_handler_address, lm_handler_token, subcall_fn)
        self.compaction = compaction
        # temp_dir is made on first use; removed on cleanup(), at garbage collection or
        # at exit, whichever first.
        self._scratch = ScratchDir()
        self._lock = threading.RLock()
        self._stops = CellStops()
        self._cell_count = 0
        self._closed = False
        self.inputs = Inputs(compaction)
        self.setup()
        self._snapshots = LocalSnapshots(
            self,
            int(kwargs.get("snapshot_limit_mb", 0) * 2**20) or DEFAULT_MAX_VALUE_BYTES,
            trusted=bool(kwargs.get("trust_snapshots")),
        )
        if context_payload is not None:
            self.load_context(context_payload)
        if setup_code:
            self.execute_code(setup_code)

    # -- namespace ---------------------------------------------------------------

    def setup(self) -> None:
        """Build a fresh namespace: builtins, scaffold functions, tools, ``answer``."""
        tools = {name: extract_tool_value(entry) for name, entry in self.custom_tools.items()}
        namespace = {"__name__": "__main__"}
        namespace.update({n: v for n, v in tools.items() if not callable(v)})
        functions = {n: v for n, v in tools.items() if callable(v)}
        self._open(namespace, self._scratch, self.inputs, functions)

    @property
    def temp_dir(self) -> str:
        """The REPL's private scratch folder, where relative ``open`` paths land; made on
        first use (by this property or by such an ``open``)."""
        return self._scratch.path()

    def load_context(self, context_payload: Any) -> None:
        self.add_context(context_payload, 0)

    def reset_answer(self) -> None:
        with self._lock:
            super().reset_answer()

    # -- execution ---------------------------------------------------------------

    def execute_code(self, code: str) -> REPLResult:
        started = time.perf_counter()
        with self._lock:
            self._check_open()
            self._cell_count += 1
            cell, outer = CellRecord(), self.cell  # outer: a cell that re-entered us
            self.cell = cell
            try:
                with capture() as (out, err):
                    self.run_cell(code, self._cell_count, err)
            finally:
                self.cell = outer
            return REPLResult(
                stdout=out.getvalue(),
                stderr=err.getvalue(),
                locals=self.locals.copy(),
                execution_time=time.perf_counter() - started,
                rlm_calls=list(cell.calls),
                final_answer=cell.final_answer,
            )

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("LocalREPL has been cleaned up")

    def _exec(self, code: str, filename: str) -> None:
        self._stops.run(self._run_code, code, filename)

    def _run_code(self, code: str, filename: str) -> None:
        """The cell's code itself (interruptible while it runs)."""
        super()._exec(code, filename)

    def _ends_cell(self, exc: BaseException) -> bool:
        # SystemExit and an interrupt of this REPL's own end only the cell; Ctrl-C
        # reaches the engine (a CancellationError), and so does an interrupt meant for a
        # cell that re-entered this REPL.
        return not isinstance(exc, KeyboardInterrupt | CellStopped)

    def _describe_error(self, exc: BaseException) -> str:
        if isinstance(exc, CellInterrupted):
            return (
                f"KeyboardInterrupt: cell interrupted: {exc} (cell {self._cell_count}); "
                "the namespace is intact.\n"
            )
        return super()._describe_error(exc)

    def interrupt_cell(self) -> bool:
        """``SupportsInterrupt``: stop the running cell (see the class docstring).
        True if a cell was running; returns at once, from any thread."""
        return self._stops.interrupt()

    # -- LM sub-calls (what the scaffold's llm_query & co. ask) --------------------------

    def _ask(self, op: str, prompts: list[Any], model: str | None, schema: Any) -> list[str]:
        cell = self.cell  # the cell that asked, even if another one runs by the answer
        # An interrupt waits while the engine answers (it must not land in its code).
        outcomes = self._stops.shielded(self._relay.run, op, prompts, model, schema)
        # An outcome is a completion or an error text: tell them apart by the text, not
        # by the completion class (which a re-import of rlm.base.types would replace).
        cell.record([o for o in outcomes if not isinstance(o, str)])
        return [outcome_text(o) for o in outcomes]

    def _remaining(self) -> Mapping[str, Any] | None:
        return self._stops.shielded(self._relay.remaining)

    # -- SupportsPersistence ---------------------------------------------------------

    def add_context(self, context_payload: Any, context_index: int | None = None) -> int:
        # Containers are copied so the caller can keep mutating its own object.
        value = (
            copy.deepcopy(context_payload)
            if isinstance(context_payload, dict | list)
            else context_payload
        )
        with self._lock:
            index = self.inputs.add_context(value, context_index)
            self.inputs.bind(self.globals)
        return index

    def get_context_count(self) -> int:
        return self.inputs.context_count

    def add_history(
        self, message_history: list[dict[str, Any]], history_index: int | None = None
    ) -> int:
        value = copy.deepcopy(message_history)
        with self._lock:
            index = self.inputs.add_history(value, history_index)
            self.inputs.bind(self.globals)
        return index

    def get_history_count(self) -> int:
        return self.inputs.history_count

    def append_compaction_entry(self, entry: list[dict[str, Any]] | dict[str, Any]) -> None:
        """Append a trajectory segment or a summary to ``history`` (compaction mode)."""
        if self.inputs.compaction_history is not None:
            self.inputs.compaction_history.append(copy.deepcopy(entry))

    # -- SupportsSnapshot -------------------------------------------------------------

    def snapshot(self) -> tuple[bytes, list[str]]:
        """The user variables as bytes, and the names that could not be saved."""
        with self._lock:
            return self._snapshots.snapshot()

    def restore(self, data: bytes) -> list[str]:
        """Replace the user variables with snapshot ``data``; returns the names that
        could not be restored."""
        with self._lock:
            lost = self._snapshots.restore(data)
            self._cell_count = max(self._cell_count, self.last_cell)
            return lost

    delta_hashed_here = True  # snapshot_delta's digests are computed in this process

    def snapshot_delta(self) -> Delta:
        """For durable stores: entries, bodies changed since the last delta, unsaved."""
        with self._lock:
            return self._snapshots.delta()

    def snapshot_reset(self) -> None:
        """The last delta was not stored: the next one carries every body."""
        with self._lock:
            self._snapshots.reset()

    def restore_parts(self, metas: list[dict[str, Any]], load: Callable[[str], bytes]) -> list[str]:
        """Restore from a delta's entries, loading bodies by digest with ``load``."""
        with self._lock:
            lost = self._snapshots.restore_parts(metas, load)
            self._cell_count = max(self._cell_count, self.last_cell)
            return lost

    # -- lifecycle -------------------------------------------------------------------

    def cleanup(self) -> None:
        """Remove ``temp_dir``, clear the namespace and close the LM connection.
        Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._relay.close()
        self.globals.clear()
        self._scratch.remove()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
