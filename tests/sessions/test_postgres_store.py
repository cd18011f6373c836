"""What only the PostgreSQL store has: its URL (options, passwords never shown), its
schema and migrations, the optional dependency, and leases (expiry, takeover, renewal
by one thread, two processes contending for a session, a holder killed mid-turn).
The behaviour both stores share is tested on both in ``test_store.py``,
``test_durable_rlm.py`` and ``test_crash_safety.py``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from postgres_support import Cluster
from session_support import Program, child_env, durable_rlm, raw, run_child, submit

from rlm.base.errors import ConfigurationError
from rlm.sessions import SessionLockedError, SessionStoreError, list_sessions, show
from rlm.sessions.models import TurnWrite
from rlm.sessions.postgres_migrations import SCHEMA_VERSION, migrate
from rlm.sessions.postgres_store import PostgresSessionStore
from rlm.sessions.store import open_store


def write(index: int, context: Any) -> TurnWrite:
    return TurnWrite(
        index=index, status="completed", root_prompt="q", context=context, context_meta={},
        messages=[], answer=f"a{index}", error=None, usage={}, cost=None, iterations=1,
        execution_time=0.0, snapshot=None, checkpoint=None,
    )  # fmt: skip


def with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


# -- URLs --------------------------------------------------------------------------------


def test_postgres_urls_open_a_postgres_store_with_their_options(
    pg_url: str, pg_cluster: Cluster
) -> None:
    for url in (pg_url, pg_url.replace("postgresql://", "postgres://", 1)):
        store = open_store(with_query(url, "lock_timeout=2.5&lease=12&pool_size=2"))
        assert isinstance(store, PostgresSessionStore)
        assert (store.lock_timeout, store.lease, store.heartbeat) == (2.5, 12.0, 4.0)
        assert store.url == pg_url  # shown without the store's own options
        store.close()
    # libpq's own URL forms: a Unix socket's folder, a password in the query.
    socket_url = (
        f"postgresql:///{pg_url.rsplit('/', 1)[1]}?host={pg_cluster.sockets}"
        f"&port={pg_cluster.port}&user=postgres&password=s3cr3t-pw"
    )
    store = open_store(socket_url)
    store.ensure_session("via-socket", {})
    assert "s3cr3t-pw" not in store.url and "password=***" in store.url
    store.close()
    assert [s.id for s in list_sessions(pg_url)] == ["via-socket"]
    for query, message in [
        ("lease=soon", "is not a number"),
        ("lease=2&heartbeat=3", "must be shorter than the lease"),
        ("lock_timeout=-1", "must be positive"),
        ("schema=Robert'); DROP TABLE x", "lowercase letters"),
    ]:
        with pytest.raises(ConfigurationError, match=message):
            open_store(with_query(pg_url, query))


def test_the_default_store_can_be_a_postgres_url(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_SESSION_STORE", pg_url)
    store = open_store()
    assert isinstance(store, PostgresSessionStore) and store.url == pg_url
    store.close()


def test_a_password_in_the_url_is_never_shown(pg_cluster: Cluster) -> None:
    secret = "hunter2-Secret"
    url = f"postgresql://postgres:{secret}@127.0.0.1:{pg_cluster.port}/no_such_database"
    with pytest.raises(SessionStoreError, match="no_such_database") as info:
        open_store(with_query(url, f"sslpassword={secret}"))
    assert secret not in str(info.value) and secret not in repr(info.value)
    # Through the public API too, and a libpq option it refuses.
    with pytest.raises(SessionStoreError) as info:
        durable_rlm(Program({}), with_query(url, "no_such_option=1"), "s")
    assert secret not in str(info.value)
    # A working URL with a password: the store shows it without.
    good = f"postgresql://postgres:{secret}@127.0.0.1:{pg_cluster.port}/postgres?schema=pw"
    store = open_store(good)
    assert secret not in store.url and secret not in repr(store)
    assert store.url.startswith("postgresql://postgres@127.0.0.1:")
    store.close()


def test_a_server_that_is_not_there_is_a_store_error(pg_cluster: Cluster) -> None:
    with socket_port() as port, pytest.raises(SessionStoreError, match="cannot open"):
        open_store(f"postgresql://postgres@127.0.0.1:{port}/db?connect_timeout=5")


class socket_port:
    """A loopback port nothing listens on, while the block runs."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def test_without_psycopg_a_postgres_url_names_the_extra_and_nothing_else_needs_it() -> None:
    script = """
import sys
import rlm, rlm.sessions
from rlm.sessions.store import open_store
store = open_store(sys.argv[1] + "/s.db")
store.close()
print("IMPORTED", "psycopg" in sys.modules)
sys.modules["psycopg"] = None  # as if it were not installed
try:
    open_store("postgresql://u:pw@127.0.0.1:1/db")
except Exception as exc:
    print(type(exc).__name__, exc)
"""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        lines = run_child(script, folder).stdout.splitlines()
    assert lines[0] == "IMPORTED False"
    assert lines[1].startswith("MissingExtraError ")
    assert "pip install 'rlmx[postgres]'" in lines[1] and "pw" not in lines[1]


def test_rlm_serve_checks_a_postgres_store_at_start_up(pg_url: str, pg_cluster: Cluster) -> None:
    import io

    from rlm.cli.serve import _open_store

    err = io.StringIO()
    store = _open_store(pg_url, err)
    assert store is not None and err.getvalue() == ""
    store.close()
    assert _open_store(pg_cluster.url("no_such_database"), err) is None
    assert "does not exist" in err.getvalue()


# -- schema and migrations ---------------------------------------------------------------


def test_a_fresh_database_gets_the_schema_once(pg_url: str) -> None:
    store = open_store(pg_url)
    store.close()
    tables = {
        r[0]
        for r in raw(store, "SELECT table_name FROM information_schema.tables "
                     "WHERE table_schema = 'rlmx'")
    }  # fmt: skip
    assert tables == {"chunks", "blobs", "blob_chunks", "turns", "sessions", "locks",
                      "schema_version"}  # fmt: skip
    assert raw(store, "SELECT application, version FROM schema_version") == [
        ("rlmx", SCHEMA_VERSION)
    ]
    open_store(pg_url).close()  # opening again changes nothing
    assert raw(store, "SELECT COUNT(*) FROM schema_version") == [(1,)]


def test_replicas_opening_a_fresh_database_at_once_migrate_it_once(pg_url: str) -> None:
    opened: list[Any] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_one() -> None:
        start.wait()
        try:
            opened.append(open_store(pg_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(opened) == 4
    assert raw(opened[0], "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    for store in opened:
        store.close()


def test_a_newer_or_foreign_schema_is_refused_untouched(pg_url: str) -> None:
    store = open_store(pg_url)
    store.close()
    raw(store, "UPDATE schema_version SET version = 99")
    with pytest.raises(SessionStoreError, match="newer than this rlmx") as info:
        open_store(pg_url)
    assert "not changed" in str(info.value)
    assert raw(store, "SELECT version FROM schema_version") == [(99,)]

    raw(store, "CREATE SCHEMA crm")
    raw(store, "CREATE TABLE crm.customers (name TEXT)")
    with pytest.raises(SessionStoreError, match=r"another application.*customers"):
        open_store(with_query(pg_url, "schema=crm"))
    tables = raw(
        store, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'crm'"
    )
    assert tables == [("customers",)]


def test_schemas_keep_stores_apart_and_inspection_creates_nothing(pg_url: str) -> None:
    assert list_sessions(with_query(pg_url, "schema=absent")) == []
    with pytest.raises(SessionStoreError, match="no session store"):
        show("x", with_query(pg_url, "schema=absent"))
    a = open_store(with_query(pg_url, "schema=team_a"))
    b = open_store(with_query(pg_url, "schema=team_b"))
    a.ensure_session("only-a", {})
    assert [s.id for s in list_sessions(a)] == ["only-a"] and list_sessions(b) == []
    schemas = raw(a, "SELECT nspname FROM pg_namespace WHERE nspname IN ('absent', 'team_a')")
    assert schemas == [("team_a",)]
    a.close()
    b.close()


def test_migrations_apply_one_at_a_time_and_a_failed_one_changes_nothing(pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("SET search_path TO m")
        first = ["CREATE TABLE a (x INTEGER)"]
        assert migrate(conn, "m", "test", migrations=first) == 0
        second = [*first, "ALTER TABLE a ADD COLUMN y INTEGER"]
        assert migrate(conn, "m", "test", migrations=second) == 1
        with pytest.raises(psycopg.errors.DivisionByZero):
            migrate(conn, "m", "test", migrations=[*second, "CREATE TABLE b (x INT); SELECT 1/0"])
        columns = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'm' "
            "AND table_name = 'a' ORDER BY ordinal_position"
        ).fetchall()
        assert columns == [("x",), ("y",)]
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'm'"
        ).fetchall()
        assert sorted(tables) == [("a",), ("schema_version",)]
        assert conn.execute("SELECT version FROM m.schema_version").fetchall() == [(2,)]


# -- leases ------------------------------------------------------------------------------


def test_an_expired_lease_is_taken_over_and_the_old_writer_saves_nothing(pg_url: str) -> None:
    a = PostgresSessionStore(pg_url, lease=30, heartbeat=29)  # no renewal during the test
    b = PostgresSessionStore(pg_url, lock_timeout=0.3)
    a.ensure_session("s", {})
    lock_a = a.acquire_lock("s")
    with pytest.raises(SessionLockedError, match="lease runs out in") as info:
        b.acquire_lock("s")
    assert info.value.holder.owner == lock_a.owner and info.value.holder.pid == os.getpid()
    assert info.value.retry_after is not None and 25 < info.value.retry_after <= 30
    # The holder stopped renewing long ago (frozen, partitioned): its lease has expired.
    raw(a, "UPDATE locks SET expires_at = expires_at - 60")
    assert a.lock_holder("s") is None
    lock_b = b.acquire_lock("s")  # taken over at once
    with pytest.raises(SessionLockedError, match="lost its write lock"):
        a.write_turn("s", lock_a.owner, write(0, "from a"))
    assert b.thread("s") == []  # nothing of a's turn was saved
    b.write_turn("s", lock_b.owner, write(0, "from b"))
    lock_a.release()  # letting go of a lost lease does not free the new holder's
    holder = b.lock_holder("s")
    assert holder is not None and holder.owner == lock_b.owner
    lock_b.release()
    assert b.lock_holder("s") is None
    a.close()
    b.close()


def test_renewals_keep_a_lease_past_its_length(pg_url: str) -> None:
    a = PostgresSessionStore(pg_url, lease=2, heartbeat=0.2)
    b = PostgresSessionStore(pg_url, lock_timeout=4.5)
    lock = a.acquire_lock("s")
    first = a.lock_holder("s")
    with pytest.raises(SessionLockedError):
        b.acquire_lock("s")  # waited more than twice the lease: only renewals kept it
    later = a.lock_holder("s")
    assert first is not None and later is not None and first.expires_at and later.expires_at
    assert later.expires_at > first.expires_at + 2
    lock.release()
    b.acquire_lock("s", timeout=0).release()
    a.close()
    b.close()


ONE_THREAD = """
import sys, threading, time
from rlm.sessions import SQLiteSessionStore
from rlm.sessions.locks import RENEWER
from rlm.sessions.postgres_store import PostgresSessionStore

def renewers():
    return sum(t.name == "rlm-session-lock-renewer" for t in threading.enumerate())

pg = PostgresSessionStore(sys.argv[1], lease=3, heartbeat=0.1)
sq = SQLiteSessionStore(sys.argv[2], heartbeat=0.1)
base = threading.active_count()
held = [pg.acquire_lock(f"p{i}") for i in range(25)] + [sq.acquire_lock(f"q{i}") for i in range(25)]
print("RENEWERS", renewers(), "NEW_THREADS", threading.active_count() - base)
first = {h.session_id: h.store.lock_holder(h.session_id).heartbeat_at for h in held}
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    now = {h.session_id: h.store.lock_holder(h.session_id).heartbeat_at for h in held}
    if all(now[k] > first[k] for k in first):
        break
    time.sleep(0.05)
print("ALL_RENEWED", all(now[k] > first[k] for k in first))
for h in held:
    h.release()
deadline = time.monotonic() + 30
while RENEWER.running and time.monotonic() < deadline:
    time.sleep(0.05)
print("RENEWERS_AFTER", renewers())
"""


def test_one_thread_renews_every_lease_of_every_store(pg_url: str, tmp_path: Path) -> None:
    out = run_child(ONE_THREAD, pg_url, str(tmp_path / "s.db")).stdout.split()
    assert out == ["RENEWERS", "1", "NEW_THREADS", "1", "ALL_RENEWED", "True",
                   "RENEWERS_AFTER", "0"]  # fmt: skip


HOLDER = """
import sys
from session_support import Program, durable_rlm, repl, submit

class Announcing(Program):
    def __call__(self, prompt):
        if not isinstance(prompt, str) and self.key(prompt) == "t1":
            print("IN_TURN_1", flush=True)
        return super().__call__(prompt)

program = Announcing({"t0": [submit("'zero'", "x = 41")],
                      "t1": [repl("import time\\ntime.sleep(600)")]})
rlm = durable_rlm(program, sys.argv[1], "shared")
rlm.completion("c0", root_prompt="t0")
print("HOLDING", flush=True)
rlm.completion("c1", root_prompt="t1")
"""


def test_two_processes_and_a_holder_killed_mid_turn(pg_url: str) -> None:
    url = with_query(pg_url, "lease=2&heartbeat=0.4")
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    try:
        assert child.stdout is not None
        lines = [child.stdout.readline().strip() for _ in range(2)]
        assert lines == ["HOLDING", "IN_TURN_1"], child.stderr.read() if child.stderr else ""
        # A second process waits (longer than the lease: the holder renews it), then
        # is told who holds the session and how long its lease has left.
        with pytest.raises(SessionLockedError) as info:
            durable_rlm(Program({}), with_query(url, "lock_timeout=3"), "shared")
        assert info.value.holder.pid == child.pid
        assert info.value.retry_after is not None and 0 <= info.value.retry_after <= 2
        assert [t.answer for t in show("shared", url).turns] == ["zero"]  # reads: allowed
    finally:
        child.send_signal(signal.SIGKILL)  # the holder dies in the middle of turn 1
        child.wait()
    # Its lease expires; the next writer takes over from the last completed turn.
    program = Program({"t1": [submit("f'{x + 1} {final_answer_0} {context_1}'")]})
    rlm = durable_rlm(program, with_query(url, "lock_timeout=30"), "shared")
    assert rlm.completion("c1", root_prompt="t1").response == "42 zero c1"
    rlm.close()
    turns = show("shared", url).turns
    assert [(t.index, t.status, t.answer) for t in turns] == [
        (0, "completed", "zero"),
        (1, "completed", "42 zero c1"),
    ]


def test_concurrent_writers_share_content_while_a_deletion_collects_garbage(pg_url: str) -> None:
    """Replicas writing the same content at once (the same chunks, inserted by two
    transactions together) while another deletes a session that used it: every turn
    stays whole and readable, each chunk is stored once."""
    document = "the same long document, sent to every session. " * 60_000  # ~3 MB
    stores = [PostgresSessionStore(pg_url) for _ in range(4)]
    start = threading.Barrier(5)
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        store, sid = stores[i], f"w{i}"
        try:
            store.ensure_session(sid, {})
            owner = store.acquire_lock(sid).owner
            start.wait()
            for n in range(6):
                store.write_turn(sid, owner, write(n, f"{document}{n % 3}"))
        except BaseException as exc:
            errors.append(exc)

    def deleter() -> None:
        store = stores[0]
        try:
            start.wait()
            for n in range(6):
                store.ensure_session("junk", {})
                lock = store.acquire_lock("junk")
                store.write_turn("junk", lock.owner, write(0, f"{document}{n % 3}"))
                lock.release()
                store.delete("junk")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    threads.append(threading.Thread(target=deleter))
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert errors == []
    for i, store in enumerate(stores):
        turns = store.thread(f"w{i}")
        assert [store.read_context(t) for t in turns] == [f"{document}{n % 3}" for n in range(6)]
    hashes = raw(stores[0], "SELECT hash FROM chunks")
    assert len(hashes) == len(set(hashes))
    for store in stores:
        store.close()
