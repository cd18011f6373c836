"""Durable sessions: a conversation that survives restarts and crashes, and can be forked.

    from rlm import RLM
    rlm = RLM(backend="openai", backend_kwargs={"model_name": "gpt-5-mini"},
              persistent=True, session_id="notes", session_store="~/notes.db")
    rlm.completion(report, root_prompt="Summarise the risks.")
    # ... a later process, after a restart or a crash:
    rlm = RLM(..., persistent=True, session_id="notes", session_store="~/notes.db")
    rlm.completion(update, root_prompt="What changed?")   # context_0, history_0, variables back

    from rlm import sessions
    sessions.list_sessions("~/notes.db"); sessions.show("notes", "~/notes.db")

After every turn the store writes, in one transaction, the turn's context (stored once
per content hash), its history, answer, usage and cost, and the REPL namespace (see
``docs/sessions.md``). Modules: ``store`` (the interface), ``sqlite_store``,
``migrations``, ``postgres_store`` (``session_store="postgresql://..."``, with
``postgres_db``, ``postgres_migrations`` and ``postgres_leases``; psycopg is imported
only when one is opened), ``blobs``, ``locks``, ``gc``, ``models`` and ``api`` (list,
show, export, fork, delete). The engine's side (``rlm.core.durable``, ``rlm.core.snapshots``,
``rlm.core.resume``) uses the store through ``SessionStore``; this package never imports
the engine or an environment.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlm.base.checkpoint import Checkpoint
    from rlm.base.errors import (
        SessionError,
        SessionLockedError,
        SessionNotFoundError,
        SessionStoreError,
    )
    from rlm.sessions.api import SessionDetail, delete, export, fork, list_sessions, show
    from rlm.sessions.locks import LockHolder
    from rlm.sessions.models import SessionRecord, SessionSummary, TurnRecord
    from rlm.sessions.postgres_store import PostgresSessionStore
    from rlm.sessions.sqlite_store import SQLiteSessionStore
    from rlm.sessions.store import STORE_ENV_VAR, SessionStore, default_store_path, open_store

# Imported on first use (the engine imports the store only for a durable session), so
# ``import rlm`` does not pay for sqlite3 and the store unless a session is durable.
_HOMES = {
    "rlm.sessions.api": ("SessionDetail", "delete", "export", "fork", "list_sessions", "show"),
    "rlm.base.checkpoint": ("Checkpoint",),
    "rlm.sessions.locks": ("LockHolder",),
    "rlm.sessions.models": ("SessionRecord", "SessionSummary", "TurnRecord"),
    "rlm.sessions.sqlite_store": ("SQLiteSessionStore",),
    "rlm.sessions.postgres_store": ("PostgresSessionStore",),
    "rlm.sessions.store": ("STORE_ENV_VAR", "SessionStore", "default_store_path", "open_store"),
    "rlm.base.errors": (
        "SessionError",
        "SessionLockedError",
        "SessionNotFoundError",
        "SessionStoreError",
    ),
}
_WHERE = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'rlm.sessions' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "STORE_ENV_VAR",
    "Checkpoint",
    "LockHolder",
    "PostgresSessionStore",
    "SQLiteSessionStore",
    "SessionDetail",
    "SessionError",
    "SessionLockedError",
    "SessionNotFoundError",
    "SessionRecord",
    "SessionStore",
    "SessionStoreError",
    "SessionSummary",
    "TurnRecord",
    "default_store_path",
    "delete",
    "export",
    "fork",
    "list_sessions",
    "open_store",
    "show",
]
