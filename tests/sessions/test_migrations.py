"""Schema versioning: a blank file migrates to the expected schema; an older one moves
forward one migration at a time; a newer, foreign or corrupt file is refused clearly
and left byte for byte as it was."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from rlm.sessions import SessionStoreError, SQLiteSessionStore, list_sessions, show
from rlm.sessions.migrations import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION, migrate

EXPECTED = {
    "chunks": ["id", "hash", "codec", "size", "data"],
    "blobs": ["hash", "size", "chunk_count"],
    "blob_chunks": ["blob_hash", "seq", "chunk_id"],
    "turns": [
        "id", "parent_id", "session_id", "idx", "status", "root_prompt", "context_hash",
        "context_codec", "context_meta", "history_hash", "answer", "error", "usage", "cost",
        "iterations", "execution_time", "snapshot_kind", "snapshot_hash", "unrestorable",
        "checkpoint", "created_at", "idempotency_key",
    ],
    "sessions": ["id", "head_turn", "created_at", "updated_at", "forked_from", "config"],
    "locks": [
        "session_id", "owner", "pid", "hostname", "process_start", "acquired_at",
        "heartbeat_at",
    ],
}  # fmt: skip


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def schema(path: Path) -> dict[str, list[str]]:
    db = sqlite3.connect(path)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: [c[1] for c in db.execute(f"PRAGMA table_info({t})")] for t in tables}
    finally:
        db.close()


def test_a_blank_database_migrates_to_the_expected_schema(tmp_path: Path) -> None:
    path = tmp_path / "blank.db"
    sqlite3.connect(path).close()  # an empty SQLite file: version 0
    SQLiteSessionStore(path).close()
    assert schema(path) == EXPECTED
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == len(MIGRATIONS)
    assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"blob_chunks_chunk", "turns_parent", "turns_idempotency"} <= indexes
    db.close()
    SQLiteSessionStore(path).close()  # opening again changes nothing
    assert schema(path) == EXPECTED


def test_an_older_file_moves_forward_one_migration_at_a_time(tmp_path: Path) -> None:
    applied: list[str] = []

    def m1(db: sqlite3.Connection) -> None:
        applied.append("m1")
        db.execute("CREATE TABLE a (x)")

    def m2(db: sqlite3.Connection) -> None:
        applied.append("m2")
        db.execute("ALTER TABLE a ADD COLUMN y")

    db = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    assert migrate(db, [m1]) == 0
    assert migrate(db, [m1, m2]) == 1  # reports the version it found
    assert applied == ["m1", "m2"]
    assert [c[1] for c in db.execute("PRAGMA table_info(a)")] == ["x", "y"]
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    db.close()


def test_a_version_1_store_gains_idempotency_keys_and_keeps_its_turns(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    db = sqlite3.connect(path, isolation_level=None)
    migrate(db, MIGRATIONS[:1])  # the schema rlmx released first
    db.close()
    path.chmod(0o600)
    db = sqlite3.connect(path)  # a session and a turn, as that rlmx wrote them
    db.execute(
        "INSERT INTO turns (id, parent_id, session_id, idx, status, root_prompt, context_hash, "
        "context_codec, context_meta, history_hash, answer, error, usage, cost, iterations, "
        "execution_time, snapshot_kind, snapshot_hash, unrestorable, checkpoint, created_at) "
        "VALUES (1, NULL, 's', 0, 'completed', 'q', 'h', 'text', '{}', 'hh', 'a0', NULL, '{}', "
        "NULL, 1, 0.0, NULL, NULL, '{}', NULL, 1.0)"
    )
    db.execute("INSERT INTO sessions VALUES ('s', 1, 1.0, 1.0, NULL, '{}')")
    db.commit()
    db.close()
    store = SQLiteSessionStore(path)
    (turn,) = store.thread("s")
    assert (turn.answer, turn.idempotency_key) == ("a0", None)
    assert store.find_turn("s", "k") is None
    store.close()
    assert schema(path) == EXPECTED
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    db.close()


def test_a_failing_migration_leaves_the_file_at_its_old_version(tmp_path: Path) -> None:
    def good(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE a (x)")

    def bad(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE b (x)")
        raise RuntimeError("half way")

    db = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    migrate(db, [good])
    with pytest.raises(RuntimeError):
        migrate(db, [good, bad])
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"a"}
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    db.close()


def test_a_newer_schema_is_refused_without_touching_the_file(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    SQLiteSessionStore(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    before = digest(path)
    for opener in (lambda: SQLiteSessionStore(path), lambda: list_sessions(path)):
        with pytest.raises(SessionStoreError, match="newer than this rlmx") as info:
            opener()
        assert "upgrade rlmx" in str(info.value) and "not changed" in str(info.value)
    assert digest(path) == before


def test_a_foreign_sqlite_file_is_refused_without_touching_it(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE customers (name TEXT)")
    db.execute("INSERT INTO customers VALUES ('ada')")
    db.commit()
    db.close()
    before = digest(path)
    with pytest.raises(SessionStoreError, match=r"another application.*customers"):
        SQLiteSessionStore(path)
    assert digest(path) == before


@pytest.mark.parametrize(
    "content",
    [b"this is a text file, not a database\n" * 100, b"SQLite format 3\x00" + b"\xff" * 4000],
    ids=["text", "bad-header"],
)
def test_a_file_that_is_not_a_store_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(content)
    with pytest.raises(SessionStoreError, match="not a SQLite database, or it is corrupt"):
        SQLiteSessionStore(path)
    assert path.read_bytes() == content


def test_a_store_damaged_inside_gives_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "damaged.db"
    store = SQLiteSessionStore(path)
    store.ensure_session("s", {})
    store.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = db.execute("PRAGMA page_size").fetchone()[0]
    root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'sessions'").fetchone()[0]
    db.close()
    data = bytearray(path.read_bytes())
    data[(root - 1) * page : root * page] = b"\xa5" * page  # the sessions table's page
    path.write_bytes(bytes(data))
    with pytest.raises(SessionStoreError):
        show("s", path)


def test_a_missing_store_is_not_created_for_inspection(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    assert list_sessions(path) == []
    assert not path.exists()
    with pytest.raises(SessionStoreError, match="no session store"):
        show("x", path)
