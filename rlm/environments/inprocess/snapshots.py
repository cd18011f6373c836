"""``SupportsSnapshot`` for LocalREPL, on the worker's snapshot code (one implementation).

LocalREPL is a ``ReplCore`` like the worker's REPL, so ``Snapshotter`` reads it as it
reads a worker's: the user view, the versioned inputs (never saved: their owner adds
them again), the ``def``/``class`` sources recorded after each cell, and the scaffold to
put back after a restore. What can and cannot be saved is therefore exactly the
worker's policy (see ``rlm.environments.worker.snapshot``).

Two forms:

* ``snapshot()``/``restore()``: bytes in the worker's blob format (``WorkerState``), so a
  LocalREPL snapshot restores into a worker environment and a worker's into LocalREPL.
  LocalREPL leaves its inputs out (a context can be large); a worker blob's inputs are
  bound on restore.
* ``delta()``: every saved entry's metadata, with the bodies that changed since the last
  delta keyed by their sha256, so a durable store writes only what changed (this is
  what ``rlm.sessions`` reads). ``reset()`` after a delta that was not stored: the next
  one carries every body again.

A blob that an environment less trusted than this process wrote (an isolated worker,
an IPython kernel, or an rlmx that did not record its writer) is not loaded unless
``trusted`` (LocalREPL's ``trust_snapshots=True``): loading it would run that
environment's class bodies and unpickle its values here. Its inputs are still bound.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from rlm.environments.host.state import ORIGIN_HOST, WorkerState, refusal
from rlm.environments.worker.repl_core import ReplCore
from rlm.environments.worker.snapshot import Entry, Snapshotter

DEFAULT_MAX_VALUE_BYTES = 1 << 30  # per variable, as the worker environments

# A delta: (every saved entry's meta, new bodies by sha256 hex, {name: why unsaved}).
Delta = tuple[list[dict[str, Any]], dict[str, bytes], dict[str, str]]


class LocalSnapshots:
    """Snapshots of one in-process REPL (LocalREPL). Callers hold the REPL's lock."""

    def __init__(self, namespace: ReplCore, max_value_bytes: int, trusted: bool = False) -> None:
        self.namespace = namespace
        self.max_value_bytes = max_value_bytes
        self.trusted = trusted  # load blobs whatever environment wrote them
        self.refused: str | None = None  # why the last restore() loaded no variables
        self._snapshotter: Snapshotter | None = None  # made on first use (it probes picklers)
        self._entries: dict[str, dict[str, Any]] = {}  # name -> meta, "digest" for bodies
        self._unsaved: dict[str, str] = {}

    def _delta_snapshotter(self) -> Snapshotter:
        if self._snapshotter is None:
            self._snapshotter = Snapshotter(self.namespace, self.max_value_bytes)
        return self._snapshotter

    # -- bytes -------------------------------------------------------------------------

    def snapshot(self) -> tuple[bytes, list[str]]:
        """Every variable that can be saved, as a worker-format blob; and the names that
        could not be saved. Independent of ``delta()``'s bookkeeping."""
        entries, _, unsaved = Snapshotter(self.namespace, self.max_value_bytes).collect(full=True)
        state = WorkerState(self.namespace.inputs.compaction_history is not None, 1 << 62)
        state.entries = {meta["name"]: (meta, body) for meta, body in entries}
        state.unsaved = dict(unsaved)
        return state.to_blob(ORIGIN_HOST), sorted(unsaved)

    def restore(self, data: bytes) -> list[str]:
        """Replace the user variables with those of blob ``data``; returns the names that
        could not be restored (saved ones that failed, and those never saved, and all
        of them if the blob's writer is not trusted here: ``refused`` says why)."""
        state = WorkerState.from_blob(data, True, 1 << 62)
        inputs = self.namespace.inputs
        inputs.contexts.update(state.inputs.contexts)  # a worker blob carries its inputs
        inputs.histories.update(state.inputs.histories)
        self.refused = None if self.trusted else refusal(state.origin, ORIGIN_HOST)
        if self.refused is not None:
            self.namespace.restore_scaffold()  # binds the inputs, loads nothing
            return sorted({**state.unsaved, **state.entries})
        failed = self._restore_entries(list(state.entries.values()))
        return sorted({**state.unsaved, **failed})

    # -- deltas ------------------------------------------------------------------------

    def delta(self) -> Delta:
        entries, deleted, unsaved = self._delta_snapshotter().collect()
        for name in deleted:
            self._entries.pop(name, None)
            self._unsaved.pop(name, None)
        for name, reason in unsaved.items():
            self._entries.pop(name, None)  # a stale value must not come back silently
            self._unsaved[name] = reason
        bodies: dict[str, bytes] = {}
        for meta, body in entries:
            meta = dict(meta)
            if body is not None:
                meta["digest"] = hashlib.sha256(body).hexdigest()
                bodies[meta["digest"]] = body
            self._entries[meta["name"]] = meta
            self._unsaved.pop(meta["name"], None)
        return [self._entries[n] for n in sorted(self._entries)], bodies, dict(self._unsaved)

    def reset(self) -> None:
        """The last delta was not stored: the next one carries every body."""
        self._snapshotter = None
        self._entries.clear()
        self._unsaved.clear()

    def restore_parts(self, metas: list[dict[str, Any]], load: Callable[[str], bytes]) -> list[str]:
        """Restore from a delta's metadata, loading each body by its digest."""
        failed: dict[str, str] = {}
        entries: list[Entry] = []
        for meta in metas:
            digest = meta.get("digest")
            try:
                entries.append((meta, load(digest) if digest else None))
            except Exception as exc:
                failed[str(meta.get("name"))] = f"{type(exc).__name__}: {exc}"[:200]
        failed.update(self._restore_entries(entries))
        return sorted(failed)

    def _restore_entries(self, entries: list[Entry]) -> dict[str, str]:
        view = self.namespace.locals
        for name in list(view):  # replace, as a worker restore does on a fresh worker
            del view[name]
        self.namespace.defs.clear()
        self.reset()
        failed = self._delta_snapshotter().restore(entries)  # seeds what the next delta skips
        for meta, body in entries:
            name = meta["name"]
            if name not in failed:
                digest = meta.get("digest")
                if digest is None and body is not None:
                    digest = hashlib.sha256(body).hexdigest()
                self._entries[name] = {**meta, "digest": digest} if digest else dict(meta)
        return failed
