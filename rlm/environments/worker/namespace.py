"""Mechanics of a REPL namespace: the ``answer`` dict, the user-variable view, builtins,
``SHOW_VARS``/``FINAL_VAR`` helpers and cell tracebacks.

The REPL core (``repl_core``) is built on these, in the worker and in LocalREPL alike.
Standard library only and Python 3.9 compatible, on purpose: the worker imports this
module without the rest of ``rlm``.
"""

from __future__ import annotations

import builtins
import functools
import os
import threading
import traceback
from collections.abc import Callable, Container, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

CELL_FILENAME_PREFIX = "<repl-cell-"

AnswerCallback = Callable[[Any], None]


def cell_filename(number: int) -> str:
    """The pseudo file name a cell is compiled under (it marks the cell's frames)."""
    return f"{CELL_FILENAME_PREFIX}{number}>"


def is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


@dataclass
class CellRecord:
    """What one cell collects while it runs: its sub-call completions and the final
    answer it submitted (``answer["ready"]``, ``FINAL_VAR``)."""

    calls: list[Any] = field(default_factory=list)
    final_answer: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, completions: list[Any]) -> None:
        with self.lock:  # sub-calls may finish on worker threads
            self.calls.extend(completions)


def require_prompt_list(prompts: Any, fn: str) -> list[Any]:
    """``prompts`` if it is a list; a bare string would otherwise be fanned out per
    character."""
    if not isinstance(prompts, list):
        raise TypeError(f"{fn}() expects a list of prompts, got {type(prompts).__name__}")
    return prompts


# ---------------------------------------------------------------------------
# answer
# ---------------------------------------------------------------------------


class AnswerDict(dict[str, Any]):
    """The REPL's ``answer``: a plain-looking dict that reports its ``content`` to
    ``on_ready`` whenever ``ready`` is set truthy, so nobody has to poll it."""

    def __init__(self, on_ready: AnswerCallback | None = None) -> None:
        super().__init__(content="", ready=False)
        self._on_ready = on_ready

    def _notify(self) -> None:
        if self.get("ready") and self._on_ready is not None:
            self._on_ready(self.get("content", ""))

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        if key == "ready":
            self._notify()

    def update(self, *args: Any, **kwargs: Any) -> None:
        changes = dict(*args, **kwargs)
        super().update(changes)
        if "ready" in changes:
            self._notify()

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key in self:
            return self[key]
        self[key] = default
        return default

    def __ior__(self, other: Any) -> AnswerDict:  # type: ignore[override,misc]
        self.update(other)
        return self

    # Copies and pickles are plain dicts: the callback (bound to an env) must not
    # travel with them, or deepcopy would clone the whole environment.
    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (dict(self),))


def adopt_answer(current: Any, on_ready: AnswerCallback) -> tuple[AnswerDict, str | None]:
    """After a cell: the ``AnswerDict`` to bind as ``answer``, and the answer submitted
    by rebinding ``answer`` to a plain mapping whose ``ready`` is truthy (else ``None``)."""
    if isinstance(current, AnswerDict):
        return current, None
    fresh = AnswerDict(on_ready)
    submitted = None
    if isinstance(current, Mapping):
        dict.update(fresh, current)
        if current.get("ready"):
            submitted = str(current.get("content", ""))
    return fresh, submitted


# ---------------------------------------------------------------------------
# Read-only inputs
# ---------------------------------------------------------------------------


def _next_slot(store: dict[int, Any], value: Any, index: int | None) -> int:
    if index is None:
        index = max(store, default=-1) + 1
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise ValueError(f"index must be a non-negative int, got {index!r}")
    store[index] = value
    return index


class Inputs:
    """Host-side references of the versioned bindings ``context_N``/``history_N``.
    ``bind`` rebinds them (and the ``context``/``history`` aliases) after every cell,
    so model code cannot rebind them for good."""

    def __init__(self, compaction: bool = False) -> None:
        self.contexts: dict[int, Any] = {}
        self.histories: dict[int, Any] = {}
        # In compaction mode ``history`` is this list, which the engine appends to.
        self.compaction_history: list[Any] | None = [] if compaction else None

    def add_context(self, value: Any, index: int | None = None) -> int:
        return _next_slot(self.contexts, value, index)

    def add_history(self, value: Any, index: int | None = None) -> int:
        return _next_slot(self.histories, value, index)

    @property
    def context_count(self) -> int:
        return max(self.contexts, default=-1) + 1

    @property
    def history_count(self) -> int:
        return max(self.histories, default=-1) + 1

    def bind(self, ns: dict[str, Any]) -> None:
        for index, value in self.contexts.items():
            ns[f"context_{index}"] = value
        if 0 in self.contexts:
            ns["context"] = self.contexts[0]
        for index, value in self.histories.items():
            ns[f"history_{index}"] = value
        if self.compaction_history is not None:
            ns["history"] = self.compaction_history
        elif 0 in self.histories:
            ns["history"] = self.histories[0]


# ---------------------------------------------------------------------------
# User variables
# ---------------------------------------------------------------------------


class UserView(MutableMapping[str, Any]):
    """A live view of the user's variables in ``namespace``: everything except dunder
    names (``__builtins__`` included) and the ``hidden`` scaffold names."""

    def __init__(self, namespace: dict[str, Any], hidden: Container[str]) -> None:
        self._ns = namespace
        self._hidden = hidden

    def _visible(self, name: object) -> bool:
        return isinstance(name, str) and not is_dunder(name) and name not in self._hidden

    def __getitem__(self, name: str) -> Any:
        if not self._visible(name):
            raise KeyError(name)
        return self._ns[name]

    def __setitem__(self, name: str, value: Any) -> None:
        if not self._visible(name):
            raise KeyError(f"{name!r} is managed by the REPL and cannot be set here")
        self._ns[name] = value

    def __delitem__(self, name: str) -> None:
        if not self._visible(name):
            raise KeyError(name)
        del self._ns[name]

    def __contains__(self, name: object) -> bool:
        return self._visible(name) and name in self._ns

    def __iter__(self) -> Iterator[str]:
        # Iterate a snapshot: another thread (or the cell) may bind names meanwhile.
        return (name for name in list(self._ns) if self._visible(name))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def copy(self) -> dict[str, Any]:
        """A shallow plain-dict copy (of a snapshot: one pass, as every cell's result
        carries one)."""
        # ``_visible``, inlined (this runs for every name of every cell), the scaffold
        # names first: they are most of the namespace and one lookup rules each out.
        hidden = self._hidden
        return {
            name: value
            for name, value in list(self._ns.items())
            if name not in hidden
            and isinstance(name, str)
            and not (name.startswith("__") and name.endswith("__"))
        }

    def __repr__(self) -> str:
        return f"UserView({self.copy()!r})"


def describe_variables(variables: Mapping[str, Any]) -> str:
    """``SHOW_VARS()`` text: each user variable with its type name."""
    shown = {
        name: type(value).__name__
        for name, value in variables.items()
        if not name.startswith("_") and name != "answer" and not isinstance(value, ModuleType)
    }
    if not shown:
        return "No variables created yet. Use ```repl``` blocks to create variables."
    return f"Available variables: {shown}"


def restore_namespace(
    ns: dict[str, Any],
    scaffold: Mapping[str, Any],
    builtins: dict[str, Any],
    inputs: Inputs,
    cell: CellRecord,
    on_ready: AnswerCallback,
) -> None:
    """After a cell: undo rebinding of scaffold names, builtins, ``answer`` and the
    read-only inputs; an answer submitted by rebinding ``answer`` lands in ``cell``."""
    ns.update(scaffold)
    ns["__builtins__"] = builtins
    current = ns.get("answer")
    if not isinstance(current, AnswerDict):  # rebound by the cell (else: left as it is)
        answer, submitted = adopt_answer(current, on_ready)
        ns["answer"] = answer
        if submitted is not None and cell.final_answer is None:
            cell.final_answer = submitted
    inputs.bind(ns)


def resolve_final_value(variables: Mapping[str, Any], name_or_value: Any) -> str | None:
    """``FINAL_VAR``'s answer: the named variable's ``str()`` if ``name_or_value`` is a
    bound name; ``None`` if it is a name that is not bound (nothing is submitted: see
    ``unbound_final_var``); else ``str(name_or_value)``, a value passed directly."""
    if isinstance(name_or_value, str):
        name = name_or_value.strip().strip("\"'")
        if name.isidentifier():
            return str(variables[name]) if name in variables else None
    return str(name_or_value)


def unbound_final_var(variables: Mapping[str, Any], name: Any) -> str:
    """What ``FINAL_VAR`` returns to the model for a name that is not bound."""
    shown = sorted(k for k in variables if not k.startswith("_") and k.isidentifier())
    listed = ", ".join(shown[:40]) + (", ..." if len(shown) > 40 else "")
    return (
        f"Error: Variable '{str(name).strip()}' not found, so no final answer was submitted. "
        f"Available variables: [{listed}]. Assign the variable before calling FINAL_VAR "
        "on it, or pass the answer itself: FINAL_VAR(value)."
    )


BUDGET_KEYS = ("calls", "tokens", "usd", "seconds", "context_window", "sub_context_window")


def budget_view(remaining: Mapping[str, Any] | None) -> dict[str, Any]:
    """``budget()``'s value: what remains of each limit of the run (children included),
    ``None`` where there is no limit; and the most prompt tokens the run's model
    (``context_window``) and ``llm_query``'s (``sub_context_window``) take, if known."""
    remaining = remaining or {}
    return {key: remaining.get(key) for key in BUDGET_KEYS}


# ---------------------------------------------------------------------------
# Builtins
# ---------------------------------------------------------------------------


def resolve_path(file: Any, base_dir: str | Callable[[], str]) -> Any:
    """``file`` made absolute against ``base_dir`` if it is a relative path
    (``base_dir`` may be a function giving the folder, called only then)."""
    if not isinstance(file, (str, bytes, os.PathLike)):
        return file  # a file descriptor, or something open() will reject itself
    path = os.fspath(file)
    if os.path.isabs(path):
        return file
    if callable(base_dir):
        base_dir = base_dir()
    if isinstance(path, bytes):
        return os.path.join(os.fsencode(base_dir), path)
    return os.path.join(base_dir, path)


def _no_input(prompt: object = "") -> str:
    raise RuntimeError("input() is not available in the REPL")


def _exit(code: object = None) -> None:
    # site's exit()/quit() close sys.stdin of the whole process before raising.
    raise SystemExit(code)


def make_builtins(base_dir: str | Callable[[], str]) -> dict[str, Any]:
    """Full builtins, except: relative ``open`` paths resolve against ``base_dir`` (no
    process-wide chdir; a function giving the folder makes it on first use), ``input``
    raises, and ``exit``/``quit`` only end the cell."""
    table = dict(vars(builtins))
    real_open = builtins.open

    @functools.wraps(real_open)
    def open_(file: Any, *args: Any, **kwargs: Any) -> Any:
        return real_open(resolve_path(file, base_dir), *args, **kwargs)

    table["open"] = open_
    table["input"] = _no_input
    table["exit"] = _exit
    table["quit"] = _exit
    return table


# ---------------------------------------------------------------------------
# Tracebacks
# ---------------------------------------------------------------------------


def _source_line(source: str | None, lineno: int | None) -> str:
    if source is None or not lineno:
        return ""
    # Keep the newline: traceback places carets by the length of the raw line.
    lines = source.splitlines(keepends=True)
    return lines[lineno - 1] if 0 < lineno <= len(lines) else ""


# Column positions (carets) exist from Python 3.11; the worker may run on 3.9.
_POSITIONS = ("end_lineno", "colno", "end_colno")
_HAS_POSITIONS = hasattr(traceback.FrameSummary("f", 1, "n", lookup_line=False), "colno")


def _cell_frames(
    stack: traceback.StackSummary, sources: Mapping[str, str]
) -> traceback.StackSummary:
    kept = []
    for frame in stack:
        if not frame.filename.startswith(CELL_FILENAME_PREFIX):
            continue
        positions = {k: getattr(frame, k, None) for k in _POSITIONS} if _HAS_POSITIONS else {}
        kept.append(
            traceback.FrameSummary(
                frame.filename,
                frame.lineno,
                frame.name,
                lookup_line=False,
                line=_source_line(sources.get(frame.filename), frame.lineno),
                **positions,
            )
        )
    return traceback.StackSummary.from_list(kept)


def format_cell_error(exc: BaseException, sources: Mapping[str, str]) -> str:
    """A traceback of ``exc`` showing only cell frames (host frames are noise to the
    model); the last line is ``ExceptionName: message``. ``sources`` maps each cell's
    file name to its code, so frames show their line."""
    root = traceback.TracebackException.from_exception(exc, lookup_lines=False)
    pending, seen = [root], set()
    while pending:
        part = pending.pop()
        if id(part) in seen:
            continue
        seen.add(id(part))
        part.stack = _cell_frames(part.stack, sources)
        pending.extend(p for p in (part.__cause__, part.__context__) if p is not None)
        pending.extend(getattr(part, "exceptions", None) or ())
    return "".join(root.format())
