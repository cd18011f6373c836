"""``SQLiteSessionStore``: every session in one SQLite file (stdlib ``sqlite3``, WAL).

Layout (schema in ``migrations.py``): blobs are content-addressed and chunked
(``blobs.py``); a turn row names its context, history and snapshot blobs and its
parent turn; a session row is a pointer to the last turn of its thread, so a fork is
one new row and a shared context is stored once. A turn, its blobs and the pointer
move are written in one ``BEGIN IMMEDIATE`` transaction: a process killed at any
point leaves the previous state, never half a turn.

One connection per store object, shared by threads under a lock. ``synchronous=NORMAL``
(the default) makes every commit survive a crashed process; ``FULL`` also a power cut.
Any SQLite error surfaces as ``SessionStoreError``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlm.base.errors import (
    SessionError,
    SessionLockedError,
    SessionNotFoundError,
    SessionStoreError,
)
from rlm.sessions import blobs, locks
from rlm.sessions.gc import collect_garbage
from rlm.sessions.migrations import migrate
from rlm.sessions.models import (
    SessionRecord,
    SessionSummary,
    SnapshotRead,
    TurnRecord,
    TurnWrite,
)
from rlm.sessions.sql import _FIND, _THREAD, _TURN_COLUMNS
from rlm.sessions.store import (
    DEFAULT_LOCK_TIMEOUT,
    LockHandle,
    SessionStore,
)


def _turn(row: tuple[Any, ...]) -> TurnRecord:
    r = list(row)
    for i in (8, 12, 18):
        r[i] = json.loads(r[i])
    r[19] = json.loads(r[19]) if r[19] else None
    return TurnRecord(*r)


def _session(row: tuple[Any, ...]) -> SessionRecord:
    return SessionRecord(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]))


def _create_private(path: Path) -> None:
    """Create the store file 0600, and each missing folder above it 0700 (folders that
    already exist, such as one the user chose, keep their mode). SQLite gives the
    ``-wal`` and ``-shm`` files the database's mode."""
    missing: list[Path] = []
    folder = path.parent
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            folder.mkdir(mode=0o700)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _warn_if_shared(path: Path) -> None:
    with contextlib.suppress(OSError):
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            warnings.warn(
                f"session store {path} is readable by other users (mode {mode:04o}); its "
                f"contexts, histories and variables are private: chmod 600 {path}",
                UserWarning,
                stacklevel=3,
            )


class _Lock(LockHandle):
    def __init__(self, store: SQLiteSessionStore, session_id: str, owner: str) -> None:
        self.store, self.session_id, self.owner = store, session_id, owner
        store._held.add(session_id, owner)  # heartbeats: the process's one renewal thread
        self._released = False

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self.store._held.discard(self.owner)
        with contextlib.suppress(SessionError), self.store._tx() as db:
            locks.release(db, self.session_id, self.owner)


class SQLiteSessionStore(SessionStore):
    """Sessions in the SQLite file at ``path`` (created with its folders if missing:
    the file 0600, new folders 0700; an existing file others can read is warned about)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        stale_after: float = 60.0,
        heartbeat: float = 10.0,
        synchronous: str = "NORMAL",
        busy_timeout: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path.resolve()}"
        self.lock_timeout, self.stale_after, self.heartbeat = lock_timeout, stale_after, heartbeat
        if self.path.is_dir():
            raise SessionStoreError(f"{self.path} is a directory, not a session store file")
        existed = self.path.exists()
        if not existed:
            if not create:
                raise SessionStoreError(f"no session store at {self.path}")
            _create_private(self.path)
        self._mutex = threading.RLock()
        self._held = locks.HeldLocks(self._renew, heartbeat)
        try:
            self._db = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise SessionStoreError(f"cannot open session store {self.path}: {exc}") from None
        try:
            migrate(self._db, path=str(self.path))
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute(
                f"PRAGMA synchronous = {'FULL' if synchronous == 'FULL' else 'NORMAL'}"
            )
        except BaseException as exc:
            self._db.close()
            if isinstance(exc, sqlite3.Error):
                raise SessionStoreError(f"cannot open session store {self.path}: {exc}") from None
            raise
        if existed:  # only once it is known to be a store
            _warn_if_shared(self.path)

    # -- plumbing ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise SessionStoreError(f"session store {self.path}: {exc}") from exc

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (all or nothing)."""
        with self._mutex, self._guard():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent read (WAL: never blocks on, nor blocks, the writer)."""
        with self._mutex, self._guard():
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    # -- sessions ----------------------------------------------------------------------

    def ensure_session(self, session_id: str, config: dict[str, Any]) -> SessionRecord:
        with self._tx() as db:
            now = time.time()
            db.execute(
                "INSERT OR IGNORE INTO sessions (id, head_turn, created_at, updated_at, "
                "forked_from, config) VALUES (?, NULL, ?, ?, NULL, ?)",
                (session_id, now, now, json.dumps(config, default=str)),
            )
            return self._session_row(db, session_id)

    def _session_row(self, db: sqlite3.Connection, session_id: str) -> SessionRecord:
        row = db.execute(
            "SELECT id, head_turn, created_at, updated_at, forked_from, config FROM sessions "
            "WHERE id = ?",
            (session_id,),
        ).fetchone()
        if row is None:
            raise SessionNotFoundError(f"no session {session_id!r} in {self.path}")
        return _session(row)

    def get_session(self, session_id: str) -> SessionRecord | None:
        with self._read() as db:
            try:
                return self._session_row(db, session_id)
            except SessionNotFoundError:
                return None

    def list_sessions(self) -> list[SessionSummary]:
        with self._read() as db:
            rows = db.execute(
                "SELECT s.id, COALESCE(t.idx + 1, 0), s.created_at, s.updated_at, t.status, "
                "s.forked_from, s.config FROM sessions s LEFT JOIN turns t ON t.id = s.head_turn "
                "ORDER BY s.updated_at DESC"
            ).fetchall()
            holders = {r[0]: locks.live_holder(db, r[0], self.stale_after) for r in rows}
        return [
            SessionSummary(r[0], r[1], r[2], r[3], r[4], r[5], holders[r[0]], json.loads(r[6]))
            for r in rows
        ]

    def thread(self, session_id: str) -> list[TurnRecord]:
        with self._read() as db:
            self._session_row(db, session_id)
            return [_turn(r) for r in db.execute(_THREAD, (session_id,))]

    def fork(self, source_id: str, new_id: str) -> SessionRecord:
        with self._tx() as db:
            source = self._session_row(db, source_id)
            if db.execute("SELECT 1 FROM sessions WHERE id = ?", (new_id,)).fetchone():
                raise SessionError(f"cannot fork to {new_id!r}: that session already exists")
            now = time.time()
            db.execute(
                "INSERT INTO sessions (id, head_turn, created_at, updated_at, forked_from, config) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (new_id, source.head_turn, now, now, source_id, json.dumps(source.config)),
            )
            return self._session_row(db, new_id)

    def delete(self, session_id: str, force: bool = False) -> None:
        with self._tx() as db:
            self._session_row(db, session_id)
            holder = locks.live_holder(db, session_id, self.stale_after)
            if holder is not None and not force:
                raise SessionLockedError(
                    f"session {session_id!r} is in use by {holder.describe()}; close it first "
                    "(or force the deletion)",
                    holder,
                    locks.retry_after(holder, self.stale_after),
                )
            db.execute("DELETE FROM locks WHERE session_id = ?", (session_id,))
            db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
            collect_garbage(db)
        with self._mutex, self._guard():
            self._db.execute("PRAGMA incremental_vacuum")

    # -- turns -------------------------------------------------------------------------

    def write_turn(self, session_id: str, owner: str, turn: TurnWrite) -> TurnRecord:
        with self._tx() as db:
            if not locks.holds(db, session_id, owner):
                raise SessionLockedError(
                    f"session {session_id!r} lost its write lock (it was broken as stale); "
                    "this turn was not saved"
                )
            session = self._session_row(db, session_id)
            parent = session.head_turn
            if turn.replaces_head and parent is not None:
                head = db.execute(
                    "SELECT parent_id, idx, status FROM turns WHERE id = ?", (parent,)
                ).fetchone()
                if head is not None and head[1] == turn.index and head[2] != "completed":
                    parent = head[0]
            context_hash, codec, history_hash, snapshot_hash = blobs.put_turn(db, turn)
            snap = turn.snapshot
            cursor = db.execute(
                f"INSERT INTO turns ({_TURN_COLUMNS.partition(', ')[2]}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    parent, session_id, turn.index, turn.status, turn.root_prompt,
                    context_hash, codec, json.dumps(turn.context_meta), history_hash,
                    turn.answer, turn.error, json.dumps(turn.usage), turn.cost,
                    turn.iterations, turn.execution_time, snap.kind if snap else None,
                    snapshot_hash, json.dumps(snap.unrestorable if snap else {}),
                    json.dumps(turn.checkpoint) if turn.checkpoint is not None else None,
                    time.time(), turn.idempotency_key,
                ),
            )  # fmt: skip
            turn_id = cursor.lastrowid
            db.execute(
                "UPDATE sessions SET head_turn = ?, updated_at = ? WHERE id = ?",
                (turn_id, time.time(), session_id),
            )
            row = db.execute(f"SELECT {_TURN_COLUMNS} FROM turns WHERE id = ?", (turn_id,))
            return _turn(row.fetchone())

    def find_turn(self, session_id: str, idempotency_key: str) -> TurnRecord | None:
        with self._read() as db:
            row = db.execute(_FIND, (session_id, idempotency_key)).fetchone()
        return None if row is None else _turn(row)

    def read_context(self, turn: TurnRecord) -> Any:
        with self._read() as db:
            return blobs.read_value(db, turn.context_hash, turn.context_codec)

    def read_history(self, turn: TurnRecord) -> list[dict[str, Any]]:
        with self._read() as db:
            history: list[dict[str, Any]] = blobs.read_json(db, turn.history_hash)
            return history

    def read_snapshot(self, turn: TurnRecord) -> SnapshotRead | None:
        if turn.snapshot_kind is None or turn.snapshot_hash is None:
            return None
        with self._read() as db:
            return SnapshotRead(turn.snapshot_kind, blobs.read_bytes(db, turn.snapshot_hash))

    def read_part(self, digest: str) -> bytes | bytearray:
        with self._read() as db:
            return blobs.read_bytes(db, digest)

    def context_hash(self, value: Any) -> tuple[str, str]:
        return blobs.put_value(None, value)

    # -- locks -------------------------------------------------------------------------

    def acquire_lock(self, session_id: str, timeout: float | None = None) -> LockHandle:
        wait = self.lock_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        owner, pause = locks.new_owner(), 0.02
        while True:
            with self._tx() as db:
                holder = locks.try_acquire(db, session_id, owner, self.stale_after)
            if holder is None:
                return _Lock(self, session_id, owner)
            if time.monotonic() >= deadline:
                raise SessionLockedError(
                    f"session {session_id!r} is locked by {holder.describe()} "
                    f"(waited {wait:g}s); one process writes a session at a time. Read it "
                    "without the lock (`rlm sessions show ID` / rlm.sessions.show()), or "
                    "fork it (`rlm sessions fork ID NEW` / rlm.sessions.fork())",
                    holder,
                    locks.retry_after(holder, self.stale_after),
                )
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 0.25)

    def lock_holder(self, session_id: str) -> locks.LockHolder | None:
        with self._read() as db:
            return locks.live_holder(db, session_id, self.stale_after)

    def _renew(self, held: list[tuple[str, str]]) -> None:
        """Heartbeat every lock this store holds (on the renewal thread); a store busy
        with a long write is skipped this time rather than waited for."""
        if not self._mutex.acquire(timeout=1.0):
            return
        try:
            with self._tx() as db:
                locks.beat_all(db, held)
        finally:
            self._mutex.release()

    def close(self) -> None:
        self._held.clear()
        with self._mutex, contextlib.suppress(sqlite3.Error):
            self._db.close()

    def __repr__(self) -> str:
        return f"SQLiteSessionStore({str(self.path)!r})"
