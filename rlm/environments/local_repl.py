"""LocalREPL: runs model-written code in-process, in one persistent namespace."""

from __future__ import annotations

import contextvars
import copy
import shutil
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Self

from rlm.base.types import Prompt, REPLResult, RLMChatCompletion
from rlm.environments.base_env import (
    DEFAULT_MAX_CONCURRENT_SUBCALLS,
    NonIsolatedEnv,
    extract_tool_value,
    validate_custom_tools,
)
from rlm.environments.local_snapshot import (
    DEFAULT_MAX_VALUE_BYTES,
    Delta,
    LocalNamespace,
    LocalSnapshots,
)
from rlm.environments.namespace import (
    AnswerDict,
    CellRecord,
    Inputs,
    UserView,
    budget_view,
    cell_filename,
    describe_variables,
    format_cell_error,
    make_builtins,
    require_prompt_list,
    resolve_final_value,
    restore_namespace,
    unbound_final_var,
)
from rlm.environments.output_capture import capture
from rlm.environments.subcall_relay import Outcome, SubcallFn, SubcallRelay
from rlm.environments.subcall_relay import outcome_text as _text

if TYPE_CHECKING:
    from rlm.base.ports import SubcallRoute


class LocalREPL(NonIsolatedEnv):
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
    with the worker environments' policy and format (``rlm.environments.local_snapshot``).
    A blob written by a less trusted environment (an isolated worker, an IPython kernel)
    is not loaded unless ``trust_snapshots=True``: it would run that code here.
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
        validate_custom_tools(custom_tools)
        # Routing and error texts are shared with the worker environments' relay.
        self._relay = SubcallRelay(
            depth,
            max_concurrent_subcalls,
            lm_route,
            lm_handler_address,
            lm_handler_token,
            subcall_fn,
        )
        self.compaction = compaction
        self.custom_tools: dict[str, Any] = dict(custom_tools or {})
        self.custom_sub_tools = (
            custom_sub_tools if custom_sub_tools is not None else self.custom_tools
        )
        self.temp_dir = tempfile.mkdtemp(prefix="rlmx_repl_")
        # Removes temp_dir on cleanup(), on garbage collection or at exit, whichever first.
        self._remove_temp_dir = weakref.finalize(self, shutil.rmtree, self.temp_dir, True)
        self._lock = threading.RLock()
        self._inputs = Inputs(compaction)
        self._sources: dict[str, str] = {}
        self._cell_count = 0
        self._cell = CellRecord()
        self._closed = False
        self.setup()
        self._snapshots = LocalSnapshots(
            LocalNamespace(self.globals, self.locals, self._inputs, self._sources, self._restore),
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
        self._scaffold: dict[str, Any] = {
            "llm_query": self._llm_query,
            "llm_query_batched": self._llm_query_batched,
            "rlm_query": self._rlm_query,
            "rlm_query_batched": self._rlm_query_batched,
            "SHOW_VARS": self._show_vars,
            "FINAL_VAR": self._final_var,
            "budget": self._budget,
            **{name: value for name, value in tools.items() if callable(value)},
        }
        self._builtins = make_builtins(self.temp_dir)
        self.globals: dict[str, Any] = {"__builtins__": self._builtins, "__name__": "__main__"}
        self.globals.update({n: v for n, v in tools.items() if not callable(v)})
        self.globals["answer"] = AnswerDict(self._on_answer_ready)
        self.locals = UserView(self.globals, frozenset(self._scaffold))
        self._restore()

    def _restore(self) -> None:
        """Undo model rebinding of scaffold names and of the read-only inputs."""
        restore_namespace(
            self.globals,
            self._scaffold,
            self._builtins,
            self._inputs,
            self._cell,
            self._on_answer_ready,
        )

    def _on_answer_ready(self, content: Any) -> None:
        self._cell.final_answer = str(content)

    def _show_vars(self) -> str:
        """List the variables you have created, with their types."""
        return describe_variables(self.locals)

    def _final_var(self, name_or_value: Any) -> str:
        """Submit the final answer: the named variable's value, or the value itself."""
        answer = resolve_final_value(self.locals, name_or_value)
        if answer is None:  # an error the model sees (stderr), and nothing submitted
            message = unbound_final_var(self.locals, name_or_value)
            print(message, file=sys.stderr)
            return message
        self._cell.final_answer = answer
        return answer

    def _budget(self) -> dict[str, Any]:
        """What remains of this run's limits: calls, tokens, usd, seconds (None: no limit)."""
        route = self.lm_route
        return budget_view(route.remaining() if route is not None else None)

    def load_context(self, context_payload: Any) -> None:
        self.add_context(context_payload, 0)

    def reset_answer(self) -> None:
        with self._lock:
            self.globals["answer"] = AnswerDict(self._on_answer_ready)

    def lookup_variable(self, name: str) -> str | None:
        if name not in self.locals:
            return None
        return str(self.locals[name])

    def set_variable(self, name: str, value: Any) -> None:
        """Bind ``name`` in the namespace (e.g. the engine's ``final_answer_N``)."""
        if not name.isidentifier() or name in self._scaffold:
            raise ValueError(f"Cannot bind {name!r} in the REPL namespace")
        self.globals[name] = value

    # -- execution ---------------------------------------------------------------

    def execute_code(self, code: str) -> REPLResult:
        started = time.perf_counter()
        with self._lock:
            if self._closed:
                raise RuntimeError("LocalREPL has been cleaned up")
            self._cell_count += 1
            filename = cell_filename(self._cell_count)
            self._sources[filename] = code
            cell, outer = CellRecord(), self._cell  # outer: a cell that re-entered us
            self._cell = cell
            try:
                with capture() as (out, err):
                    try:
                        exec(compile(code, filename, "exec"), self.globals)
                    except KeyboardInterrupt:
                        raise  # the engine turns it into a CancellationError
                    except BaseException as exc:  # SystemExit too: it ends only the cell
                        if err.tell() and not err.getvalue().endswith("\n"):
                            err.write("\n")
                        err.write(format_cell_error(exc, self._sources))
                    finally:
                        self._restore()
                        self._snapshots.namespace.record_defs(code, self._cell_count)
            finally:
                self._cell = outer
            return REPLResult(
                stdout=out.getvalue(),
                stderr=err.getvalue(),
                locals=self.locals.copy(),
                execution_time=time.perf_counter() - started,
                rlm_calls=list(cell.calls),
                final_answer=cell.final_answer,
            )

    # -- LM sub-calls (REPL functions) ---------------------------------------------

    def _llm_query(self, prompt: Prompt, model: str | None = None) -> str:
        """Ask a language model one prompt (a plain completion: no REPL, no recursion).
        Returns the reply, or a string starting with "Error: "."""
        cell = self._cell
        return self._deliver(cell, [self._complete(prompt, model)])[0]

    def _llm_query_batched(self, prompts: list[Prompt], model: str | None = None) -> list[str]:
        """Ask a language model several prompts concurrently. Returns the replies in
        prompt order; a failed prompt's reply starts with "Error: "."""
        prompts = require_prompt_list(prompts, "llm_query_batched")
        cell = self._cell
        return self._deliver(cell, self._complete_many(prompts, model))

    def _rlm_query(self, prompt: str, model: str | None = None) -> str:
        """Hand a subtask to a child RLM with its own REPL (a plain llm_query when
        recursion is not available). Returns its answer, or "Error: ..."."""
        if self.subcall_fn is None:
            return self._llm_query(prompt, model)
        cell = self._cell
        return self._deliver(cell, [self._subcall(prompt, model)])[0]

    def _rlm_query_batched(self, prompts: list[str], model: str | None = None) -> list[str]:
        """rlm_query for several prompts, run concurrently. Answers in prompt order."""
        prompts = require_prompt_list(prompts, "rlm_query_batched")
        if self.subcall_fn is None:
            return self._llm_query_batched(list(prompts), model)
        cell = self._cell
        if len(prompts) <= 1:
            return self._deliver(cell, [self._subcall(p, model) for p in prompts])
        workers = max(1, min(self.max_concurrent_subcalls, len(prompts)))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rlm-subcall")
        try:
            # Each task runs in a copy of this context, so its output lands in this cell.
            futures = [
                pool.submit(contextvars.copy_context().run, self._subcall, p, model)
                for p in prompts
            ]
            outcomes = [f.result() for f in futures]
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return self._deliver(cell, outcomes)

    @staticmethod
    def _deliver(cell: CellRecord, outcomes: list[Outcome]) -> list[str]:
        cell.record([o for o in outcomes if isinstance(o, RLMChatCompletion)])
        return [_text(o) for o in outcomes]

    def _subcall(self, prompt: str, model: str | None) -> Outcome:
        return self._relay._subcall(prompt, model)

    def _complete(self, prompt: Prompt, model: str | None) -> Outcome:
        return self._relay._complete(prompt, model)

    def _complete_many(self, prompts: list[Prompt], model: str | None) -> list[Outcome]:
        return self._relay._complete_many(prompts, model)

    # -- routing state, kept under the rlms attribute names --------------------------

    @property
    def lm_handler_address(self) -> tuple[str, int] | None:
        return self._relay.lm_handler_address

    @lm_handler_address.setter
    def lm_handler_address(self, address: tuple[str, int] | None) -> None:
        self._relay.lm_handler_address = address  # the relay reconnects on change

    @property
    def lm_handler_token(self) -> str | None:
        return self._relay.lm_handler_token

    @property
    def lm_route(self) -> SubcallRoute | None:
        return self._relay.lm_route

    @lm_route.setter
    def lm_route(self, route: SubcallRoute | None) -> None:
        self._relay.lm_route = route

    @property
    def subcall_fn(self) -> SubcallFn | None:
        return self._relay.subcall_fn

    @subcall_fn.setter
    def subcall_fn(self, fn: SubcallFn | None) -> None:
        self._relay.subcall_fn = fn

    # -- SupportsPersistence ---------------------------------------------------------

    def update_handler_address(self, address: tuple[str, int]) -> None:
        self.lm_handler_address = address  # the relay opens a new connection on change

    def add_context(self, context_payload: Any, context_index: int | None = None) -> int:
        # Containers are copied so the caller can keep mutating its own object.
        value = (
            copy.deepcopy(context_payload)
            if isinstance(context_payload, dict | list)
            else context_payload
        )
        with self._lock:
            index = self._inputs.add_context(value, context_index)
            self._inputs.bind(self.globals)
        return index

    def get_context_count(self) -> int:
        return self._inputs.context_count

    def add_history(
        self, message_history: list[dict[str, Any]], history_index: int | None = None
    ) -> int:
        value = copy.deepcopy(message_history)
        with self._lock:
            index = self._inputs.add_history(value, history_index)
            self._inputs.bind(self.globals)
        return index

    def get_history_count(self) -> int:
        return self._inputs.history_count

    def append_compaction_entry(self, entry: list[dict[str, Any]] | dict[str, Any]) -> None:
        """Append a trajectory segment or a summary to ``history`` (compaction mode)."""
        if self._inputs.compaction_history is not None:
            self._inputs.compaction_history.append(copy.deepcopy(entry))

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
            self._cell_count = max(self._cell_count, self._snapshots.namespace.last_cell)
            return lost

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
            self._cell_count = max(self._cell_count, self._snapshots.namespace.last_cell)
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
        self._remove_temp_dir()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
