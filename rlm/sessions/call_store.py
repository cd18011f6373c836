"""``CallStore``: the sub-call cache's SQLite file (stdlib ``sqlite3``, WAL).

One row per memoised model call: its key (a hash the engine computes,
``rlm.core.call_cache``), the reply as JSON (``{"text", "model", "usage"}``), the
tokens and cost one replay saves, and how many hits it has served. Several processes
may share the file: WAL lets readers run beside a writer, and every statement waits up
to ``busy_timeout`` seconds for another process's write lock. A new file is made 0600
(its missing folders 0700); SQLite gives its ``-wal``/``-shm`` files the same mode.

The file is data, never trusted: values are JSON (never pickle), and a row that does not
decode, a file that is not a database, or any SQLite error is a miss (``get`` returns
``None``; ``put`` does nothing), warned about once per store, never a failed call.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import stat
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from rlm.sessions.sqlite_store import _create_private

T = TypeVar("T")
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    value TEXT NOT NULL,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cost REAL,
    created REAL NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0,
    last_hit REAL
)
"""


@dataclass(frozen=True)
class CacheStats:
    """What ``rlm cache stats`` prints: entries, the file's size on disk (with its WAL),
    hits served, and the tokens and USD those hits did not spend (``saved_cost`` is
    ``None`` when no cached reply had a known cost)."""

    path: str
    entries: int
    size_bytes: int
    hits: int
    saved_input_tokens: int
    saved_output_tokens: int
    saved_cost: float | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


class CallStore:
    """The cache file at ``path``; connects on first use, one connection per process
    (threads share it under a lock)."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 30.0) -> None:
        self.path = Path(path).expanduser()
        self.busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._pid = 0
        self._warned = False

    # -- plumbing ----------------------------------------------------------------------

    def _warn(self, exc: BaseException) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"call cache {self.path} is unusable, calls go to the model "
                f"({type(exc).__name__}: {exc}); if it is a broken cache, delete the file to start a new one",
                UserWarning,
                stacklevel=4,
            )

    def _connect(self) -> sqlite3.Connection:
        if self._db is not None and self._pid == os.getpid():
            return self._db
        self._db = None  # a forked child opens its own connection
        if self.path.is_dir():
            raise sqlite3.OperationalError(f"{self.path} is a directory")
        existed = self.path.exists()
        if not existed:
            _create_private(self.path)
        db = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            if self._version(db) < SCHEMA_VERSION:
                # check and create under the write lock: another process may be making
                # the same new file right now
                db.execute("BEGIN IMMEDIATE")
                try:
                    if self._version(db) < SCHEMA_VERSION:
                        db.execute(_SCHEMA)
                        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            db.close()
            raise
        if existed:
            self._warn_if_shared()
        self._db, self._pid = db, os.getpid()
        return db

    @staticmethod
    def _version(db: sqlite3.Connection) -> int:
        """The file's cache format; raises ``sqlite3.DatabaseError`` for a file that is
        not ours (another program's tables) or is newer than this rlmx reads."""
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"written by a newer rlmx (cache format {version}, this one reads {SCHEMA_VERSION})"
            )
        if version < SCHEMA_VERSION:
            tables = {
                r[0]
                for r in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite%'"
                )
            }
            if tables - {"calls"}:  # another program's database: never written to
                raise sqlite3.DatabaseError("not an rlmx call cache")
        return version

    def _warn_if_shared(self) -> None:
        with contextlib.suppress(OSError):
            mode = stat.S_IMODE(self.path.stat().st_mode)
            if mode & 0o077:
                warnings.warn(
                    f"call cache {self.path} is readable by other users (mode {mode:04o}); "
                    f"it holds prompts and replies: chmod 600 {self.path}",
                    UserWarning,
                    stacklevel=5,
                )

    @contextlib.contextmanager
    def _session(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._connect()

    # -- the cache ---------------------------------------------------------------------

    def get(self, key: str, decode: Callable[[dict[str, Any]], T | None]) -> T | None:
        """``decode`` of the stored value for ``key`` (a JSON object), counting the hit;
        ``None`` on a miss, on a row that does not decode (``decode`` returns ``None`` or
        raises ``ValueError``/``TypeError``/``KeyError``) and on any error of the file."""
        try:
            with self._session() as db:
                row = db.execute("SELECT value FROM calls WHERE key = ?", (key,)).fetchone()
                if row is None or not isinstance(row[0], str):
                    return None
                try:
                    raw = json.loads(row[0])
                    value = decode(raw) if isinstance(raw, dict) else None
                except (ValueError, TypeError, KeyError, RecursionError):
                    value = None
                if value is None:
                    return None  # a corrupt row: a miss, replaced by the next put
                db.execute(
                    "UPDATE calls SET hits = hits + 1, last_hit = ? WHERE key = ?",
                    (time.time(), key),
                )
                return value
        except (sqlite3.Error, OSError) as exc:
            self._warn(exc)
            return None

    def put(
        self,
        key: str,
        value: dict[str, Any],
        *,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cost: float | None,
    ) -> None:
        """Store (or replace) ``key``'s value; an error of the file is warned about once."""
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False)
            if cost is not None and not math.isfinite(cost):
                cost = None
            with self._session() as db:
                db.execute(
                    "INSERT OR REPLACE INTO calls (key, model, value, input_tokens, "
                    "output_tokens, cost, created, hits) VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
                    (key, model, text, input_tokens, output_tokens, cost, time.time()),
                )
        except (sqlite3.Error, OSError, ValueError, TypeError) as exc:
            self._warn(exc)

    def stats(self) -> CacheStats:
        """Totals of the file; raises ``sqlite3.Error`` if it is not a readable cache
        (a missing file reads as empty and is not created)."""
        size = sum(
            p.stat().st_size
            for p in (self.path, self.path.with_name(self.path.name + "-wal"))
            if p.is_file()
        )
        if not self.path.exists():
            return CacheStats(str(self.path), 0, 0, 0, 0, 0, None)
        with self._session() as db:
            row = db.execute(
                "SELECT COUNT(*), TOTAL(hits), TOTAL(hits * input_tokens), "
                "TOTAL(hits * output_tokens), TOTAL(hits * cost), "
                "COUNT(CASE WHEN hits > 0 AND cost IS NOT NULL THEN 1 END) FROM calls"
            ).fetchone()
        return CacheStats(
            path=str(self.path),
            entries=_count(row[0]),
            size_bytes=size,
            hits=int(row[1]),
            saved_input_tokens=int(row[2]),
            saved_output_tokens=int(row[3]),
            saved_cost=float(row[4]) if row[5] else None,
        )

    def clear(self) -> int:
        """Delete every entry; returns how many there were. A file that is not a cache
        database (corrupt, or another program's) is left alone: ``sqlite3.Error``."""
        if not self.path.exists():
            return 0
        with self._session() as db:
            count = int(db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])
            db.execute("DELETE FROM calls")
            with contextlib.suppress(sqlite3.Error):
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            with contextlib.suppress(sqlite3.Error):
                db.execute("VACUUM")
        return count

    def close(self) -> None:
        with self._lock:
            if self._db is not None and self._pid == os.getpid():
                self._db.close()
            self._db = None

    def __repr__(self) -> str:
        return f"CallStore({str(self.path)!r})"


__all__ = ["SCHEMA_VERSION", "CacheStats", "CallStore"]
