"""The one REPL: a persistent namespace, its scaffold functions, and how a cell runs.

``LocalREPL`` (in the host process) and ``WorkerRepl`` (``repl``, inside a worker) are
both a ``ReplCore``, so they share every rule the model can observe: the scaffold
(``llm_query``, ``llm_query_batched``, ``rlm_query``, ``rlm_query_batched``,
``SHOW_VARS``, ``FINAL_VAR``, ``budget``) and the ``answer`` dict; read-only
``context_N``/``history_N`` inputs; a cell whose error ends only that cell and is shown
as a traceback of cell frames; scaffold names, builtins and inputs put back after every
cell; and the recorded source of each top-level ``def``/``class``, which snapshots
replay. The owner supplies what differs:

* ``_ask(op, prompts, model, schema)``: one reply text per prompt (``op`` is ``llm``,
  ``llm_batched``, ``rlm`` or ``rlm_batched``; ``schema``: a typed ``llm_query``'s
  ``{"name", "schema"}``, else None), from wherever sub-calls go;
* ``_remaining()``: the run's remaining limits, for ``budget()``;
* ``_exec(code, filename)``: runs one cell's code in ``globals``;
* ``_ends_cell(exc)`` and ``_describe_error(exc)``: which exceptions end only the cell
  (the rest propagate), and what the model is told about one.

An owner calls ``_open`` once (its namespace, base directory and inputs), then
``run_cell`` per cell with the buffer its stderr goes to.

Standard library only, Python 3.9 compatible: the worker imports it without the rest
of ``rlm``.
"""

from __future__ import annotations

import ast
import sys
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from rlm.environments.worker.images import batch_with_images, with_images
from rlm.environments.worker.namespace import (
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
from rlm.environments.worker.typed_query import TypedQuery

_DEF_NODES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


class TextBuffer(Protocol):
    """Where a cell's stderr is collected (``io.StringIO``, the worker's ``CappedText``)."""

    def write(self, text: str) -> int: ...

    def tell(self) -> int: ...

    def getvalue(self) -> str: ...


@dataclass
class DefRecord:
    """A function or class bound by a top-level ``def``/``class`` of a cell."""

    obj: Any  # held so its id() cannot be reused while recorded
    name: str
    source: str
    cell: int
    line: int


class ReplCore:
    """A namespace and its cells (see the module docstring). Not thread-safe: owners
    serialise ``run_cell`` and the calls that change the namespace."""

    globals: dict[str, Any]  # the namespace cells run in
    locals: UserView  # the user's variables: ``globals`` without dunders and scaffold
    builtins: dict[str, Any]
    scaffold: dict[str, Any]  # put back after every cell: functions and callable tools
    inputs: Inputs
    base_dir: str | Callable[[], str]  # relative paths (open, images) resolve here
    sources: dict[str, str]  # cell file name -> code, for tracebacks and restores
    defs: dict[int, DefRecord]  # id(obj) -> its top-level def/class
    cell: CellRecord  # the cell being run (its sub-calls and submitted answer)

    def _open(
        self,
        namespace: dict[str, Any],
        base_dir: str | Callable[[], str],
        inputs: Inputs,
        functions: Mapping[str, Any] | None = None,
    ) -> None:
        """Make ``namespace`` this REPL's: builtins whose relative ``open`` paths resolve
        against ``base_dir``, ``answer``, ``inputs`` and the scaffold (plus
        ``functions``, e.g. callable tools)."""
        self.globals = namespace
        self.base_dir = base_dir  # where relative image paths resolve, as open()'s do
        self.inputs = inputs
        self.sources = {}
        self.defs = {}
        self.cell = CellRecord()
        self.builtins = make_builtins(base_dir)
        namespace["__builtins__"] = self.builtins
        namespace["answer"] = AnswerDict(self._on_answer_ready)
        self.set_functions(functions or {})

    def set_functions(self, functions: Mapping[str, Any]) -> None:
        """The scaffold: the REPL's own functions, then ``functions`` (custom tools)."""
        self.scaffold = {
            "llm_query": self._llm_query,
            "llm_query_batched": self._llm_query_batched,
            "rlm_query": self._rlm_query,
            "rlm_query_batched": self._rlm_query_batched,
            "SHOW_VARS": self._show_vars,
            "FINAL_VAR": self._final_var,
            "budget": self._budget,
            **functions,
        }
        self.locals = UserView(self.globals, frozenset(self.scaffold))
        self.restore_scaffold()

    def restore_scaffold(self) -> None:
        """Undo cell rebinding of scaffold names, builtins, ``answer`` and the inputs."""
        restore_namespace(
            self.globals,
            self.scaffold,
            self.builtins,
            self.inputs,
            self.cell,
            self._on_answer_ready,
        )

    # -- what the owner supplies ---------------------------------------------------------

    def _ask(self, op: str, prompts: list[Any], model: str | None, schema: Any) -> list[str]:
        """One reply text per prompt; failures are ``"Error: ..."`` texts."""
        raise NotImplementedError

    def _remaining(self) -> Mapping[str, Any] | None:
        """What remains of the run's limits (None: unknown)."""
        return None

    def _exec(self, code: str, filename: str) -> None:
        exec(compile(code, filename, "exec", dont_inherit=True), self.globals)

    def _ends_cell(self, exc: BaseException) -> bool:
        """Whether ``exc`` ends only the cell (``SystemExit`` included); else it propagates."""
        return True

    def _describe_error(self, exc: BaseException) -> str:
        return format_cell_error(exc, self.sources)

    # -- cells -----------------------------------------------------------------------------

    def run_cell(self, code: str, number: int, err: TextBuffer) -> None:
        """Run ``code`` as cell ``number``: an error that ends the cell is written to
        ``err``; the scaffold is put back and top-level definitions are recorded after."""
        filename = cell_filename(number)
        self.sources[filename] = code
        try:
            self._exec(code, filename)
        except BaseException as exc:
            if not self._ends_cell(exc):
                raise
            if err.tell() and not err.getvalue().endswith("\n"):
                err.write("\n")
            err.write(self._describe_error(exc))
        finally:
            self.restore_scaffold()
            self.record_defs(self.sources[filename], number)

    # -- the scaffold (the model calls these) -------------------------------------------------

    def _on_answer_ready(self, content: Any) -> None:
        self.cell.final_answer = str(content)

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
        self.cell.final_answer = answer
        return answer

    def _budget(self) -> dict[str, Any]:
        """What remains of this run's limits: calls, tokens, usd, seconds (None: no limit)."""
        remaining = self._remaining()
        return budget_view(remaining if isinstance(remaining, Mapping) else None)

    def _llm_query(
        self, prompt: Any, model: str | None = None, images: Any = None, schema: Any = None
    ) -> Any:
        """Ask a language model one prompt (a plain completion: no REPL, no recursion).
        ``images``: file paths, bytes, PIL images or http(s)/data: URLs, for a model
        with vision. ``schema``: a Pydantic model, TypedDict, dataclass, type hint or
        JSON Schema dict; the reply is then a value of that type, checked (and asked
        again with the errors) by the engine. Returns the reply, or a string starting
        with "Error: " (with ``schema``, a ``QueryError``)."""
        typed = TypedQuery.of(schema) if schema is not None else None
        if images is not None:
            prompt = with_images(prompt, images, self.base_dir)
        if typed is None:
            return self._ask("llm", [prompt], model, None)[0]
        return typed.result(self._ask("llm", [prompt], model, typed.wire)[0])

    def _llm_query_batched(
        self,
        prompts: list[Any],
        model: str | None = None,
        images: Any = None,
        schema: Any = None,
    ) -> list[Any]:
        """Ask a language model several prompts concurrently; ``images``, if given, has
        one list of images per prompt; ``schema`` as for ``llm_query``, for every prompt.
        Returns the replies in prompt order; a failed prompt's reply starts with
        "Error: " (with ``schema``, a ``QueryError``)."""
        prompts = require_prompt_list(prompts, "llm_query_batched")
        typed = TypedQuery.of(schema) if schema is not None else None
        if images is not None:
            prompts = batch_with_images(prompts, images, self.base_dir)
        if not prompts:
            return []
        if typed is None:
            return self._ask("llm_batched", prompts, model, None)
        return [typed.result(t) for t in self._ask("llm_batched", prompts, model, typed.wire)]

    def _rlm_query(self, prompt: str, model: str | None = None) -> str:
        """Hand a subtask to a child RLM with its own REPL (a plain llm_query when
        recursion is not available). Returns its answer, or "Error: ..."."""
        return self._ask("rlm", [prompt], model, None)[0]

    def _rlm_query_batched(self, prompts: list[Any], model: str | None = None) -> list[str]:
        """rlm_query for several prompts, run concurrently. Answers in prompt order."""
        prompts = require_prompt_list(prompts, "rlm_query_batched")
        return self._ask("rlm_batched", prompts, model, None) if prompts else []

    # -- variables -------------------------------------------------------------------------

    def lookup_variable(self, name: str) -> str | None:
        """``str()`` of a user variable, or None if it is not bound."""
        if name not in self.locals:
            return None
        return str(self.locals[name])

    def set_variable(self, name: str, value: Any) -> None:
        """Bind ``name`` in the namespace (e.g. the engine's ``final_answer_N``)."""
        if not name.isidentifier() or name in self.scaffold:
            raise ValueError(f"Cannot bind {name!r} in the REPL namespace")
        self.globals[name] = value

    def reset_answer(self) -> None:
        """A fresh ``answer`` dict (at the start of a turn)."""
        self.globals["answer"] = AnswerDict(self._on_answer_ready)

    # -- top-level definitions (what snapshots replay) ------------------------------------------

    def record_defs(self, code: str, cell: int) -> None:
        """Remember the source of the cell's top-level ``def``/``class`` statements."""
        if "def" not in code and "class" not in code:
            return
        try:
            self._record_defs(code, cell)
        except Exception:  # a SyntaxError, or ValueError for NUL bytes: nothing was defined
            return

    def _record_defs(self, code: str, cell: int) -> None:
        tree = ast.parse(code)
        lines = code.splitlines(True)
        for node in tree.body:
            if not isinstance(node, _DEF_NODES):
                continue
            obj = self.globals.get(node.name)
            if not _defined_here(obj, node.name, cell_filename(cell)):
                continue
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            end = getattr(node, "end_lineno", None) or len(lines)
            source = "".join(lines[start - 1 : end])
            self.defs[id(obj)] = DefRecord(obj, node.name, source, cell, start)

    @property
    def last_cell(self) -> int:
        """The highest cell number a recorded or restored definition belongs to."""
        return max((record.cell for record in self.defs.values()), default=0)

    def define_from_source(self, record: DefRecord) -> Any:
        """Re-run a recorded ``def``/``class`` (for restore); returns the new object.
        It is compiled under its cell's file name and line, so tracebacks still match."""
        filename = cell_filename(record.cell)
        padded = "\n" * (record.line - 1) + record.source
        self._merge_source(filename, record.line, record.source)
        exec(compile(padded, filename, "exec", dont_inherit=True), self.globals)
        obj = self.globals[record.name]
        self.defs[id(obj)] = DefRecord(obj, record.name, record.source, record.cell, record.line)
        return obj

    def _merge_source(self, filename: str, line: int, source: str) -> None:
        # Several defs of one cell may be restored: lay each at its own lines.
        lines = self.sources.get(filename, "").splitlines(True)
        snippet = source.splitlines(True)
        lines += ["\n"] * max(0, line - 1 + len(snippet) - len(lines))
        lines[line - 1 : line - 1 + len(snippet)] = snippet
        self.sources[filename] = "".join(lines)


def _defined_here(obj: Any, name: str, filename: str) -> bool:
    """Whether ``obj`` is what the top-level ``def``/``class name`` of ``filename`` made."""
    if isinstance(obj, types.FunctionType):
        return obj.__code__.co_filename == filename and obj.__name__ == name
    if isinstance(obj, type):
        return obj.__module__ == "__main__" and obj.__qualname__ == name
    return False
