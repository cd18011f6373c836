"""The PostgreSQL store's plumbing: psycopg (imported on first use), its URL, a small
connection pool, and the adapter that lets ``blobs`` and ``gc`` run on it.

``parse_url`` splits a ``postgresql://`` URL into the libpq connection string (every
libpq parameter, ``sslmode=`` and the like, passes through) and the store's own
options, and gives the URL to show: without its password, ever. ``PgConnection`` gives
a psycopg connection sqlite3's ``execute``/``executemany`` with ``?`` placeholders and
``INSERT OR IGNORE``, so the blob and garbage-collection code is written once.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from rlm.base.errors import ConfigurationError, MissingExtraError
from rlm.base.redact import REDACTED, is_sensitive_key, redact_text

if TYPE_CHECKING:
    import psycopg

DEFAULT_LEASE = 30.0  # seconds a lease lasts unless renewed
DEFAULT_POOL_SIZE = 4
DEFAULT_CONNECT_TIMEOUT = 10  # seconds (libpq's default waits for the operating system)
DEFAULT_SCHEMA = "rlmx"
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def import_psycopg() -> ModuleType:
    """psycopg 3, or ``MissingExtraError`` naming ``pip install 'rlmx[postgres]'``."""
    try:
        import psycopg
    except ImportError:
        raise MissingExtraError("The PostgreSQL session store", "postgres", "psycopg") from None
    return psycopg


@dataclass(frozen=True)
class PgURL:
    conninfo: str  # for psycopg.connect (may hold the password: never shown)
    shown: str  # the URL without its password or other secrets
    secrets: tuple[str, ...]  # values scrubbed from any message
    lock_timeout: float | None
    lease: float
    heartbeat: float
    pool_size: int
    schema: str


def _number(key: str, value: str, kind: Callable[[str], Any]) -> Any:
    try:
        number = kind(value)
    except ValueError:
        raise ConfigurationError(
            f"session store URL option {key}={value!r} is not a number"
        ) from None
    if not number > 0:
        raise ConfigurationError(f"session store URL option {key}={value!r} must be positive")
    return number


def _join(scheme: str, netloc: str, path: str, query: str) -> str:
    """A URL (``urlunsplit`` drops the ``//`` of ``postgresql:///db``: libpq needs it)."""
    return f"{scheme}://{netloc}{path}{'?' if query else ''}{query}"


def parse_url(url: str) -> PgURL:
    """Split a ``postgresql://`` URL. Store options in its query: ``lock_timeout``
    (seconds a writer waits), ``lease`` (seconds a writer's lease lasts unless renewed,
    default 30: how soon a crashed writer's sessions can be taken over), ``heartbeat``
    (seconds between renewals, default a third of the lease), ``pool_size``
    (connections per store, default 4), ``schema`` (default ``rlmx``). The rest is
    libpq's (``connect_timeout`` defaults to 10 seconds)."""
    parts = urlsplit(url)
    ours: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    secrets: list[str] = []
    # libpq reads '+' as itself, and percent-escapes: so must we.
    for key, value in parse_qsl(parts.query.replace("+", "%2B"), keep_blank_values=True):
        if key in ("lock_timeout", "lease", "heartbeat", "pool_size", "schema"):
            ours[key] = value
        else:
            rest.append((key, value))
            if is_sensitive_key(key) and value:
                secrets.append(value)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if colon and password:
        secrets += [password, unquote(password)]
    shown_query = urlencode(
        [(k, REDACTED if is_sensitive_key(k) else v) for k, v in rest], safe="*", quote_via=quote
    )
    shown = _join("postgresql", f"{user}@{hosts}" if at else hosts, parts.path, shown_query)
    schema = ours.get("schema", DEFAULT_SCHEMA)
    if not _IDENTIFIER.fullmatch(schema):
        raise ConfigurationError(
            f"session store URL option schema={schema!r}: use lowercase letters, digits "
            "and _ (at most 63)"
        )
    lease = _number("lease", ours["lease"], float) if "lease" in ours else DEFAULT_LEASE
    heartbeat = _number("heartbeat", ours["heartbeat"], float) if "heartbeat" in ours else lease / 3
    if heartbeat >= lease:
        raise ConfigurationError(
            f"session store URL: heartbeat ({heartbeat:g}s) must be shorter than the lease "
            f"({lease:g}s), or leases lapse between renewals"
        )
    if not any(key == "connect_timeout" for key, _ in rest):
        rest.append(("connect_timeout", str(DEFAULT_CONNECT_TIMEOUT)))
    return PgURL(
        conninfo=_join(parts.scheme, parts.netloc, parts.path, urlencode(rest, quote_via=quote)),
        shown=shown,
        secrets=tuple(s for s in secrets if s),
        lock_timeout=(
            _number("lock_timeout", ours["lock_timeout"], float) if "lock_timeout" in ours else None
        ),
        lease=lease,
        heartbeat=heartbeat,
        pool_size=_number("pool_size", ours["pool_size"], int)
        if "pool_size" in ours
        else DEFAULT_POOL_SIZE,
        schema=schema,
    )


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` fit for an error message: URL credentials and the URL's secrets out."""
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return redact_text(text)


@lru_cache(maxsize=256)
def _pg_sql(sql: str) -> str:
    """sqlite3's dialect as used by ``blobs``/``gc`` into psycopg's."""
    if sql.startswith("INSERT OR IGNORE INTO "):
        sql = (
            "INSERT INTO " + sql.removeprefix("INSERT OR IGNORE INTO ") + " ON CONFLICT DO NOTHING"
        )
    return sql.replace("%", "%%").replace("?", "%s")


class PgConnection:
    """A psycopg connection with sqlite3's ``execute``/``executemany`` (see the module
    docstring). Statements run in the caller's transaction."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, parameters: Any = (), /) -> Any:  # a psycopg cursor
        return self.conn.execute(_pg_sql(sql), parameters)

    def executemany(self, sql: str, parameters: Any, /) -> None:
        rows = list(parameters)
        if rows:
            with self.conn.cursor() as cursor:
                cursor.executemany(_pg_sql(sql), rows)


class Pool:
    """Up to ``size`` autocommit connections, made on demand and kept while healthy.
    ``connection()`` lends one (waiting while all are lent); a broken one, or one left
    inside a transaction, is closed instead of returned."""

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], size: int) -> None:
        self._connect = connect
        self._size = size
        self._idle: list[psycopg.Connection[Any]] = []
        self._count = 0
        self._closed = False
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[psycopg.Connection[Any]]:
        """A connection, waiting up to ``timeout`` seconds (``TimeoutError``) while all
        are lent."""
        conn = self._take(timeout)
        try:
            yield conn
        finally:
            self._give(conn)

    def _take(self, timeout: float | None) -> psycopg.Connection[Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    raise ConnectionError("the session store is closed")
                if self._idle:
                    return self._idle.pop()
                if self._count < self._size:
                    self._count += 1
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError("every connection of the session store is busy")
                self._cond.wait(left)
        try:
            return self._connect()
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def _give(self, conn: psycopg.Connection[Any]) -> None:
        psycopg = import_psycopg()
        healthy = (
            not conn.closed
            and not conn.broken
            and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        )
        with self._cond:
            if healthy and not self._closed:
                self._idle.append(conn)
            else:
                self._count -= 1
            self._cond.notify()
        if not healthy or self._closed:
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._count -= len(idle)
            self._cond.notify_all()
        for conn in idle:
            with contextlib.suppress(Exception):
                conn.close()
