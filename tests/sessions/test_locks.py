"""One writer per session across processes: a bounded wait then ``SessionLockedError``;
read-only inspection meanwhile; stale locks of dead processes are broken."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from session_support import Program, child_env, durable_rlm, submit

from rlm.sessions import SessionLockedError, SQLiteSessionStore, list_sessions, show
from rlm.sessions.locks import HOSTNAME

HOLDER = """
import sys, time
from session_support import Program, durable_rlm, submit
rlm = durable_rlm(Program({"q": [submit("'held'")]}), sys.argv[1], "shared")
rlm.completion("c", root_prompt="q")
print("HOLDING", flush=True)
time.sleep(60)
"""


def hold(store: Path) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.strip() == "HOLDING", child.stderr.read() if child.stderr else ""
    return child


def test_a_second_process_waits_then_gets_session_locked(tmp_path: Path) -> None:
    store = tmp_path / "s.db"
    child = hold(store)
    try:
        url = f"sqlite:///{store}?lock_timeout=0.6"
        started = time.monotonic()
        with pytest.raises(SessionLockedError) as info:
            durable_rlm(Program({}), url, "shared")
        waited = time.monotonic() - started
        assert 0.6 <= waited < 3
        assert f"pid {child.pid} on {HOSTNAME}" in str(info.value)
        assert info.value.holder.pid == child.pid
        assert info.value.retry_after is None  # a live process here: until it lets go
        # Reading is always allowed, and shows who holds it.
        assert show("shared", store).turns[0].answer == "held"
        (summary,) = list_sessions(store)
        assert summary.locked_by is not None and summary.locked_by.pid == child.pid
        # Another session of the same file is free.
        durable_rlm(Program({}), url, "other").close()
    finally:
        child.kill()
        child.wait()
    # The holder died without releasing: its lock is stale and is broken at once.
    started = time.monotonic()
    rlm = durable_rlm(Program({"q2": [submit("'mine now'")]}), store, "shared")
    assert time.monotonic() - started < 2
    assert rlm.completion("c2", root_prompt="q2").response == "mine now"
    rlm.close()


def test_the_lock_of_a_killed_unreaped_child_is_broken(tmp_path: Path) -> None:
    store = tmp_path / "z.db"
    child = hold(store)
    os.kill(child.pid, signal.SIGKILL)
    time.sleep(0.2)  # a zombie until reaped below: dead all the same
    try:
        rlm = durable_rlm(Program({}), f"sqlite:///{store}?lock_timeout=1", "shared")
        rlm.close()
    finally:
        child.wait()


def _plant(store: SQLiteSessionStore, **row: object) -> None:
    values = {
        "session_id": "s",
        "owner": "someone",
        "pid": 1,
        "hostname": HOSTNAME,
        "process_start": None,
        "acquired_at": time.time(),
        "heartbeat_at": time.time(),
    }
    values.update(row)  # fmt: skip
    db = sqlite3.connect(store.path)
    db.execute(
        f"INSERT OR REPLACE INTO locks ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
        list(values.values()),
    )
    db.commit()
    db.close()


def test_staleness_rules(tmp_path: Path) -> None:
    store = SQLiteSessionStore(tmp_path / "r.db", lock_timeout=0.2, stale_after=30)
    store.ensure_session("s", {})
    # Another host that still beats: respected.
    _plant(store, hostname="elsewhere", pid=os.getpid())
    with pytest.raises(SessionLockedError, match="on elsewhere") as info:
        store.acquire_lock("s")
    # How long until it would be stale, if it fell silent now.
    assert info.value.retry_after is not None and 25 < info.value.retry_after <= 30
    # Another host silent for longer than stale_after: broken.
    _plant(store, hostname="elsewhere", heartbeat_at=time.time() - 60)
    store.acquire_lock("s").release()
    # This host, a live pid that started at another time: the pid was reused.
    _plant(store, pid=os.getpid(), process_start="1")
    store.acquire_lock("s").release()
    # This host, a pid that does not exist: dead.
    _plant(store, pid=2**22 + 12345)
    store.acquire_lock("s").release()
    store.close()


def test_the_heartbeat_refreshes_the_lock(tmp_path: Path) -> None:
    store = SQLiteSessionStore(tmp_path / "h.db", heartbeat=0.05)
    store.ensure_session("s", {})
    lock = store.acquire_lock("s")
    first = store.lock_holder("s")
    time.sleep(0.3)
    later = store.lock_holder("s")
    assert first is not None and later is not None
    assert later.heartbeat_at > first.heartbeat_at
    lock.release()
    lock.release()  # idempotent
    assert store.lock_holder("s") is None
    store.close()
