"""The stores below the engine: content-addressed chunked blobs, atomic turns, threads
and forks as pointers, garbage collection, idempotency keys. Every test that goes
through ``SessionStore`` runs on both stores (SQLite, and a real PostgreSQL server:
``store_spec`` in ``conftest.py``)."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from session_support import raw

from rlm.base.errors import ConfigurationError
from rlm.sessions import (
    SessionLockedError,
    SessionNotFoundError,
    SessionStoreError,
    SQLiteSessionStore,
    blobs,
    codecs,
    delete,
    export,
    fork,
    list_sessions,
    show,
)
from rlm.sessions.models import SnapshotWrite, TurnWrite
from rlm.sessions.store import MissingPartsError, SessionStore, open_store, parse_spec


def write(index: int, context: Any, **kw: Any) -> TurnWrite:
    fields: dict[str, Any] = dict(
        index=index, status="completed", root_prompt="q", context=context,
        context_meta={}, messages=[{"role": "user", "content": f"m{index}"}], answer=f"a{index}",
        error=None, usage={}, cost=None, iterations=1, execution_time=0.0, snapshot=None,
        checkpoint=None,
    )  # fmt: skip
    fields.update(kw)
    return TurnWrite(**fields)


def counts(store: SessionStore) -> dict[str, int]:
    return {
        t: raw(store, f"SELECT COUNT(*) FROM {t}")[0][0]
        for t in ("turns", "blobs", "chunks", "sessions")
    }


@pytest.fixture
def store(store_spec: str) -> Any:
    opened = open_store(store_spec)
    yield opened
    opened.close()


def session(store: SessionStore, sid: str = "s") -> str:
    store.ensure_session(sid, {"backend": "scripted"})
    return store.acquire_lock(sid).owner


# -- blobs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["", "plain", "ünïcödé \ud800 lone surrogate", b"\x00\x01bytes", {"k": [1, (2, 3)]},
     [{"role": "user", "content": "x"}], {3: "int keys"}],
    ids=["empty", "str", "unicode", "bytes", "dict", "messages", "int-keys"],
)  # fmt: skip
def test_values_round_trip_exactly(store: SessionStore, value: Any) -> None:
    owner = session(store)
    turn = store.write_turn("s", owner, write(0, value))
    assert store.read_context(turn) == value
    assert type(store.read_context(turn)) is type(value)


def test_a_context_is_stored_once_per_content(store: SessionStore) -> None:
    owner = session(store)
    big = "lorem ipsum dolor " * 200_000  # 3.6 MB: 4 chunks
    store.write_turn("s", owner, write(0, big))
    before = counts(store)
    store.write_turn("s", owner, write(1, "".join(big)))  # equal content, another object
    after = counts(store)
    # Only the new turn's history is new: the 3.6 MB context is not written again.
    assert after["chunks"] == before["chunks"] + 1 and after["blobs"] == before["blobs"] + 1
    turns = store.thread("s")
    assert turns[0].context_hash == turns[1].context_hash


@contextlib.contextmanager
def blob_db(store: SessionStore) -> Iterator[Any]:
    """A connection to the store's database that ``blobs`` can write to directly."""
    if isinstance(store, SQLiteSessionStore):
        db = sqlite3.connect(store.path, isolation_level=None)
        try:
            yield db
        finally:
            db.close()
        return
    import psycopg

    from rlm.sessions.postgres_db import PgConnection

    with psycopg.connect(store.url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{store.schema}"')  # type: ignore[attr-defined]
        yield PgConnection(conn)


def test_chunks_are_shared_between_blobs_and_compressed(store: SessionStore) -> None:
    with blob_db(store) as db:
        writer = blobs.BlobWriter(db, chunk_size=1024)
        writer.write(b"a" * 4096)
        first = writer.finish()
        writer = blobs.BlobWriter(db, chunk_size=1024)
        writer.write(b"a" * 2048 + b"b" * 10)
        second = writer.finish()
        assert db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0] == 2  # 'a'*1024, 'b'*10
        assert blobs.read_bytes(db, first) == b"a" * 4096
        assert blobs.read_bytes(db, second) == b"a" * 2048 + b"b" * 10
        used = {r[0] for r in db.execute("SELECT codec FROM chunks WHERE size = 1024").fetchall()}
        assert used == {codecs.writing_codec()}  # zstd where installed, else zlib
        random = blobs.put_bytes(db, bytes(range(256)) * 7 + os.urandom(5000))
        assert blobs.read_bytes(db, random)[:256] == bytes(range(256))
        # Storing the same content again (as a second writer would) changes nothing.
        assert blobs.put_bytes(db, b"a" * 2048 + b"b" * 10) == second
        assert db.execute("SELECT COUNT(*) FROM blobs").fetchone()[0] == 3


def test_a_large_text_is_written_and_read_without_a_second_copy(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = session(store)
    text = "".join(f"line {i} of a long document\n" for i in range(1_000_000))  # ~29 MB
    tracemalloc.start()
    turn = store.write_turn("s", owner, write(0, text))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 0.25 * len(text), peak  # chunk-sized buffers, never the whole text
    monkeypatch.setattr(blobs, "MMAP_TEXT_BYTES", 1 << 20)  # take the mmap path
    tracemalloc.start()
    back = store.read_context(turn)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert back == text
    assert peak < 1.25 * len(text), peak  # the str itself, plus a chunk


def test_a_damaged_blob_is_a_store_error(store: SessionStore) -> None:
    owner = session(store)
    turn = store.write_turn("s", owner, write(0, "x" * 3_000_000))
    raw(
        store,
        "DELETE FROM chunks WHERE id = (SELECT MAX(chunk_id) FROM blob_chunks WHERE blob_hash = ?)",
        (turn.context_hash,),
    )
    with pytest.raises(SessionStoreError, match="damaged"):
        store.read_context(turn)


# -- turns and threads -------------------------------------------------------------------


class Exploding:
    def __reduce__(self) -> Any:
        raise RuntimeError("cannot pickle me")


def test_a_failed_write_leaves_no_partial_rows(store: SessionStore) -> None:
    owner = session(store)
    store.write_turn("s", owner, write(0, "fine"))
    before = counts(store)
    # The context streams several MB of chunks before its pickling fails.
    with pytest.raises(RuntimeError, match="cannot pickle me"):
        store.write_turn("s", owner, write(1, ["x" * 3_000_000, Exploding()]))
    assert counts(store) == before
    assert [t.index for t in store.thread("s")] == [0]


def test_parts_snapshots_need_their_bodies(store: SessionStore) -> None:
    owner = session(store)
    body = b"pickled body"
    digest = __import__("hashlib").sha256(body).hexdigest()
    manifest = json.dumps({"entries": [{"name": "v", "digest": digest}]}).encode()
    missing = SnapshotWrite("parts", manifest, {}, [digest])
    with pytest.raises(MissingPartsError):
        store.write_turn("s", owner, write(0, "c", snapshot=missing))
    present = SnapshotWrite("parts", manifest, {digest: body}, [digest])
    turn = store.write_turn("s", owner, write(0, "c", snapshot=present))
    assert store.read_part(digest) == body
    # The next turn refers to the same body without sending it again.
    store.write_turn("s", owner, write(1, "c", snapshot=missing))
    assert turn.snapshot_kind == "parts"


def test_writes_need_the_lock(store: SessionStore) -> None:
    session(store)
    with pytest.raises(SessionLockedError, match="lost its write lock"):
        store.write_turn("s", "not-the-owner", write(0, "c"))


def test_a_resumed_turn_replaces_its_stopped_one(store: SessionStore) -> None:
    owner = session(store)
    store.write_turn("s", owner, write(0, "c0"))
    store.write_turn("s", owner, write(1, "c1", status="stopped", answer=None))
    store.write_turn("s", owner, write(1, "c1", replaces_head=True))
    assert [(t.index, t.status) for t in store.thread("s")] == [(0, "completed"), (1, "completed")]
    # Without replaces_head (a new request after a stop) both stay.
    store.write_turn("s", owner, write(2, "c2", status="failed", answer=None))
    store.write_turn("s", owner, write(3, "c3"))
    assert [t.status for t in store.thread("s")] == ["completed"] * 2 + ["failed", "completed"]


def test_forks_share_turns_and_deletion_frees_only_what_is_unshared(
    store: SessionStore, store_spec: str
) -> None:
    path = store_spec
    owner = session(store, "a")
    store.write_turn("a", owner, write(0, "shared context " * 10_000))
    fork("a", "b", path)
    with pytest.raises(Exception, match="already exists"):
        fork("a", "b", path)
    owner_b = store.acquire_lock("b").owner
    store.write_turn("b", owner_b, write(1, "only b"))
    store.write_turn("a", owner, write(1, "only a"))
    assert [t.answer for t in show("b", path).turns] == ["a0", "a1"]
    assert show("a", path).turns[0].id == show("b", path).turns[0].id

    with pytest.raises(SessionLockedError, match="in use by pid"):
        delete("a", path)
    delete("a", path, force=True)
    with pytest.raises(SessionNotFoundError):
        show("a", path)
    turns = show("b", path).turns
    assert [store.read_context(t) for t in turns] == ["shared context " * 10_000, "only b"]
    delete("b", path, force=True)
    assert counts(store) == {"turns": 0, "blobs": 0, "chunks": 0, "sessions": 0}


def test_listing_showing_and_exporting(store: SessionStore, store_spec: str) -> None:
    path = store_spec
    owner = session(store, "one")
    store.write_turn("one", owner, write(0, {"doc": "text"}, usage={"x": 1}, cost=0.5))
    (summary,) = list_sessions(path)
    assert (summary.id, summary.turns, summary.last_status) == ("one", 1, "completed")
    assert summary.locked_by is not None and summary.locked_by.owner == owner
    detail = show("one", path)
    json.dumps(detail.to_dict())  # JSON-able for --json
    data = export("one", path, trust_pickles=True)
    assert json.loads(json.dumps(data)) == data
    assert data["turns"][0]["context"] == {"doc": "text"}
    assert export("one", path)["turns"][0]["context"]["pickle"]["trusted"] is False
    assert data["turns"][0]["history"] == [{"role": "user", "content": "m0"}]
    assert "context" not in export("one", path, contexts=False)["turns"][0]


def test_store_specs(tmp_path: Path) -> None:
    assert parse_spec(f"sqlite:///{tmp_path}/a.db?lock_timeout=2")[1] == {"lock_timeout": 2.0}
    assert parse_spec("sqlite:rel.db")[0] == Path("rel.db")
    with pytest.raises(ConfigurationError, match="sqlite: URLs and postgresql:// URLs") as info:
        parse_spec("mysql://user:hunter2@host/db")
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigurationError, match="unknown session store URL option"):
        parse_spec("sqlite:///x.db?nope=1")
    opened = open_store(f"sqlite:///{tmp_path}/u.db?synchronous=full&lock_timeout=0.5")
    assert opened.lock_timeout == 0.5
    assert open_store(opened) is opened
    opened.close()


# -- idempotency keys --------------------------------------------------------------------


def test_a_turn_is_found_by_its_idempotency_key(store: SessionStore) -> None:
    owner = session(store)
    first = store.write_turn("s", owner, write(0, "c0", idempotency_key="k-0"))
    store.write_turn("s", owner, write(1, "c1"))
    stopped = store.write_turn(
        "s", owner, write(2, "c2", status="stopped", answer=None, idempotency_key="k-2")
    )
    assert first.idempotency_key == "k-0" and store.thread("s")[1].idempotency_key is None
    assert store.find_turn("s", "k-0") == first
    assert store.find_turn("s", "k-2") == stopped  # its status tells it did not complete
    # The resumed turn (same request, same key) replaces the stopped one in the thread.
    done = store.write_turn("s", owner, write(2, "c2", replaces_head=True, idempotency_key="k-2"))
    assert store.find_turn("s", "k-2") == done and done.completed
    assert store.find_turn("s", "nope") is None
    assert store.find_turn("absent", "k-0") is None
    other = session(store, "other")
    store.write_turn("other", other, write(0, "c0", idempotency_key="k-other"))
    assert store.find_turn("s", "k-other") is None  # keys belong to a session's thread
    # A fork's thread holds the turns it shares: their keys are found there too.
    store.fork("s", "f")
    assert store.find_turn("f", "k-0") == first
    # The interface's default (for stores without an index) agrees.
    assert SessionStore.find_turn(store, "s", "k-2") == done
    assert SessionStore.find_turn(store, "absent", "k-0") is None


def test_a_parts_body_is_stored_by_its_own_hash_unless_hashed_here(store: SessionStore) -> None:
    """A body's digest from a worker is never taken on trust: the store hashes the body
    and the manifest's claim is then missing. Only an in-process environment's digests
    (``hashed_here``) are used as they are."""
    owner = session(store)
    body, other = b"the real body" * 100, b"what the digest claims"
    claimed = __import__("hashlib").sha256(other).hexdigest()
    manifest = json.dumps({"entries": [{"name": "v", "digest": claimed}]}).encode()
    lying = SnapshotWrite("parts", manifest, {claimed: body}, [claimed])
    with pytest.raises(MissingPartsError):
        store.write_turn("s", owner, write(0, "c", snapshot=lying))
    real = __import__("hashlib").sha256(body).hexdigest()
    manifest = json.dumps({"entries": [{"name": "v", "digest": real}]}).encode()
    here = SnapshotWrite("parts", manifest, {real: body}, [real], hashed_here=True)
    store.write_turn("s", owner, write(0, "c", snapshot=here))
    assert store.read_part(real) == body


@pytest.mark.parametrize("size", [300_000, (4 << 20) + 12_345, (9 << 20) + 1])
def test_large_blobs_round_trip_through_the_packing_thread(store: SessionStore, size: int) -> None:
    """Blobs of one chunk and of several (compressed on a second thread while the
    writer hashes): the bytes come back exactly, under the sha256 of the whole."""
    half = size // 2
    data = (b"compressible " * (half // 13 + 1))[:half] + os.urandom(size - half)
    with blob_db(store) as db:
        digest = blobs.put_bytes(db, data)
        assert digest == __import__("hashlib").sha256(data).hexdigest()
        assert bytes(blobs.read_bytes(db, digest)) == data
        count = db.execute("SELECT chunk_count FROM blobs WHERE hash = ?", (digest,)).fetchone()
        assert count[0] == -(-size // blobs.CHUNK_SIZE)
        # written again in pieces: the same blob, nothing new stored
        chunks_before = db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        writer = blobs.BlobWriter(db)
        for start in range(0, size, 700_001):
            writer.write(data[start : start + 700_001])
        assert writer.finish() == digest
        assert db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0] == chunks_before
