"""``PostgresSessionStore``: every session in one PostgreSQL database (psycopg 3,
``pip install 'rlmx[postgres]'``), shared by any number of processes and hosts.

Same layout and semantics as ``SQLiteSessionStore``: content-addressed chunked blobs
(``blobs.py``), turns that name their blobs and parent, sessions as pointers to the
last turn (a fork is one row), a turn written with its blobs and the pointer move in
one transaction (a process killed at any point leaves the previous state), reads that
never take a lock, garbage collection on delete (``gc.py``). Schema:
``postgres_migrations.py``, in a schema of its own (``rlmx``).

One writer per session through a lease (``postgres_leases.py``): it expires unless
renewed, so a crashed replica's sessions continue elsewhere once its leases run out.
Writers run concurrently (a shared advisory lock); garbage collection takes it
exclusively, so it never frees a blob a turn being written is about to name.
Connections come from a small pool per store (``postgres_db.Pool``). Any database
error surfaces as ``SessionStoreError``, without the URL's password.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

from rlm.base.errors import (
    ConfigurationError,
    SessionError,
    SessionLockedError,
    SessionNotFoundError,
    SessionStoreError,
)
from rlm.sessions import blobs, locks
from rlm.sessions import postgres_leases as leases
from rlm.sessions.gc import collect_garbage
from rlm.sessions.locks import LockHolder
from rlm.sessions.models import (
    SessionRecord,
    SessionSummary,
    SnapshotRead,
    TurnRecord,
    TurnWrite,
)
from rlm.sessions.postgres_db import PgConnection, Pool, import_psycopg, parse_url, scrub
from rlm.sessions.postgres_migrations import migrate
from rlm.sessions.sql import _FIND, _THREAD, _TURN_COLUMNS
from rlm.sessions.store import DEFAULT_LOCK_TIMEOUT, LockHandle, SessionStore

_SESSION = "SELECT id, head_turn, created_at, updated_at, forked_from, config FROM sessions "
_WRITE_ATTEMPTS = 3  # a deadlock between two writers storing the same chunks: retried


def _text(value: str | None) -> bytes | None:
    return None if value is None else value.encode("utf-8", "surrogatepass")


def _untext(value: bytes | None) -> str | None:
    return None if value is None else bytes(value).decode("utf-8", "surrogatepass")


def _turn(row: tuple[Any, ...]) -> TurnRecord:
    r = list(row)
    for i in (5, 10, 11):
        r[i] = _untext(r[i])
    for i in (8, 12, 18):
        r[i] = json.loads(r[i])
    r[19] = json.loads(r[19]) if r[19] else None
    return TurnRecord(*r)


def _session(row: tuple[Any, ...]) -> SessionRecord:
    return SessionRecord(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]))


def _first(*values: float | None) -> float:
    return next(float(v) for v in values if v is not None)


def _key(name: str, schema: str) -> int:
    digest = hashlib.sha256(f"rlmx-{name}:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class _Lease(LockHandle):
    def __init__(self, store: PostgresSessionStore, session_id: str, owner: str) -> None:
        self.store, self.session_id, self.owner = store, session_id, owner
        store._held.add(session_id, owner)  # renewed by the process's one renewal thread
        self._released = False

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self.store._held.discard(self.owner)
        with contextlib.suppress(SessionError), self.store._tx() as db:
            leases.release(db, self.session_id, self.owner)


class PostgresSessionStore(SessionStore):
    """Sessions in the PostgreSQL database ``url`` names (``postgresql://user@host/db``;
    see ``postgres_db.parse_url`` for its options). Keyword arguments override the
    URL's. The schema is created on first use unless ``create=False``."""

    def __init__(
        self,
        url: str,
        *,
        create: bool = True,
        lock_timeout: float | None = None,
        lease: float | None = None,
        heartbeat: float | None = None,
        pool_size: int | None = None,
    ) -> None:
        psycopg = import_psycopg()
        parsed = parse_url(url)
        self.url = parsed.shown
        self._secrets = parsed.secrets
        self.lock_timeout = _first(lock_timeout, parsed.lock_timeout, DEFAULT_LOCK_TIMEOUT)
        self.lease = _first(lease, parsed.lease)
        self.heartbeat = _first(heartbeat, min(parsed.heartbeat, self.lease / 3))
        if not 0 < self.heartbeat < self.lease:
            raise ConfigurationError(
                f"heartbeat ({self.heartbeat:g}s) must be positive and shorter than the "
                f"lease ({self.lease:g}s)"
            )
        self.schema = parsed.schema
        self._gc_key = _key("gc", self.schema)
        self._Error: type[Exception] = psycopg.Error
        self._Deadlock: type[Exception] = psycopg.errors.DeadlockDetected
        conninfo = parsed.conninfo

        def connect() -> Any:
            conn = psycopg.connect(conninfo, autocommit=True, fallback_application_name="rlmx")
            conn.execute(f'SET search_path TO "{self.schema}"')
            return conn

        self._pool = Pool(connect, pool_size if pool_size is not None else parsed.pool_size)
        self._held = locks.HeldLocks(self._renew, self.heartbeat)
        try:
            with self._pool.connection() as conn:
                migrate(conn, self.schema, self.url, create=create)
        except BaseException as exc:
            self._pool.close()
            if isinstance(exc, psycopg.Error):
                raise SessionStoreError(
                    f"cannot open session store {self.url}: {scrub(str(exc), self._secrets)}"
                ) from None
            raise

    # -- plumbing ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _tx(self, *, read: bool = False, timeout: float | None = None) -> Iterator[PgConnection]:
        """One transaction on a pooled connection (a read: one consistent snapshot)."""
        try:
            with self._pool.connection(timeout) as conn, conn.transaction():
                if read:
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                yield PgConnection(conn)
        except (self._Error, ConnectionError) as exc:
            raise SessionStoreError(
                f"session store {self.url}: {scrub(str(exc), self._secrets)}"
            ) from exc

    # -- sessions ----------------------------------------------------------------------

    def ensure_session(self, session_id: str, config: dict[str, Any]) -> SessionRecord:
        with self._tx() as db:
            now = time.time()
            db.execute(
                "INSERT INTO sessions (id, head_turn, created_at, updated_at, forked_from, "
                "config) VALUES (?, NULL, ?, ?, NULL, ?) ON CONFLICT (id) DO NOTHING",
                (session_id, now, now, json.dumps(config, default=str)),
            )
            return self._session_row(db, session_id)

    def _session_row(self, db: PgConnection, session_id: str, lock: str = "") -> SessionRecord:
        row = db.execute(f"{_SESSION}WHERE id = ?{lock}", (session_id,)).fetchone()
        if row is None:
            raise SessionNotFoundError(f"no session {session_id!r} in {self.url}")
        return _session(row)

    def get_session(self, session_id: str) -> SessionRecord | None:
        with self._tx(read=True) as db:
            try:
                return self._session_row(db, session_id)
            except SessionNotFoundError:
                return None

    def list_sessions(self) -> list[SessionSummary]:
        with self._tx(read=True) as db:
            rows = db.execute(
                "SELECT s.id, COALESCE(t.idx + 1, 0), s.created_at, s.updated_at, t.status, "
                "s.forked_from, s.config FROM sessions s LEFT JOIN turns t ON t.id = s.head_turn "
                "ORDER BY s.updated_at DESC"
            ).fetchall()
            holders = leases.live_holders(db)
        return [
            SessionSummary(r[0], r[1], r[2], r[3], r[4], r[5], holders.get(r[0]), json.loads(r[6]))
            for r in rows
        ]

    def thread(self, session_id: str) -> list[TurnRecord]:
        with self._tx(read=True) as db:
            self._session_row(db, session_id)
            return [_turn(r) for r in db.execute(_THREAD, (session_id,)).fetchall()]

    def find_turn(self, session_id: str, idempotency_key: str) -> TurnRecord | None:
        with self._tx(read=True) as db:
            row = db.execute(_FIND, (session_id, idempotency_key)).fetchone()
        return None if row is None else _turn(row)

    def fork(self, source_id: str, new_id: str) -> SessionRecord:
        with self._tx() as db:
            db.execute("SELECT pg_advisory_xact_lock_shared(?)", (self._gc_key,))
            source = self._session_row(db, source_id, " FOR SHARE")
            now = time.time()
            created = db.execute(
                "INSERT INTO sessions (id, head_turn, created_at, updated_at, forked_from, "
                "config) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING RETURNING id",
                (new_id, source.head_turn, now, now, source_id, json.dumps(source.config)),
            ).fetchone()
            if created is None:
                raise SessionError(f"cannot fork to {new_id!r}: that session already exists")
            return self._session_row(db, new_id)

    def delete(self, session_id: str, force: bool = False) -> None:
        with self._tx() as db:
            db.execute("SELECT pg_advisory_xact_lock(?)", (self._gc_key,))
            self._session_row(db, session_id)
            found = leases.live_holder(db, session_id)
            if found is not None and not force:
                holder, remaining = found
                raise SessionLockedError(
                    f"session {session_id!r} is in use by {holder.describe()}; close it first "
                    "(or force the deletion)",
                    holder,
                    remaining,
                )
            db.execute("DELETE FROM locks WHERE session_id = ?", (session_id,))
            db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
            collect_garbage(db)

    # -- turns -------------------------------------------------------------------------

    def write_turn(self, session_id: str, owner: str, turn: TurnWrite) -> TurnRecord:
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                return self._write_turn(session_id, owner, turn)
            except SessionStoreError as exc:
                if not isinstance(exc.__cause__, self._Deadlock) or attempt + 1 == _WRITE_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def _write_turn(self, session_id: str, owner: str, turn: TurnWrite) -> TurnRecord:
        with self._tx() as db:
            db.execute("SELECT pg_advisory_xact_lock_shared(?)", (self._gc_key,))
            if not leases.hold(db, session_id, owner, self.lease):
                raise SessionLockedError(
                    f"session {session_id!r} lost its write lock (its lease expired and "
                    "another writer took it); this turn was not saved"
                )
            session = self._session_row(db, session_id, " FOR UPDATE")
            parent = session.head_turn
            if turn.replaces_head and parent is not None:
                head = db.execute(
                    "SELECT parent_id, idx, status FROM turns WHERE id = ?", (parent,)
                ).fetchone()
                if head is not None and head[1] == turn.index and head[2] != "completed":
                    parent = head[0]
            context_hash, codec, history_hash, snapshot_hash = blobs.put_turn(db, turn)
            snap = turn.snapshot
            row = db.execute(
                f"INSERT INTO turns ({_TURN_COLUMNS.partition(', ')[2]}) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                f"RETURNING {_TURN_COLUMNS}",
                (
                    parent, session_id, turn.index, turn.status, _text(turn.root_prompt),
                    context_hash, codec, json.dumps(turn.context_meta), history_hash,
                    _text(turn.answer), _text(turn.error), json.dumps(turn.usage), turn.cost,
                    turn.iterations, turn.execution_time, snap.kind if snap else None,
                    snapshot_hash, json.dumps(snap.unrestorable if snap else {}),
                    json.dumps(turn.checkpoint) if turn.checkpoint is not None else None,
                    time.time(), turn.idempotency_key,
                ),
            ).fetchone()  # fmt: skip
            db.execute(
                "UPDATE sessions SET head_turn = ?, updated_at = ? WHERE id = ?",
                (row[0], time.time(), session_id),
            )
            leases.hold(db, session_id, owner, self.lease)  # a long write keeps its lease
            return _turn(row)

    def read_context(self, turn: TurnRecord) -> Any:
        with self._tx(read=True) as db:
            return blobs.read_value(db, turn.context_hash, turn.context_codec)

    def read_history(self, turn: TurnRecord) -> list[dict[str, Any]]:
        with self._tx(read=True) as db:
            history: list[dict[str, Any]] = blobs.read_json(db, turn.history_hash)
            return history

    def read_snapshot(self, turn: TurnRecord) -> SnapshotRead | None:
        if turn.snapshot_kind is None or turn.snapshot_hash is None:
            return None
        with self._tx(read=True) as db:
            return SnapshotRead(turn.snapshot_kind, blobs.read_bytes(db, turn.snapshot_hash))

    def read_part(self, digest: str) -> bytes | bytearray:
        with self._tx(read=True) as db:
            return blobs.read_bytes(db, digest)

    def context_hash(self, value: Any) -> tuple[str, str]:
        return blobs.put_value(None, value)

    # -- leases ------------------------------------------------------------------------

    def acquire_lock(self, session_id: str, timeout: float | None = None) -> LockHandle:
        wait = self.lock_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        owner, pause = locks.new_owner(), 0.02
        while True:
            with self._tx() as db:
                found = leases.try_acquire(db, session_id, owner, self.lease)
            if found is None:
                return _Lease(self, session_id, owner)
            holder, remaining = found
            if holder is None:
                continue  # let go between our two statements: try again at once
            left = deadline - time.monotonic()
            if left <= 0:
                raise SessionLockedError(
                    f"session {session_id!r} is locked by {holder.describe()} "
                    f"(waited {wait:g}s; its lease runs out in {remaining:.1f}s unless "
                    "renewed); one process writes a session at a time. Read it without "
                    "the lock (`rlm sessions show ID` / rlm.sessions.show()), or fork it "
                    "(`rlm sessions fork ID NEW` / rlm.sessions.fork())",
                    holder,
                    remaining,
                )
            time.sleep(max(0.0, min(pause, left, remaining)))
            pause = min(pause * 2, 0.25)

    def lock_holder(self, session_id: str) -> LockHolder | None:
        with self._tx(read=True) as db:
            found = leases.live_holder(db, session_id)
        return None if found is None else found[0]

    def _renew(self, held: list[tuple[str, str]]) -> None:
        """Renew every lease this store holds (on the renewal thread): one statement,
        on a pooled connection if one frees up within a heartbeat."""
        with self._tx(timeout=self.heartbeat) as db:
            leases.renew_all(db, [owner for _, owner in held], self.lease)

    def close(self) -> None:
        self._held.clear()
        self._pool.close()

    def __repr__(self) -> str:
        return f"PostgresSessionStore({self.url!r})"
