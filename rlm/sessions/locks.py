"""One writer per session: a lock row naming the holding process.

A row holds a random owner token, the pid, the hostname, the process's start time
(so a reused pid is not taken for the holder) and a heartbeat. A second writer waits
a bounded time, then gets ``SessionLockedError``. A lock is stale, and is broken by the
next writer, when its holder on this host is dead (or a zombie, or another process
with the same pid), or when a holder on another host has not refreshed its heartbeat
for ``stale_after`` seconds (the holder refreshes every ``heartbeat`` seconds, on the
process-wide thread, ``RENEWER``). Readers never look at locks: inspection is always
allowed.

The functions here run inside the SQLite store's write transactions (``BEGIN
IMMEDIATE``), so checking and taking a lock is atomic across processes. The PostgreSQL
store keeps a lease with an expiry instead (``postgres_leases.py``). Both renew what they
hold through ``HeldLocks``: one thread per process (``RENEWER``) renews every lock of
every store, each store's in one statement, however many sessions are open.
"""

from __future__ import annotations

import itertools
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
    expires_at: float | None = None  # a lease's end unless renewed (PostgreSQL)

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


def beat_all(db: sqlite3.Connection, held: list[tuple[str, str]]) -> None:
    """Refresh the heartbeat of every ``(session_id, owner)`` lock in ``held``."""
    now = time.time()
    db.executemany(
        "UPDATE locks SET heartbeat_at = ? WHERE session_id = ? AND owner = ?",
        [(now, session_id, owner) for session_id, owner in held],
    )


def retry_after(holder: LockHolder, stale_after: float) -> float | None:
    """Seconds until a silent holder on another host would be stale (``None`` for a
    holder on this host: its lock goes when it lets go or dies)."""
    if holder.hostname == HOSTNAME:
        return None
    return max(0.0, stale_after - (time.time() - holder.heartbeat_at))


def new_owner() -> str:
    return uuid.uuid4().hex


class Renewer:
    """One daemon thread that calls every registered job at its own interval.

    A store registers one job while it holds at least one lock (``HeldLocks``); the
    thread exists only while there are jobs, so a process holding a thousand sessions
    has one renewal thread, and a process holding none has no thread at all. A job that
    raises is tried again at its next interval. A forked child starts with no jobs (its
    parent's locks are not its own)."""

    def __init__(self) -> None:
        self._reset()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._jobs: dict[int, list[Any]] = {}  # id -> [due (monotonic), interval, fn]
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None

    def add(self, job: Callable[[], None], interval: float) -> int:
        with self._cond:
            key = next(self._ids)
            self._jobs[key] = [time.monotonic() + interval, interval, job]
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="rlm-session-lock-renewer", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()
            return key

    def remove(self, key: int) -> None:
        with self._cond:
            self._jobs.pop(key, None)
            self._cond.notify_all()

    @property
    def running(self) -> bool:
        with self._cond:
            return self._thread is not None

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if not self._jobs:
                        self._thread = None
                        return
                    now = time.monotonic()
                    due = min(job[0] for job in self._jobs.values())
                    if due <= now:
                        break
                    self._cond.wait(due - now)
                ready = [job for job in self._jobs.values() if job[0] <= now]
                for job in ready:
                    job[0] = now + job[1]
            for job in ready:
                try:
                    job[2]()
                except Exception:  # a busy, closed or unreachable store: next time
                    continue


RENEWER = Renewer()


class HeldLocks:
    """The locks one store holds, ``{owner: session_id}``: ``renew(items)`` is called
    with all of them every ``interval`` seconds by the process's ``RENEWER`` while
    there is at least one."""

    def __init__(self, renew: Callable[[list[tuple[str, str]]], None], interval: float) -> None:
        self._renew = renew
        self._interval = interval
        self._held: dict[str, str] = {}
        self._mutex = threading.Lock()
        self._job: int | None = None

    def add(self, session_id: str, owner: str) -> None:
        with self._mutex:
            self._held[owner] = session_id
            if self._job is None:
                self._job = RENEWER.add(self._beat, self._interval)

    def discard(self, owner: str) -> None:
        with self._mutex:
            self._held.pop(owner, None)
            if not self._held and self._job is not None:
                RENEWER.remove(self._job)
                self._job = None

    def clear(self) -> None:
        with self._mutex:
            self._held.clear()
            if self._job is not None:
                RENEWER.remove(self._job)
                self._job = None

    def items(self) -> list[tuple[str, str]]:
        """``(session_id, owner)`` of every lock held."""
        with self._mutex:
            return [(sid, owner) for owner, sid in self._held.items()]

    def __len__(self) -> int:
        with self._mutex:
            return len(self._held)

    def _beat(self) -> None:
        held = self.items()
        if held:
            self._renew(held)
