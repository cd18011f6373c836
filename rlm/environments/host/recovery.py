"""Small pieces WorkerEnv uses around cells: the cell clock, what the model is told
after a restart, and the host's view of worker variables."""

from __future__ import annotations

import threading
import time
from typing import Any

from rlm.environments.transports.base import Transport

# Builtin types the engine lists as "REPL variables": kept as their preview string.
_LISTED = frozenset({"str", "list", "dict", "tuple", "set"})
_MAX_REASONS = 5


class WorkerValue:
    """A worker variable the host cannot hold (a function, a module, an object): its
    type name and a short preview, for ``REPLResult.locals``."""

    __slots__ = ("preview", "type_name")

    def __init__(self, type_name: str, preview: str) -> None:
        self.type_name = type_name
        self.preview = preview

    def __repr__(self) -> str:
        return self.preview


def to_locals(previews: dict[str, list[Any]]) -> dict[str, Any]:
    """``REPLResult.locals`` from the worker's ``[type, preview, exact]`` triples:
    exact scalars and short strings as themselves, other builtin containers as their
    preview text, everything else as ``WorkerValue``."""
    out: dict[str, Any] = {}
    for name, item in previews.items():
        if not (isinstance(item, list) and len(item) == 3):
            continue
        type_name, preview, exact = item
        if exact:
            out[name] = preview
        elif type_name in _LISTED:
            out[name] = str(preview)
        else:
            out[name] = WorkerValue(str(type_name), str(preview))
    return out


def format_lost(lost: dict[str, str], after_cell: int, transport: Transport) -> str:
    """What a restart cost, in one paragraph for the model."""
    if after_cell:
        text = f"Variables were restored from the snapshot taken after cell {after_cell}."
    else:
        text = "No snapshot had been taken yet: only contexts and histories were restored."
    if lost:
        names = sorted(lost)
        reasons = "; ".join(f"{n}: {lost[n]}" for n in names[:_MAX_REASONS])
        more = f"; and {len(names) - _MAX_REASONS} more" if len(names) > _MAX_REASONS else ""
        text += f" Could not restore: {names} ({reasons}{more})."
    if not transport.files_survive_restart:
        text += " Files written to the working directory were lost."
    return text


class CellClock:
    """Running time of the current cell, not counting the time it spends waiting for
    the host to answer its sub-calls (a cell that asks 50 slow questions is working,
    not hung)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cell: int | None = None
        self._started = 0.0
        self._in_flight = 0
        self._paused = 0.0
        self._paused_since = 0.0
        self._finished = False

    def start(self, cell: int) -> None:
        with self._lock:
            self._cell, self._started = cell, time.monotonic()
            self._in_flight, self._paused = 0, 0.0
            self._finished = False

    def finish(self, cell: Any) -> None:
        """The worker reported the cell's code done (it is saving its snapshot)."""
        with self._lock:
            if cell == self._cell:
                self._finished = True

    def finished(self, cell: int) -> bool:
        with self._lock:
            return cell == self._cell and self._finished

    def enter(self, cell: Any) -> None:
        with self._lock:
            if cell == self._cell:
                self._in_flight += 1
                if self._in_flight == 1:
                    self._paused_since = time.monotonic()

    def leave(self, cell: Any) -> None:
        with self._lock:
            if cell == self._cell and self._in_flight > 0:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self._paused += time.monotonic() - self._paused_since

    def elapsed(self) -> float:
        with self._lock:
            now = time.monotonic()
            paused = self._paused + (now - self._paused_since if self._in_flight else 0.0)
            return now - self._started - paused
