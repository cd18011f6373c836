"""One writer per session in PostgreSQL: a lease with an expiry.

A ``locks`` row names the holder (a random owner token, pid, hostname, process start)
and holds ``expires_at``, on the database's clock, so replicas' clocks never matter.
The holder renews it every ``heartbeat`` seconds (``locks.HeldLocks``: one thread per
process renews every lease of a store in one statement) and on every write. Another
writer may take a lease only once it has expired: a replica that crashed, was killed
or lost the database stops renewing, and its sessions can be taken over ``lease``
seconds later at most. Liveness is never judged by pid: replicas on other hosts (or in
other containers sharing a hostname) are told apart by their leases alone.

Taking a lease is one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE expired``: two
writers racing for an expired lease both wait on the row, and only one wins. A write
checks and renews its lease in the transaction that saves the turn, holding the row,
so a lease cannot be taken over in the middle of a write, and a writer whose lease was
taken gets ``SessionLockedError`` and saves nothing. Renewal skips rows a write is
holding (``SKIP LOCKED``): that write renews them itself.
"""

from __future__ import annotations

import os
from typing import Any

from rlm.sessions.locks import HOSTNAME, LockHolder, process_start

NOW = "extract(epoch from clock_timestamp())::float8"
_COLUMNS = "session_id, owner, pid, hostname, process_start, acquired_at, heartbeat_at, expires_at"


def try_acquire(
    db: Any, session_id: str, owner: str, lease: float
) -> tuple[LockHolder | None, float] | None:
    """Take the lease unless a live one is held: ``None`` when it is now ``owner``'s,
    else ``(holder, seconds until its lease expires)`` (holder ``None``: it was just
    let go; try again)."""
    pid = os.getpid()
    taken = db.execute(
        f"INSERT INTO locks AS l ({_COLUMNS}) SELECT ?, ?, ?, ?, ?, n, n, n + ? "
        f"FROM (SELECT {NOW} AS n) AS t ON CONFLICT (session_id) DO UPDATE SET "
        "owner = EXCLUDED.owner, pid = EXCLUDED.pid, hostname = EXCLUDED.hostname, "
        "process_start = EXCLUDED.process_start, acquired_at = EXCLUDED.acquired_at, "
        "heartbeat_at = EXCLUDED.heartbeat_at, expires_at = EXCLUDED.expires_at "
        "WHERE l.expires_at <= EXCLUDED.acquired_at RETURNING owner",
        (session_id, owner, pid, HOSTNAME, process_start(pid), lease),
    ).fetchone()
    if taken is not None:
        return None
    found = live_holder(db, session_id)
    return (None, 0.0) if found is None else found


def live_holder(db: Any, session_id: str) -> tuple[LockHolder, float] | None:
    """The holder of an unexpired lease, and the seconds until it expires."""
    row = db.execute(
        f"SELECT {_COLUMNS}, expires_at - {NOW} FROM locks "
        f"WHERE session_id = ? AND expires_at > {NOW}",
        (session_id,),
    ).fetchone()
    return None if row is None else (LockHolder(*row[:8]), max(0.0, float(row[8])))


def live_holders(db: Any) -> dict[str, LockHolder]:
    rows = db.execute(f"SELECT {_COLUMNS} FROM locks WHERE expires_at > {NOW}").fetchall()
    return {row[0]: LockHolder(*row) for row in rows}


def hold(db: Any, session_id: str, owner: str, lease: float) -> bool:
    """Renew ``owner``'s lease and keep its row locked to the end of the transaction;
    False when the lease is no longer ``owner``'s (taken over or deleted)."""
    row = db.execute(
        f"UPDATE locks SET heartbeat_at = t.n, expires_at = t.n + ? FROM (SELECT {NOW} AS n) "
        "AS t WHERE session_id = ? AND owner = ? RETURNING 1",
        (lease, session_id, owner),
    ).fetchone()
    return row is not None


def renew_all(db: Any, owners: list[str], lease: float) -> int:
    """Renew every lease in ``owners`` that is still theirs and not held by a write in
    progress; returns how many."""
    cursor = db.execute(
        f"UPDATE locks SET heartbeat_at = t.n, expires_at = t.n + ? FROM (SELECT {NOW} AS n) "
        "AS t WHERE session_id IN (SELECT session_id FROM locks WHERE owner = ANY(?) "
        "FOR UPDATE SKIP LOCKED) AND owner = ANY(?)",
        (lease, owners, owners),
    )
    return int(cursor.rowcount)


def release(db: Any, session_id: str, owner: str) -> None:
    db.execute("DELETE FROM locks WHERE session_id = ? AND owner = ?", (session_id, owner))
