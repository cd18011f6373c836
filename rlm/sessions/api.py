"""Inspecting and managing stored sessions without an RLM: list, show, export, fork, delete.

Each function takes ``store``: a ``SessionStore``, a path or ``sqlite:`` URL, or
``None`` for the default store (``default_store_path()``). Reads never take a session's
lock, so a session can be inspected while another process is using it.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from rlm.base.errors import SessionStoreError
from rlm.sessions.locks import LockHolder
from rlm.sessions.models import SessionRecord, SessionSummary, TurnRecord
from rlm.sessions.store import SessionStore, open_store

StoreSpec = SessionStore | str | os.PathLike[str] | None
T = TypeVar("T")
EXPORT_FORMAT = "rlmx-session-export"


@dataclass(frozen=True)
class SessionDetail:
    """A session, its turns (first to last) and who holds its lock, if anyone."""

    session: SessionRecord
    turns: list[TurnRecord]
    locked_by: LockHolder | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "session": asdict(self.session),
            "turns": [asdict(t) for t in self.turns],
            "locked_by": asdict(self.locked_by) if self.locked_by else None,
        }


def _using(store: StoreSpec, fn: Callable[[SessionStore], T], create: bool = False) -> T:
    opened = open_store(store, create=create)
    try:
        return fn(opened)
    finally:
        if opened is not store:
            opened.close()


def list_sessions(store: StoreSpec = None) -> list[SessionSummary]:
    """Every session, most recently updated first (none if the store does not exist)."""
    try:
        return _using(store, lambda s: s.list_sessions())
    except SessionStoreError as exc:
        if str(exc).startswith("no session store at"):
            return []
        raise


def show(session_id: str, store: StoreSpec = None) -> SessionDetail:
    """A session and its turns (raises ``SessionNotFoundError``)."""

    def read(s: SessionStore) -> SessionDetail:
        turns = s.thread(session_id)
        record = s.get_session(session_id)
        assert record is not None
        return SessionDetail(record, turns, s.lock_holder(session_id))

    return _using(store, read)


def delete(session_id: str, store: StoreSpec = None, *, force: bool = False) -> None:
    """Delete a session; what no other session shares is freed. A session open in a
    live process is refused (``SessionLockedError``) unless ``force``."""
    _using(store, lambda s: s.delete(session_id, force=force))


def fork(session_id: str, new_id: str, store: StoreSpec = None) -> SessionRecord:
    """A new session that shares ``session_id``'s turns so far and diverges after."""
    return _using(store, lambda s: s.fork(session_id, new_id))


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return {"base64": base64.b64encode(value).decode()}
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return {"repr": repr(value)}
    return value


def _opaque_pickle(data: bytes | bytearray, digest: str) -> dict[str, Any]:
    return {
        "pickle": {
            "trusted": False,
            "note": "a pickled context, not unpickled: loading a pickle runs code. Export "
            "with trust_pickles=True (rlm sessions export --trust-pickles) if you trust "
            "this store.",
            "sha256": digest,
            "size": len(data),
            "base64": base64.b64encode(data).decode(),
        }
    }


def _context(s: SessionStore, turn: TurnRecord, trust_pickles: bool) -> Any:
    if turn.context_codec == "pickle" and not trust_pickles:
        # The blob's raw bytes: read_part fetches any blob by hash without decoding it.
        return _opaque_pickle(s.read_part(turn.context_hash), turn.context_hash)
    return _jsonable(s.read_context(turn))


def export(
    session_id: str,
    store: StoreSpec = None,
    *,
    contexts: bool = True,
    trust_pickles: bool = False,
) -> dict[str, Any]:
    """The session as JSON-able data: its record and, per turn, the context (unless
    ``contexts=False``), history, answer, usage and the variables that were not saved.

    Nothing is unpickled: REPL variables are left out, and a context that was stored as
    a pickle (anything but text or bytes) comes out as ``{"pickle": {"trusted": false,
    "base64": ..., "sha256": ..., "size": ...}}``. Loading a pickle runs code, so a
    crafted store file could otherwise run code in the exporting process; pass
    ``trust_pickles=True`` only for a store you (or your own processes) wrote, to get
    such contexts decoded."""

    def read(s: SessionStore) -> dict[str, Any]:
        detail_turns = s.thread(session_id)
        record = s.get_session(session_id)
        assert record is not None
        turns = []
        for turn in detail_turns:
            item = {k: v for k, v in asdict(turn).items() if k not in ("checkpoint",)}
            if contexts:
                item["context"] = _context(s, turn, trust_pickles)
            item["history"] = s.read_history(turn)
            turns.append(item)
        return {"format": EXPORT_FORMAT, "version": 1, "session": asdict(record), "turns": turns}

    return _using(store, read)


__all__ = ["SessionDetail", "delete", "export", "fork", "list_sessions", "show"]
