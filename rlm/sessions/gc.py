"""Garbage collection: drop turns no session can reach, then blobs and chunks no turn uses.

Turns are shared between forks and a resumed turn replaces its stopped one in the
thread, so what is garbage is decided by reachability: every turn on a path from a
session's head to the first turn is live, and so is every blob such a turn names
(its context, history and snapshot, and the parts a parts snapshot lists). Runs
inside the caller's write transaction, so it sees, and is seen, atomically. The
statements suit both stores (``blobs.Connection``; the PostgreSQL store serialises
collection against writers with an advisory lock).
"""

from __future__ import annotations

import json

from rlm.sessions import blobs

_LIVE_TURNS = (
    "WITH RECURSIVE live(id) AS (SELECT head_turn FROM sessions WHERE head_turn IS NOT NULL "
    "UNION SELECT t.parent_id FROM turns t JOIN live l ON t.id = l.id "
    "WHERE t.parent_id IS NOT NULL) SELECT id FROM live"
)


def collect_garbage(db: blobs.Connection) -> int:
    """Delete unreachable turns, blobs and chunks; returns the number of turns deleted."""
    db.execute("CREATE TEMP TABLE IF NOT EXISTS gc_live_turns (id BIGINT PRIMARY KEY)")
    db.execute("CREATE TEMP TABLE IF NOT EXISTS gc_live_blobs (hash TEXT PRIMARY KEY)")
    db.execute("DELETE FROM gc_live_turns")
    db.execute("DELETE FROM gc_live_blobs")
    db.execute(f"INSERT INTO gc_live_turns (id) {_LIVE_TURNS}")
    dropped = db.execute("DELETE FROM turns WHERE id NOT IN (SELECT id FROM gc_live_turns)")
    for column in ("context_hash", "history_hash", "snapshot_hash"):
        db.execute(
            f"INSERT OR IGNORE INTO gc_live_blobs (hash) SELECT {column} FROM turns "
            f"WHERE {column} IS NOT NULL"
        )
    manifests = db.execute(
        "SELECT DISTINCT snapshot_hash FROM turns WHERE snapshot_kind = 'parts'"
    ).fetchall()
    for (manifest,) in manifests:
        entries = json.loads(blobs.read_bytes(db, manifest)).get("entries", [])
        db.executemany(
            "INSERT OR IGNORE INTO gc_live_blobs (hash) VALUES (?)",
            [(e["digest"],) for e in entries if e.get("digest")],
        )
    db.execute("DELETE FROM blob_chunks WHERE blob_hash NOT IN (SELECT hash FROM gc_live_blobs)")
    db.execute("DELETE FROM blobs WHERE hash NOT IN (SELECT hash FROM gc_live_blobs)")
    db.execute("DELETE FROM chunks WHERE id NOT IN (SELECT chunk_id FROM blob_chunks)")
    return int(dropped.rowcount)
