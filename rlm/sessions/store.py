"""The session store interface, where stores live by default, and how a spec opens one.

``SessionStore`` is what the engine (``rlm.core.durable``), the inspection API
(``rlm.sessions.api``), the CLI and the server use. Two implementations:
``SQLiteSessionStore`` (one file) and ``PostgresSessionStore`` (``rlmx[postgres]``,
for several processes or hosts over one database). Another backend implements these
methods and is passed as ``RLM(session_store=<instance>)``.

A spec is a ``SessionStore``, a path, a ``sqlite://`` URL (``sqlite:///abs/path.db``,
``sqlite:relative.db``) whose query may set ``lock_timeout``, ``stale_after`` and
``synchronous`` (``normal``: a commit survives a crashed process; ``full``: also a
power cut), or a ``postgresql://`` / ``postgres://`` URL (libpq's, whose query may also
set ``lock_timeout``, ``lease``, ``heartbeat``, ``pool_size`` and ``schema``: see
``postgres_db.parse_url``). A password in a URL never appears in an error or a log.

**Idempotency keys.** ``TurnWrite.idempotency_key`` is stored with the turn (the key a
client sent with the request that ran it), and ``find_turn(session_id, key)`` returns
the newest turn of the session's thread written with that key (``None`` if there is
none, or no such session): a retried request, on this process or another, finds the
turn it already committed instead of running it again. Keys are not unique: a stopped
turn resumed under the same key is replaced in the thread, and only the thread is
searched. The record's ``status`` tells a completed turn from a stopped or failed one.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from rlm.base.errors import ConfigurationError, SessionStoreError
from rlm.base.redact import redact_text
from rlm.sessions.locks import LockHolder
from rlm.sessions.models import (
    SessionRecord,
    SessionSummary,
    SnapshotRead,
    TurnRecord,
    TurnWrite,
)

STORE_ENV_VAR = "RLM_SESSION_STORE"
DEFAULT_LOCK_TIMEOUT = 10.0  # seconds a writer waits for another process's lock


class MissingPartsError(SessionStoreError):
    """``write_turn`` got a parts snapshot naming bodies the store does not hold; the
    caller captures a full snapshot and writes again."""


class LockHandle(ABC):
    """A held session lock. ``release()`` is idempotent."""

    owner: str

    @abstractmethod
    def release(self) -> None: ...


class SessionStore(ABC):
    """Durable sessions: sessions point at the last turn of a thread of turns; turns
    hold their context, history, answer, usage and namespace snapshot.

    Callers: ``DurableSession`` (one per durable ``RLM``), ``rlm.sessions.api``.
    Reads never need a lock; ``write_turn`` needs the session's lock owner token.
    """

    url: str
    lock_timeout: float

    @abstractmethod
    def ensure_session(self, session_id: str, config: dict[str, Any]) -> SessionRecord:
        """The session, created (with ``config``) if it does not exist."""

    @abstractmethod
    def get_session(self, session_id: str) -> SessionRecord | None: ...

    @abstractmethod
    def list_sessions(self) -> list[SessionSummary]: ...

    @abstractmethod
    def thread(self, session_id: str) -> list[TurnRecord]:
        """The session's turns, first to last (raises ``SessionNotFoundError``)."""

    @abstractmethod
    def write_turn(self, session_id: str, owner: str, turn: TurnWrite) -> TurnRecord:
        """Save one turn atomically and move the session's pointer to it."""

    def find_turn(self, session_id: str, idempotency_key: str) -> TurnRecord | None:
        """The newest turn of the session's thread written with ``idempotency_key``
        (``TurnWrite.idempotency_key``); ``None`` if none, or no such session. Stores
        override this with an indexed query; this default reads the thread."""
        try:
            turns = self.thread(session_id)
        except LookupError:
            return None
        found = [t for t in turns if t.idempotency_key == idempotency_key]
        return found[-1] if found else None

    @abstractmethod
    def read_context(self, turn: TurnRecord) -> Any: ...

    @abstractmethod
    def read_history(self, turn: TurnRecord) -> list[dict[str, Any]]: ...

    @abstractmethod
    def read_snapshot(self, turn: TurnRecord) -> SnapshotRead | None: ...

    @abstractmethod
    def read_part(self, digest: str) -> bytes | bytearray:
        """A snapshot body by its sha256 (parts snapshots)."""

    @abstractmethod
    def context_hash(self, value: Any) -> tuple[str, str]:
        """``(hash, codec)`` a context would be stored under, without storing it."""

    @abstractmethod
    def fork(self, source_id: str, new_id: str) -> SessionRecord:
        """A new session pointing at ``source_id``'s last turn (history is shared)."""

    @abstractmethod
    def delete(self, session_id: str, force: bool = False) -> None:
        """Delete a session and whatever only it used. A session another live process
        holds is refused (``SessionLockedError``) unless ``force``."""

    @abstractmethod
    def acquire_lock(self, session_id: str, timeout: float | None = None) -> LockHandle:
        """Become the session's one writer, waiting up to ``timeout`` (default
        ``lock_timeout``) seconds; raises ``SessionLockedError``."""

    @abstractmethod
    def lock_holder(self, session_id: str) -> LockHolder | None:
        """The live holder of the session's lock, if any."""

    @abstractmethod
    def close(self) -> None: ...


def default_store_path() -> Path:
    """``$RLM_SESSION_STORE``, else ``$XDG_DATA_HOME/rlmx/sessions.db``, else
    ``~/.local/share/rlmx/sessions.db``."""
    explicit = os.environ.get(STORE_ENV_VAR)
    if explicit:
        return Path(explicit).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join("~", ".local", "share")
    return Path(data_home).expanduser() / "rlmx" / "sessions.db"


POSTGRES_SCHEMES = ("postgresql", "postgres")


def is_postgres_url(spec: str | os.PathLike[str]) -> bool:
    return urlsplit(os.fspath(spec)).scheme.lower() in POSTGRES_SCHEMES


def parse_spec(spec: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """``(path, options)`` of a path or ``sqlite:`` URL (PostgreSQL URLs: ``open_store``)."""
    text = os.fspath(spec)
    if "://" not in text and not text.startswith("sqlite:"):
        return Path(text).expanduser(), {}
    parts = urlsplit(text)
    if parts.scheme != "sqlite":
        raise ConfigurationError(
            f"unsupported session store URL {redact_text(text)!r}: session stores are "
            "paths, sqlite: URLs and postgresql:// URLs"
        )
    raw = unquote(parts.netloc + parts.path) if parts.netloc else unquote(parts.path)
    if not raw:
        raise ConfigurationError(f"session store URL {text!r} names no file")
    options: dict[str, Any] = {}
    for key, value in parse_qsl(parts.query):
        if key in ("lock_timeout", "stale_after"):
            options[key] = float(value)
        elif key == "synchronous" and value.lower() in ("normal", "full"):
            options[key] = value.upper()
        else:
            raise ConfigurationError(f"unknown session store URL option {key}={value!r}")
    return Path(raw).expanduser(), options


def open_store(
    spec: SessionStore | str | os.PathLike[str] | None = None, *, create: bool = True
) -> SessionStore:
    """The store ``spec`` names (``None``: ``$RLM_SESSION_STORE`` or the default path).
    A ``SessionStore`` is returned as is; ``create=False`` refuses a path that does not
    exist (or a database without the store's tables). A ``postgresql://`` URL opens a
    ``PostgresSessionStore`` (``MissingExtraError`` without ``rlmx[postgres]``)."""
    if isinstance(spec, SessionStore):
        return spec
    if spec is None and is_postgres_url(os.environ.get(STORE_ENV_VAR, "")):
        spec = os.environ[STORE_ENV_VAR]  # a URL, not a path (a Path would fold its //)
    if spec is not None and is_postgres_url(spec):
        from rlm.sessions.postgres_store import PostgresSessionStore

        return PostgresSessionStore(os.fspath(spec), create=create)
    from rlm.sessions.sqlite_store import SQLiteSessionStore

    path, options = parse_spec(default_store_path() if spec is None else spec)
    return SQLiteSessionStore(path, create=create, **options)
