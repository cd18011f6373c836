"""One writer per session: a lock row naming the holding process.

A row holds a random owner token, the pid, the hostname, the process's start time
(so a reused pid is not taken for the holder) and a heartbeat. A second writer waits
a bounded time, then gets ``SessionLockedError``. A lock is stale, and is broken by the
next writer, when its holder on this host is dead (or a zombie, or another process
with the same pid), or when a holder on another host has not refreshed its heartbeat
for ``stale_after`` seconds (the holder refreshes every ``heartbeat`` seconds on a
daemon thread). Readers never look at locks: inspection is always allowed.

The functions here run inside the store's write transactions (``BEGIN IMMEDIATE``),
so checking and taking a lock is atomic across processes.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

HOSTNAME = socket.gethostname()


@dataclass(frozen=True)
class LockHolder:
    session_id: str
    owner: str
    pid: int
    hostname: str
    process_start: str | None
    acquired_at: float
    heartbeat_at: float

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.acquired_at))
        return f"pid {self.pid} on {self.hostname} since {since}"


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), or ``None``."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    return fields[19] if len(fields) > 19 else None


def pid_alive(pid: int) -> bool:
    """Whether a live (not zombie) process has this pid on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rpartition(")")[2].split()[:1]
    except OSError:
        return True  # no /proc: trust kill(0)
    return state != ["Z"]  # a killed child nobody has reaped yet is dead


def is_stale(holder: LockHolder, now: float, stale_after: float) -> bool:
    if holder.hostname == HOSTNAME:
        if not pid_alive(holder.pid):
            return True
        start = process_start(holder.pid)
        return None not in (start, holder.process_start) and start != holder.process_start
    return now - holder.heartbeat_at > stale_after


def read_holder(db: sqlite3.Connection, session_id: str) -> LockHolder | None:
    row = db.execute(
        "SELECT session_id, owner, pid, hostname, process_start, acquired_at, heartbeat_at "
        "FROM locks WHERE session_id = ?",
        (session_id,),
    ).fetchone()
    return LockHolder(*row) if row else None


def live_holder(db: sqlite3.Connection, session_id: str, stale_after: float) -> LockHolder | None:
    holder = read_holder(db, session_id)
    return None if holder is None or is_stale(holder, time.time(), stale_after) else holder


def try_acquire(
    db: sqlite3.Connection, session_id: str, owner: str, stale_after: float
) -> LockHolder | None:
    """Take the lock unless a live holder has it; returns that holder, or ``None`` when
    the lock is now ``owner``'s. Call inside a write transaction."""
    holder = read_holder(db, session_id)
    now = time.time()
    if holder is not None and holder.owner != owner and not is_stale(holder, now, stale_after):
        return holder
    pid = os.getpid()
    db.execute(
        "INSERT OR REPLACE INTO locks (session_id, owner, pid, hostname, process_start, "
        "acquired_at, heartbeat_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (session_id, owner, pid, HOSTNAME, process_start(pid), now, now),
    )
    return None


def holds(db: sqlite3.Connection, session_id: str, owner: str) -> bool:
    holder = read_holder(db, session_id)
    return holder is not None and holder.owner == owner


def release(db: sqlite3.Connection, session_id: str, owner: str) -> None:
    db.execute("DELETE FROM locks WHERE session_id = ? AND owner = ?", (session_id, owner))


def beat(db: sqlite3.Connection, session_id: str, owner: str) -> None:
    db.execute(
        "UPDATE locks SET heartbeat_at = ? WHERE session_id = ? AND owner = ?",
        (time.time(), session_id, owner),
    )


def new_owner() -> str:
    return uuid.uuid4().hex


class Heartbeat:
    """Calls ``beat()`` every ``interval`` seconds on a daemon thread until ``stop()``."""

    def __init__(self, beat: Callable[[], None], interval: float) -> None:
        self._beat = beat
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rlm-session-lock", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._beat()
            except Exception:  # a busy or closed store: the next beat tries again
                continue

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
