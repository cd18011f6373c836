"""The store's schema, as a list of migrations applied on every open (like ``llm``'s).

``MIGRATIONS[i]`` takes a database at schema version ``i`` to ``i + 1``; the version is
``PRAGMA user_version`` and the file is marked as ours by ``PRAGMA application_id``.
Each migration runs in its own transaction with the version bump, so a crash leaves
the file at the old version or the new one, never between. Append new migrations;
never edit a released one.

``inspect_file`` looks at a file before anything is written: a file that is not
SQLite, a SQLite file of another application, or one written by a newer rlmx is
refused with a clear ``SessionStoreError`` and left untouched.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rlm.base.errors import SessionStoreError

APPLICATION_ID = 0x524C4D58  # "RLMX"

Migration = Callable[[sqlite3.Connection], None]


def _run(db: sqlite3.Connection, script: str) -> None:
    # Not executescript(): it would COMMIT the migration's transaction first.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def m001_initial(db: sqlite3.Connection) -> None:
    """Content-addressed chunked blobs, sessions as pointers to a chain of turns, locks."""
    _run(
        db,
        """
        CREATE TABLE chunks (
            id INTEGER PRIMARY KEY,
            hash TEXT NOT NULL UNIQUE,      -- sha256 of the raw bytes
            codec INTEGER NOT NULL,         -- 0 raw, 1 zlib, 2 zstd
            size INTEGER NOT NULL,          -- raw size
            data BLOB NOT NULL
        );
        CREATE TABLE blobs (
            hash TEXT PRIMARY KEY,          -- sha256 of the whole content
            size INTEGER NOT NULL,
            chunk_count INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE blob_chunks (
            blob_hash TEXT NOT NULL,
            seq INTEGER NOT NULL,
            chunk_id INTEGER NOT NULL,
            PRIMARY KEY (blob_hash, seq)
        ) WITHOUT ROWID;
        CREATE INDEX blob_chunks_chunk ON blob_chunks (chunk_id);
        CREATE TABLE turns (
            id INTEGER PRIMARY KEY,
            parent_id INTEGER,              -- the previous turn of the thread (NULL: first)
            session_id TEXT NOT NULL,       -- the session that wrote it
            idx INTEGER NOT NULL,           -- N of context_N / history_N / final_answer_N
            status TEXT NOT NULL,           -- completed | stopped | failed
            root_prompt TEXT,
            context_hash TEXT NOT NULL,
            context_codec TEXT NOT NULL,    -- text | bytes | pickle
            context_meta TEXT NOT NULL,     -- JSON: type and lengths
            history_hash TEXT NOT NULL,     -- JSON list of messages
            answer TEXT,
            error TEXT,
            usage TEXT NOT NULL,            -- JSON UsageSummary
            cost REAL,
            iterations INTEGER,
            execution_time REAL,
            snapshot_kind TEXT,             -- parts | bytes | NULL (nothing saved)
            snapshot_hash TEXT,
            unrestorable TEXT NOT NULL,     -- JSON {name: reason}
            checkpoint TEXT,                -- JSON, for a turn that did not complete
            created_at REAL NOT NULL
        );
        CREATE INDEX turns_parent ON turns (parent_id);
        CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            head_turn INTEGER,              -- the thread's last turn (NULL: none yet)
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            forked_from TEXT,
            config TEXT NOT NULL            -- JSON: backend, model, environment (no secrets)
        ) WITHOUT ROWID;
        CREATE TABLE locks (
            session_id TEXT PRIMARY KEY,
            owner TEXT NOT NULL,            -- random token of the holding object
            pid INTEGER NOT NULL,
            hostname TEXT NOT NULL,
            process_start TEXT,             -- tells a reused pid from the holder
            acquired_at REAL NOT NULL,
            heartbeat_at REAL NOT NULL
        ) WITHOUT ROWID;
        """,
    )


def m002_idempotency_keys(db: sqlite3.Connection) -> None:
    """A turn may carry the idempotency key of the request that wrote it."""
    _run(
        db,
        """
        ALTER TABLE turns ADD COLUMN idempotency_key TEXT;
        CREATE INDEX turns_idempotency ON turns (idempotency_key)
            WHERE idempotency_key IS NOT NULL;
        """,
    )


MIGRATIONS: list[Migration] = [m001_initial, m002_idempotency_keys]
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class FileState:
    application_id: int
    version: int
    tables: list[str]


def inspect_file(db: sqlite3.Connection, path: str, latest: int = SCHEMA_VERSION) -> FileState:
    """Read the file's identity without writing; raise ``SessionStoreError`` for a file
    that is not SQLite, belongs to another application or has a newer schema."""
    try:
        app_id = int(db.execute("PRAGMA application_id").fetchone()[0])
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    except sqlite3.DatabaseError as exc:
        raise SessionStoreError(
            f"{path} is not an rlmx session store: it is not a SQLite database, or it is "
            f"corrupt ({exc})"
        ) from None
    if app_id != APPLICATION_ID and (tables or app_id != 0):
        shown = ", ".join(sorted(tables)[:8]) or "none"
        raise SessionStoreError(
            f"{path} is a SQLite database of another application, not an rlmx session "
            f"store (application_id {app_id:#x}, tables: {shown}); choose another file"
        )
    if version > latest:
        raise SessionStoreError(
            f"{path} has session store schema version {version}, newer than this rlmx "
            f"understands ({latest}); upgrade rlmx to open it. The file was not changed."
        )
    return FileState(app_id, version, tables)


def migrate(
    db: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS, path: str = "store"
) -> int:
    """Bring the database (autocommit connection) to ``len(migrations)``; returns the
    version it was at. Safe against a concurrent opener: each step re-reads the version
    under the write lock."""
    latest = len(migrations)
    start = inspect_file(db, path, latest).version
    if start == latest:
        return start
    if start == 0:  # only effective on an empty file: lets deletes give space back
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")
    while True:
        db.execute("BEGIN IMMEDIATE")
        try:
            version = inspect_file(db, path, latest).version
            if version >= latest:
                db.execute("COMMIT")
                return start
            migrations[version](db)
            db.execute(f"PRAGMA user_version = {version + 1}")
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
