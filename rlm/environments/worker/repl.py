"""The worker's REPL: the one REPL core (``repl_core``), run inside a worker process.

What is specific to running in a worker: the namespace is the ``__dict__`` of a
``__main__`` module (so ``pickle`` finds cell-defined functions and classes by
reference), output is captured with a cap (``capture``), sub-calls go to the host
through ``ask``, cells can be interrupted only while their code runs (``running``),
custom tools arrive as values or as source code, and the host is sent previews of the
variables rather than the values.

Standard library only, Python 3.9 compatible.
"""

from __future__ import annotations

import ast
import reprlib
import sys
import time
import types
from collections.abc import Callable, Mapping
from typing import Any

from rlm.environments.worker.capture import Capture
from rlm.environments.worker.namespace import AnswerDict, CellRecord, Inputs
from rlm.environments.worker.repl_core import ReplCore

# ask(op, prompts, model) -> one reply text per prompt; op is "llm", "llm_batched",
# "rlm" or "rlm_batched" (the host mirrors LocalREPL's error texts for each).
# Spelled without ``X | None``: this alias is evaluated, and the worker runs on 3.9.
Ask = Callable[[str, list[Any], Any, Any], list[str]]

_EXACT_TYPES = (type(None), bool, int, float)
_EXACT_STR_MAX = 200
_DEF_NODES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


class _Preview(reprlib.Repr):
    """Short reprs of builtin values; other objects are not asked to repr themselves
    (their ``__repr__`` is cell code, and may hang or raise)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxstring = self.maxother = 120
        self.maxlevel = 3

    def repr_instance(self, obj: Any, level: int) -> str:
        if type(obj).__module__ == "builtins":
            return super().repr_instance(obj, level)
        return f"<{type(obj).__name__} object>"


_preview = _Preview()


def preview(value: Any) -> list[Any]:
    """``[type name, preview, exact]``: ``exact`` says the preview *is* the value."""
    if isinstance(value, AnswerDict):  # shown as the plain dict it pretends to be
        value = dict(value)
    kind = type(value)
    if kind in _EXACT_TYPES or (kind is str and len(value) <= _EXACT_STR_MAX):
        return [kind.__name__, value, True]
    try:
        text = _preview.repr(value)
    except Exception:
        text = f"<{kind.__name__} object>"
    return [kind.__name__, text, False]


class WorkerRepl(ReplCore):
    """The namespace and its cells. Not thread-safe: the worker's main thread owns it."""

    def __init__(
        self,
        ask: Ask,
        output_limit: int,
        base_dir: str,
        compaction: bool,
        remaining: Callable[[], Any] = lambda: None,
    ) -> None:
        self._ask_host = ask
        self._remaining_host = remaining
        self.capture = Capture(output_limit)
        self.module = types.ModuleType("__main__")
        sys.modules["__main__"] = self.module
        self.cell_number = 0
        self.running = False  # True only while cell code runs: interrupts land there
        self.stop_before = 0  # a cell interrupted before it started (set by the reader)
        self.tools: dict[str, Any] = {}
        self._open(self.module.__dict__, base_dir, Inputs(compaction))

    def _ask(self, op: str, prompts: list[Any], model: str | None, schema: Any) -> list[str]:
        return self._ask_host(op, prompts, model, schema)

    def _remaining(self) -> Mapping[str, Any] | None:
        remaining = self._remaining_host()
        return remaining if isinstance(remaining, dict) else None

    # -- tools ----------------------------------------------------------------------

    def define_tools(self, values: dict[str, Any], sources: dict[str, str]) -> dict[str, str]:
        """Bind value tools as variables and build function tools from source.
        Returns ``{name: error}`` for the sources that failed."""
        errors: dict[str, str] = {}
        for name, value in values.items():
            self.globals[name] = value
        for name, source in sources.items():
            try:
                self.tools[name] = self._build_tool(name, source)
            except BaseException as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"
        self.set_functions(self.tools)
        return errors

    def _build_tool(self, name: str, source: str) -> Any:
        # Each tool gets globals of its own, like a function imported from a module.
        scope: dict[str, Any] = {"__builtins__": self.builtins, "__name__": f"tool_{name}"}
        filename = f"<tool-{name}>"
        tree = ast.parse(source, filename)
        if len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr):  # e.g. a lambda
            return eval(
                compile(ast.Expression(tree.body[0].value), filename, "eval", dont_inherit=True),
                scope,
            )
        exec(compile(tree, filename, "exec", dont_inherit=True), scope)
        if name in scope:
            return scope[name]
        defined = [n.name for n in tree.body if isinstance(n, _DEF_NODES)]
        if not defined:
            raise ValueError(f"the source of tool {name!r} defines no function or class")
        return scope[defined[-1]]

    # -- cells ----------------------------------------------------------------------

    def execute(self, code: str, cell: int) -> dict[str, Any]:
        """Run one cell; returns its stdout, stderr, final answer and variables."""
        started = time.perf_counter()
        self.cell_number = cell
        self.cell = record = CellRecord()
        out, err = self.capture.start()
        try:
            self.run_cell(code, cell, err)
        finally:
            self.capture.stop()
        return {
            "stdout": out.getvalue(),
            "stderr": err.getvalue(),
            "final_answer": record.final_answer,
            "vars": self.previews(),
            "time": time.perf_counter() - started,
        }

    def _exec(self, code: str, filename: str) -> None:
        # Interrupts and everything else end only the cell (ReplCore._ends_cell).
        compiled = compile(code, filename, "exec", dont_inherit=True)
        self.running = True
        try:
            if self.stop_before == self.cell_number:  # interrupted before it could start
                raise KeyboardInterrupt
            exec(compiled, self.globals)
        finally:
            self.running = False

    def previews(self) -> dict[str, list[Any]]:
        return {name: preview(value) for name, value in self.locals.items()}
