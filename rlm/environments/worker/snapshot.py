"""Snapshots of the worker's namespace, taken as deltas after every cell.

Each user variable becomes one entry:

* ``module``: a module binding, re-imported by name;
* ``source``: a function or class made by a top-level ``def``/``class`` of a cell,
  re-created by running its recorded source in the namespace (so it keeps seeing the
  namespace's globals, which a by-value pickle would not give);
* ``pickle``: anything ``pickle`` can save (by reference for cell functions/classes,
  which the namespace being ``__main__`` makes possible), else ``cloudpickle`` or
  ``dill`` when the worker's Python has one (lambdas, closures...).

What cannot be saved is reported by name with the reason; nothing is dropped silently.

Cost policy: after a cell only *changed* names are saved. A name counts as changed when
its binding (object identity), its type or, for builtin containers, its length
changed; mutable values whose last pickle was small (``RECHECK_BYTES``) are re-pickled
every cell and compared, so in-place edits of small and medium values are caught too
(``str``, ``bytes`` and numbers cannot change in place: they are not re-pickled). The
trade-off: an in-place edit of a *large* value that keeps its length (``big[3] = x``)
is not seen until the name is rebound or a full snapshot is taken.

Standard library only, Python 3.9 compatible.
"""

from __future__ import annotations

import importlib
import importlib.util
import pickle
import types
from dataclasses import dataclass
from typing import Any

from rlm.environments.worker.payloads import PICKLE_PROTOCOL
from rlm.environments.worker.repl_core import DefRecord, ReplCore

RECHECK_BYTES = 64 * 1024
_SIZED = (list, dict, set, bytearray)
# Values that cannot change in place: the same object is the same value, never re-pickled
# (a session's final_answer_N strings would otherwise be re-pickled every cell).
_IMMUTABLE = frozenset({str, bytes, int, float, complex, bool, type(None)})

# (meta, body); evaluated at import, so no ``X | None`` here (the worker runs on 3.9).
Entry = tuple[dict[str, Any], Any]


def _extra_pickler_name() -> str | None:
    """cloudpickle or dill, if installed (they pickle lambdas and closures). Only
    looked up here: importing one costs tens of ms, paid when first needed."""
    for name in ("cloudpickle", "dill"):
        try:
            if importlib.util.find_spec(name) is not None:
                return name
        except (ImportError, ValueError):
            continue
    return None


def _fingerprint(value: Any) -> tuple[int, type, int]:
    size = len(value) if type(value) in _SIZED else -1
    return id(value), type(value), size


def _recheck_digest(value: Any, body: Any) -> Any:
    """The hash a later cell compares a re-pickle of ``value`` with, or ``None`` when
    it is not re-pickled (a large body, or an immutable value: its identity suffices)."""
    if body is None or len(body) > RECHECK_BYTES or type(value) in _IMMUTABLE:
        return None
    return hash(body)


@dataclass
class _Saved:
    value: Any  # held so the id in the fingerprint cannot be reused
    fingerprint: tuple[int, type, int]
    digest: int | None  # hash of the saved body (None: not re-checked)
    size: int  # body size; -1 when the name could not be saved


class Snapshotter:
    """Computes snapshot deltas of one REPL (``ReplCore``) and restores entries into it."""

    def __init__(self, repl: ReplCore, max_value_bytes: int) -> None:
        self.repl = repl
        self.max_value_bytes = max_value_bytes
        self.extra_name = _extra_pickler_name()
        self._extra: types.ModuleType | None = None
        self._saved: dict[str, _Saved] = {}

    def reset(self) -> None:
        """Forget what was sent (after an aborted delta): the next one sends all."""
        self._saved.clear()

    @property
    def extra(self) -> types.ModuleType | None:
        """The extra pickler module, imported on first use (None if unavailable)."""
        if self._extra is None and self.extra_name is not None:
            try:
                self._extra = importlib.import_module(self.extra_name)
            except Exception:
                self.extra_name = None
        return self._extra

    def _names(self) -> dict[str, Any]:
        """The user variables worth saving (inputs are re-sent by the host instead)."""
        inputs = self.repl.inputs
        managed = {f"context_{i}" for i in inputs.contexts}
        managed |= {f"history_{i}" for i in inputs.histories}
        if 0 in inputs.contexts:
            managed.add("context")
        if inputs.compaction_history is not None or 0 in inputs.histories:
            managed.add("history")
        return {n: v for n, v in self.repl.locals.items() if n not in managed}

    def collect(self, full: bool = False) -> tuple[list[Entry], list[str], dict[str, str]]:
        """``(entries, deleted, unsaved)`` since the last call (everything if ``full``)."""
        current = self._names()
        entries: list[Entry] = []
        unsaved: dict[str, str] = {}
        for name, value in current.items():
            fingerprint = _fingerprint(value)
            prev = self._saved.get(name)
            unchanged = prev is not None and prev.fingerprint == fingerprint
            if unchanged and not full and prev is not None and prev.digest is None:
                continue
            meta, body, reason = self._encode(name, value)
            if reason is not None:
                unsaved[name] = reason
                self._saved[name] = _Saved(value, fingerprint, None, -1)
                continue
            digest = _recheck_digest(value, body)
            if unchanged and not full and prev is not None and prev.digest == digest:
                continue
            self._saved[name] = _Saved(value, fingerprint, digest, len(body or b""))
            entries.append((meta, body))
        deleted = [name for name in self._saved if name not in current]
        for name in deleted:
            del self._saved[name]
        return entries, deleted, unsaved

    def _encode(self, name: str, value: Any) -> tuple[dict[str, Any], bytes | None, Any]:
        meta: dict[str, Any] = {"name": name}
        if isinstance(value, types.ModuleType):
            return dict(meta, kind="module", module=value.__name__), None, None
        record = self.repl.defs.get(id(value))
        if record is not None and record.obj is value:
            source = {"source": record.source, "cell": record.cell, "line": record.line}
            return dict(meta, kind="source", define=record.name, **source), None, None
        errors = []
        for kind in ("pickle", self.extra_name):
            module = pickle if kind == "pickle" else self.extra
            if module is None:
                continue
            try:
                body = module.dumps(value, protocol=PICKLE_PROTOCOL)
            except BaseException as exc:  # __reduce__ is cell code: anything goes
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            if len(body) > self.max_value_bytes:
                mb = len(body) / 1e6
                return meta, None, f"too large to snapshot ({mb:.1f} MB pickled)"
            return dict(meta, kind=kind, size=len(body)), body, None
        return meta, None, f"not picklable ({errors[-1] if errors else 'unknown'})"

    # -- restore ----------------------------------------------------------------------

    def restore(self, entries: list[Entry]) -> dict[str, str]:
        """Bind every entry into the (fresh) namespace; returns ``{name: reason}`` for
        the ones that failed. Modules first, then sources in cell order (a later
        ``def`` wins), then pickled values (which may refer to those classes)."""
        repl, failed = self.repl, {}
        self._saved.clear()
        names = {meta["name"] for meta, _ in entries}
        order = {"module": 0, "source": 1}
        entries = sorted(
            entries,
            key=lambda e: (
                order.get(str(e[0].get("kind")), 2),
                e[0].get("cell", 0),
                e[0].get("line", 0),
            ),
        )
        defined: set[str] = set()
        for meta, body in entries:
            name, kind = meta["name"], meta.get("kind")
            try:
                if kind == "module":
                    value = importlib.import_module(meta["module"])
                elif kind == "source":
                    record = DefRecord(
                        None, meta["define"], meta["source"], meta["cell"], meta["line"]
                    )
                    value = repl.define_from_source(record)
                    defined.add(meta["define"])
                elif kind == "pickle" or kind == self.extra_name:
                    loader = pickle if kind == "pickle" else self.extra
                    value = loader.loads(body)  # type: ignore[union-attr]
                else:
                    raise ValueError(f"cannot load entries of kind {kind!r} in this worker")
                repl.globals[name] = value
            except BaseException as exc:
                failed[name] = f"{type(exc).__name__}: {exc}"[:200]
                repl.globals.pop(name, None)
                continue
            # What was just loaded is what the host holds: the next delta skips it.
            digest = _recheck_digest(value, bytes(body) if body is not None else None)
            self._saved[name] = _Saved(value, _fingerprint(value), digest, len(body or b""))
        for helper in defined - names:  # a def re-run only to restore an alias of it
            repl.globals.pop(helper, None)
        repl.restore_scaffold()
        return failed
