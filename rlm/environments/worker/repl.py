"""The worker's REPL: one persistent namespace with LocalREPL's semantics.

The namespace mechanics (``answer``, versioned inputs, user view, builtins, cell
tracebacks) come from ``rlm.environments.namespace``, the module LocalREPL uses too;
this module adds what is specific to running in a worker: the namespace is the
``__dict__`` of a ``__main__`` module (so ``pickle`` finds cell-defined functions and
classes by reference), sub-calls go to the host through ``ask``, top-level
``def``/``class`` statements are recorded with their source for snapshots, and
custom tools arrive as values or as source code.

Standard library only, Python 3.9 compatible.
"""

from __future__ import annotations

import ast
import reprlib
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
from rlm.environments.worker.capture import Capture

# ask(op, prompts, model) -> one reply text per prompt; op is "llm", "llm_batched",
# "rlm" or "rlm_batched" (the host mirrors LocalREPL's error texts for each).
# Spelled without ``X | None``: this alias is evaluated, and the worker runs on 3.9.
Ask = Callable[[str, list[Any], Any], list[str]]

_EXACT_TYPES = (type(None), bool, int, float)
_EXACT_STR_MAX = 200


@dataclass
class DefRecord:
    """A function or class bound by a top-level ``def``/``class`` of a cell."""

    obj: Any  # held so its id() cannot be reused while recorded
    name: str
    source: str
    cell: int
    line: int


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


class WorkerRepl:
    """The namespace and its cells. Not thread-safe: the worker's main thread owns it."""

    def __init__(
        self,
        ask: Ask,
        output_limit: int,
        base_dir: str,
        compaction: bool,
        remaining: Callable[[], Any] = lambda: None,
    ) -> None:
        self._ask = ask
        self._remaining = remaining
        self.capture = Capture(output_limit)
        self.module = types.ModuleType("__main__")
        sys.modules["__main__"] = self.module
        self.ns: dict[str, Any] = self.module.__dict__
        self.builtins = make_builtins(base_dir)
        self.inputs = Inputs(compaction)
        self.sources: dict[str, str] = {}
        self.defs: dict[int, DefRecord] = {}
        self.cell = CellRecord()
        self.cell_number = 0
        self.running = False  # True only while cell code runs: interrupts land there
        self.tools: dict[str, Any] = {}
        self._base_scaffold: dict[str, Any] = {
            "llm_query": self._llm_query,
            "llm_query_batched": self._llm_query_batched,
            "rlm_query": self._rlm_query,
            "rlm_query_batched": self._rlm_query_batched,
            "SHOW_VARS": self._show_vars,
            "FINAL_VAR": self._final_var,
            "budget": self._budget,
        }
        self.scaffold = dict(self._base_scaffold)
        self.view = UserView(self.ns, frozenset(self.scaffold))
        self.ns["__builtins__"] = self.builtins
        self.ns["answer"] = AnswerDict(self._on_ready)
        self.restore_scaffold()

    # -- scaffold -------------------------------------------------------------------

    def restore_scaffold(self) -> None:
        """Undo cell rebinding of scaffold names and of the read-only inputs."""
        restore_namespace(
            self.ns, self.scaffold, self.builtins, self.inputs, self.cell, self._on_ready
        )

    def _on_ready(self, content: Any) -> None:
        self.cell.final_answer = str(content)

    def _show_vars(self) -> str:
        """List the variables you have created, with their types."""
        return describe_variables(self.view)

    def _final_var(self, name_or_value: Any) -> str:
        """Submit the final answer: the named variable's value, or the value itself."""
        answer = resolve_final_value(self.view, name_or_value)
        if answer is None:  # an error the model sees (stderr), and nothing submitted
            message = unbound_final_var(self.view, name_or_value)
            print(message, file=sys.stderr)
            return message
        self.cell.final_answer = answer
        return answer

    def _budget(self) -> dict[str, Any]:
        """What remains of this run's limits: calls, tokens, usd, seconds (None: no limit)."""
        remaining = self._remaining()
        return budget_view(remaining if isinstance(remaining, dict) else None)

    def _llm_query(self, prompt: Any, model: str | None = None) -> str:
        """Ask a language model one prompt (a plain completion: no REPL, no recursion).
        Returns the reply, or a string starting with "Error: "."""
        return self._ask("llm", [prompt], model)[0]

    def _llm_query_batched(self, prompts: list[Any], model: str | None = None) -> list[str]:
        """Ask a language model several prompts concurrently. Returns the replies in
        prompt order; a failed prompt's reply starts with "Error: "."""
        prompts = require_prompt_list(prompts, "llm_query_batched")
        return self._ask("llm_batched", prompts, model) if prompts else []

    def _rlm_query(self, prompt: str, model: str | None = None) -> str:
        """Hand a subtask to a child RLM with its own REPL (a plain llm_query when
        recursion is not available). Returns its answer, or "Error: ..."."""
        return self._ask("rlm", [prompt], model)[0]

    def _rlm_query_batched(self, prompts: list[Any], model: str | None = None) -> list[str]:
        """rlm_query for several prompts, run concurrently. Answers in prompt order."""
        prompts = require_prompt_list(prompts, "rlm_query_batched")
        return self._ask("rlm_batched", prompts, model) if prompts else []

    # -- tools ----------------------------------------------------------------------

    def define_tools(self, values: dict[str, Any], sources: dict[str, str]) -> dict[str, str]:
        """Bind value tools as variables and build function tools from source.
        Returns ``{name: error}`` for the sources that failed."""
        errors: dict[str, str] = {}
        for name, value in values.items():
            self.ns[name] = value
        for name, source in sources.items():
            try:
                self.tools[name] = self._build_tool(name, source)
            except BaseException as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"
        self.scaffold = {**self._base_scaffold, **self.tools}
        self.view = UserView(self.ns, frozenset(self.scaffold))
        self.restore_scaffold()
        return errors

    def _build_tool(self, name: str, source: str) -> Any:
        # Each tool gets globals of its own, like a function imported from a module.
        scope: dict[str, Any] = {"__builtins__": self.builtins, "__name__": f"tool_{name}"}
        filename = f"<tool-{name}>"
        tree = ast.parse(source, filename)
        if len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr):  # e.g. a lambda
            return eval(compile(ast.Expression(tree.body[0].value), filename, "eval"), scope)
        exec(compile(tree, filename, "exec"), scope)
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
        filename = cell_filename(cell)
        self.cell_number = cell
        self.sources[filename] = code
        self.cell = record = CellRecord()
        out, err = self.capture.start()
        try:
            try:
                compiled = compile(code, filename, "exec")
                self.running = True
                try:
                    exec(compiled, self.ns)
                finally:
                    self.running = False
            except BaseException as exc:  # SystemExit and interrupts end only the cell
                self.running = False
                if err.tell() and not err.getvalue().endswith("\n"):
                    err.write("\n")
                err.write(format_cell_error(exc, self.sources))
            finally:
                self.restore_scaffold()
                self._record_defs(code, cell)
        finally:
            self.capture.stop()
        return {
            "stdout": out.getvalue(),
            "stderr": err.getvalue(),
            "final_answer": record.final_answer,
            "vars": self.previews(),
            "time": time.perf_counter() - started,
        }

    def previews(self) -> dict[str, list[Any]]:
        return {name: preview(value) for name, value in self.view.items()}

    def _record_defs(self, code: str, cell: int) -> None:
        if "def" not in code and "class" not in code:
            return
        try:
            tree = ast.parse(code)
        except SyntaxError:
            return
        lines = code.splitlines(True)
        for node in tree.body:
            if not isinstance(node, _DEF_NODES):
                continue
            obj = self.ns.get(node.name)
            if not _defined_here(obj, node.name, cell_filename(cell)):
                continue
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            end = getattr(node, "end_lineno", None) or len(lines)
            source = "".join(lines[start - 1 : end])
            self.defs[id(obj)] = DefRecord(obj, node.name, source, cell, start)

    def define_from_source(self, record: DefRecord) -> Any:
        """Re-run a recorded ``def``/``class`` (for restore); returns the new object.
        It is compiled under its cell's file name and line, so tracebacks still match."""
        filename = cell_filename(record.cell)
        padded = "\n" * (record.line - 1) + record.source
        self._merge_source(filename, record.line, record.source)
        exec(compile(padded, filename, "exec"), self.ns)
        obj = self.ns[record.name]
        self.defs[id(obj)] = DefRecord(obj, record.name, record.source, record.cell, record.line)
        return obj

    def _merge_source(self, filename: str, line: int, source: str) -> None:
        # Several defs of one cell may be restored: lay each at its own lines.
        lines = self.sources.get(filename, "").splitlines(True)
        snippet = source.splitlines(True)
        lines += ["\n"] * max(0, line - 1 + len(snippet) - len(lines))
        lines[line - 1 : line - 1 + len(snippet)] = snippet
        self.sources[filename] = "".join(lines)

    # -- variables --------------------------------------------------------------------

    def lookup(self, name: str) -> str | None:
        if name not in self.view:
            return None
        return str(self.view[name])

    def set_variable(self, name: str, value: Any) -> None:
        if not name.isidentifier() or name in self.scaffold:
            raise ValueError(f"Cannot bind {name!r} in the REPL namespace")
        self.ns[name] = value

    def reset_answer(self) -> None:
        self.ns["answer"] = AnswerDict(self._on_ready)


_DEF_NODES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _defined_here(obj: Any, name: str, filename: str) -> bool:
    """Whether ``obj`` is what the top-level ``def``/``class name`` of ``filename`` made."""
    if isinstance(obj, types.FunctionType):
        return obj.__code__.co_filename == filename and obj.__name__ == name
    if isinstance(obj, type):
        return obj.__module__ == "__main__" and obj.__qualname__ == name
    return False
