"""Where the servers keep persistent sessions between requests.

``SessionRegistry`` is the interface the HTTP and MCP servers use. Its rules:

* **Admission control.** At most ``max_sessions`` sessions are live. A new session
  takes a free place, or the place of the least recently used session that has been
  idle for at least ``grace`` seconds (evicted, ``close()``d). When every place is
  taken by a session in use or used within ``grace``, the new session waits up to
  ``admission_timeout`` seconds for one, then gets ``SessionsFullError`` (429, with a
  ``Retry-After``). A session in use (inside ``lease``) is never evicted.
* **No silent loss.** ``InMemorySessionRegistry`` cannot bring an evicted or expired
  session back: it remembers the ids it let go (the last ``remember`` of them), and a
  later request for one gets ``SessionGoneError`` (410) naming why, never a fresh
  session under the old name. ``StoreBackedSessionRegistry`` (``rlm serve
  --session-store``) rebuilds such a session from the store instead (a *rehydration*).
* **Nothing on the event loop that may block.** Sessions are built, closed, and (in a
  store) locked and unlocked in worker threads; the registry's own lock guards only
  dictionary updates.
* **Expiry by a timer**: ``sweep()`` closes the sessions idle for ``idle_ttl``; the
  server calls it periodically (``rlm.server.app``), and every admission does too.

A store-backed registry lets go of a session's store lock between turns, so several
``rlm serve`` processes over one store can serve the same session: before a turn, the
lock is taken back and, when another process moved the session on meanwhile, the live
copy is dropped and the session rebuilt from the store.
"""

from __future__ import annotations

import asyncio
import builtins
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar, runtime_checkable

from rlm.server.errors import APIError

if TYPE_CHECKING:
    from rlm.core.rlm import RLM
    from rlm.sessions.store import SessionStore

DEFAULT_MAX_SESSIONS = 64
DEFAULT_IDLE_TTL = 3600.0
DEFAULT_GRACE = 120.0  # in memory: a session used this recently is not evicted
DEFAULT_ADMISSION_TIMEOUT = 5.0  # a new session waits this long for a place, then 429
DEFAULT_REMEMBER = 100_000  # ids of sessions let go, kept to answer 410 rather than reset
_POLL = 0.02  # seconds between looks for a free place while a new session waits


class Closable(Protocol):
    def close(self) -> None: ...


T = TypeVar("T", bound=Closable)


@runtime_checkable
class SharedDurable(Protocol):
    """A value whose durable session can be let go of between turns (``RLM``)."""

    def release_session_lock(self) -> None: ...

    def reacquire_session_lock(self, timeout: float | None = None) -> bool: ...


class RLMFactory(Protocol):
    """Builds an RLM. ``session_id`` set: a persistent one (``RLM(persistent=True)``) for
    that session; ``trajectory=True``: with an in-memory ``RLMLogger`` as ``rlm.logger``."""

    def __call__(self, *, session_id: str | None = None, trajectory: bool = False) -> RLM: ...


class SessionGoneError(APIError):
    """The session was let go (evicted or expired) and cannot be brought back."""

    def __init__(self, session_id: str, why: str) -> None:
        shown = session_id if len(session_id) <= 64 else session_id[:64] + "…"
        super().__init__(
            410,
            f"Session {shown!r} is gone: {why}. Its variables and history are lost; start a "
            "new session (a new session_id) and send the context again. To keep sessions "
            "across evictions and restarts, run rlm serve with --session-store.",
            param="session_id",
            code="session_expired",
        )


class SessionsFullError(APIError):
    """Every place for a live session is taken by a session in use or in its grace."""

    def __init__(self, limit: int, retry_after: float) -> None:
        super().__init__(
            429,
            f"Too many live sessions: all {limit} are in use or were used in the last "
            "moments. Retry after the Retry-After delay, or start rlm serve with a higher "
            "--max-sessions (or a shorter --session-grace).",
            code="sessions_full",
            retry_after=retry_after,
        )


@dataclass(frozen=True)
class SessionInfo:
    session_id: str
    created: float  # time.time()
    idle_seconds: float
    turns: int  # leases taken: one per request that used the session
    in_use: bool


@dataclass
class RegistryStats:
    """Counters since the registry was made (``/metrics`` shows them)."""

    created: int = 0
    evicted: int = 0
    expired: int = 0
    refused: int = 0  # SessionsFullError
    gone: int = 0  # SessionGoneError
    rehydrated: int = 0  # rebuilt from a store after eviction, expiry, restart or a peer


class SessionRegistry(Protocol[T]):
    stats: RegistryStats

    def get(self, session_id: str) -> T | None:
        """The session's value if it is live (without creating or touching it)."""
        ...

    def get_or_create(self, session_id: str, factory: Callable[[], T]) -> T:
        """The session's value, built with ``factory`` the first time (synchronous:
        admission refuses at once rather than waiting)."""
        ...

    def lease(self, session_id: str, factory: Callable[[], T]) -> AbstractAsyncContextManager[T]:
        """``async with registry.lease(sid, f) as value``: exclusive use for one turn
        (turns of one session queue up; the value cannot be evicted meanwhile)."""
        ...

    def list(self) -> list[SessionInfo]: ...

    def drop(self, session_id: str) -> bool:
        """Forget and close a session; False if there was none."""
        ...

    def sweep(self) -> int:
        """Close the sessions idle past ``idle_ttl``; how many went."""
        ...

    def close(self) -> None:
        """Close every session."""
        ...

    def __len__(self) -> int: ...


@dataclass
class _Entry(Generic[T]):
    session_id: str
    value: T | None  # None until built (off the loop, under ``lock``)
    created: float
    last_used: float
    turns: int = 0
    users: int = 0
    dropped: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class InMemorySessionRegistry(Generic[T]):
    """A ``SessionRegistry`` in memory: admission control, LRU eviction past ``grace``,
    an idle TTL, and a 410 for a session it let go."""

    def __init__(
        self,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        idle_ttl: float | None = DEFAULT_IDLE_TTL,
        clock: Callable[[], float] = time.monotonic,
        *,
        grace: float = DEFAULT_GRACE,
        admission_timeout: float = DEFAULT_ADMISSION_TIMEOUT,
        remember: int = DEFAULT_REMEMBER,
    ) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        if grace < 0 or admission_timeout < 0 or remember < 0:
            raise ValueError("grace, admission_timeout and remember cannot be negative")
        self.max_sessions = max_sessions
        self.idle_ttl = idle_ttl
        self.grace = grace
        self.admission_timeout = admission_timeout
        self.remember = remember
        self.stats = RegistryStats()
        self._clock = clock
        self._entries: OrderedDict[str, _Entry[T]] = OrderedDict()
        self._gone: OrderedDict[str, str] = OrderedDict()  # session id -> why
        self._lock = threading.Lock()  # the MCP server and tests call from threads too

    # -- admission (callers hold self._lock; values are closed after it is released) -------

    def _admit(self, session_id: str) -> tuple[_Entry[T] | None, builtins.list[T]]:
        """The session's entry, pinned (``users`` + 1), or None when there is no place.
        Raises ``SessionGoneError`` for a session this registry let go."""
        released = self._expire()
        entry = self._entries.get(session_id)
        if entry is None:
            why = self._gone.get(session_id)
            if why is not None:
                if not self._rebuilds():
                    self.stats.gone += 1
                    raise SessionGoneError(session_id, why)
                del self._gone[session_id]
            if len(self._entries) >= self.max_sessions:
                released += self._evict_one()
            if len(self._entries) >= self.max_sessions:
                return None, released
            now = self._clock()
            entry = _Entry(session_id, None, created=time.time(), last_used=now)
            self._entries[session_id] = entry
            self.stats.created += 1
        self._entries.move_to_end(session_id)
        entry.users += 1
        entry.last_used = self._clock()
        return entry, released

    def _full(self) -> SessionsFullError:
        self.stats.refused += 1
        now = self._clock()
        ready = [e.last_used + self.grace - now for e in self._entries.values() if not e.users]
        wait = max(1.0, math.ceil(min(ready))) if ready else max(1.0, self.grace or 1.0)
        return SessionsFullError(self.max_sessions, wait)

    def _rebuilds(self) -> bool:
        """Whether a session let go can be rebuilt (from a store)."""
        return False

    def _forget(self, session_id: str, why: str) -> None:
        if self.remember:
            self._gone[session_id] = why
            self._gone.move_to_end(session_id)
            while len(self._gone) > self.remember:
                self._gone.popitem(last=False)

    @staticmethod
    def _release(entry: _Entry[T]) -> builtins.list[T]:
        entry.dropped = True
        if entry.users or entry.value is None:
            return []  # closed on release (or never built)
        return [entry.value]

    def _expire(self) -> builtins.list[T]:
        if self.idle_ttl is None:
            return []
        cutoff = self._clock() - self.idle_ttl
        stale = [s for s, e in self._entries.items() if e.users == 0 and e.last_used < cutoff]
        for sid in stale:
            self._forget(sid, f"it was unused for more than {self.idle_ttl:g} s (--session-ttl)")
        self.stats.expired += len(stale)
        return [v for s in stale for v in self._release(self._entries.pop(s))]

    def _evict_one(self) -> builtins.list[T]:
        cutoff = self._clock() - self.grace
        for sid, entry in self._entries.items():  # oldest first
            if entry.users == 0 and entry.last_used <= cutoff:
                del self._entries[sid]
                self.stats.evicted += 1
                self._forget(
                    sid,
                    f"it was evicted to make room for newer sessions (this server keeps at "
                    f"most {self.max_sessions} in memory: --max-sessions)",
                )
                return self._release(entry)
        return []

    # -- leases ----------------------------------------------------------------------------

    def _unpin(self, entry: _Entry[T]) -> T | None:
        """Release one pin; the value to close when it was dropped meanwhile."""
        with self._lock:
            entry.users -= 1
            entry.last_used = self._clock()
            if entry.dropped and entry.users == 0 and entry.value is not None:
                value, entry.value = entry.value, None
                return value
            unbuilt = entry.value is None and entry.users == 0 and not entry.dropped
            if unbuilt and self._entries.get(entry.session_id) is entry:
                del self._entries[entry.session_id]  # its factory failed: free the place
        return None

    async def _claim(self, session_id: str) -> _Entry[T]:
        deadline = self._clock() + self.admission_timeout
        while True:
            with self._lock:
                entry, released = self._admit(session_id)
                if entry is None and self._clock() >= deadline:
                    raise self._full()
            if released:
                await asyncio.to_thread(_close_all, released)
            if entry is not None:
                return entry
            await asyncio.sleep(_POLL)

    @asynccontextmanager
    async def _lease(self, session_id: str, factory: Callable[[], T]) -> AsyncIterator[T]:
        entry = await self._claim(session_id)
        try:
            async with entry.lock:
                if entry.dropped:  # dropped (drop()) while this request waited for it
                    raise SessionGoneError(session_id, "it was deleted while this request waited")
                value = await self._ready(entry, factory)
                entry.turns += 1
                try:
                    yield value
                finally:
                    await self._after_turn(entry)
        finally:
            closing = self._unpin(entry)
            if closing is not None:
                await asyncio.to_thread(_close_all, [closing])

    async def _ready(self, entry: _Entry[T], factory: Callable[[], T]) -> T:
        """The entry's value, built off the loop the first time."""
        if entry.value is None:
            entry.value = await asyncio.to_thread(factory)
        return entry.value

    async def _after_turn(self, entry: _Entry[T]) -> None:
        return None

    def lease(self, session_id: str, factory: Callable[[], T]) -> AbstractAsyncContextManager[T]:
        return self._lease(session_id, factory)

    # -- the rest of the interface -------------------------------------------------------------

    def get(self, session_id: str) -> T | None:
        with self._lock:
            entry = self._entries.get(session_id)
        return None if entry is None else entry.value

    def get_or_create(self, session_id: str, factory: Callable[[], T]) -> T:
        with self._lock:
            entry, released = self._admit(session_id)
            if entry is None:
                raise self._full()
        _close_all(released)
        try:
            if entry.value is None:
                entry.value = factory()
            return entry.value
        finally:
            closing = self._unpin(entry)
            if closing is not None:
                _close_all([closing])

    def list(self) -> builtins.list[SessionInfo]:
        with self._lock:
            released = self._expire()
            now = self._clock()
            infos = [
                SessionInfo(sid, e.created, now - e.last_used, e.turns, e.users > 0)
                for sid, e in self._entries.items()
                if e.value is not None or e.users
            ]
        _close_all(released)
        return infos

    def sweep(self) -> int:
        with self._lock:
            released = self._expire()
        _close_all(released)
        return len(released)

    def drop(self, session_id: str) -> bool:
        with self._lock:
            entry = self._entries.pop(session_id, None)
            self._gone.pop(session_id, None)  # dropped on purpose: the id may start over
        if entry is None:
            return False
        _close_all(self._release(entry))
        return True

    def close(self) -> None:
        with self._lock:
            entries = builtins.list(self._entries.values())
            self._entries.clear()
        for entry in entries:
            _close_all(self._release(entry))

    def __len__(self) -> int:
        return len(self._entries)


class StoreBackedSessionRegistry(InMemorySessionRegistry[T]):
    """Live sessions in memory as ``InMemorySessionRegistry`` keeps them, backed by the
    session store ``store`` (a path, URL or ``SessionStore``). The factory must build
    durable RLMs in that store (``SettingsFactory(..., session_store=store)``): closing
    one releases its lock, and building it again resumes it, so eviction loses nothing
    (``grace`` defaults to 0) and a session let go comes back from the store.

    Between turns each session's store lock is released (``RLM.release_session_lock``),
    so other processes can serve it; before a turn it is taken back, waiting up to
    ``lock_timeout`` seconds (``SessionLockedError``, a 409, after that), and a session
    another process moved on meanwhile is rebuilt from the store. ``list()`` adds the
    stored sessions that are not in memory; ``drop()`` also deletes the stored session
    (unless a request, here or in another process, is using it: then only the live
    one goes)."""

    def __init__(
        self,
        store: SessionStore | str | os.PathLike[str],
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        idle_ttl: float | None = DEFAULT_IDLE_TTL,
        clock: Callable[[], float] = time.monotonic,
        *,
        grace: float = 0.0,
        admission_timeout: float = DEFAULT_ADMISSION_TIMEOUT,
        lock_timeout: float | None = None,
    ) -> None:
        super().__init__(
            max_sessions, idle_ttl, clock, grace=grace, admission_timeout=admission_timeout
        )
        self.store = store
        self.lock_timeout = lock_timeout

    def __bool__(self) -> bool:  # empty is still a registry (``sessions or default``)
        return True

    def _rebuilds(self) -> bool:
        return True

    def _forget(self, session_id: str, why: str) -> None:
        return None  # nothing is lost: the store has it

    async def _ready(self, entry: _Entry[T], factory: Callable[[], T]) -> T:
        value = entry.value
        if value is not None and isinstance(value, SharedDurable):
            timeout = self.lock_timeout
            current = await asyncio.to_thread(value.reacquire_session_lock, timeout)
            if current:
                return value
            entry.value = None  # another process moved the session on: rebuild it
            await asyncio.to_thread(_close_all, [value])
        if entry.value is None:
            built = await asyncio.to_thread(factory)
            entry.value = built
            if _has_turns(built):
                self.stats.rehydrated += 1
        return entry.value

    async def _after_turn(self, entry: _Entry[T]) -> None:
        value = entry.value
        if value is not None and isinstance(value, SharedDurable):
            await asyncio.to_thread(value.release_session_lock)

    def list(self) -> builtins.list[SessionInfo]:
        from rlm.sessions import list_sessions

        live = super().list()
        known = {info.session_id for info in live}
        now = time.time()
        return live + [
            SessionInfo(s.id, s.created_at, max(0.0, now - s.updated_at), s.turns, False)
            for s in list_sessions(self.store)
            if s.id not in known
        ]

    def drop(self, session_id: str) -> bool:
        from rlm.base.errors import SessionLockedError, SessionNotFoundError
        from rlm.sessions import delete

        dropped = super().drop(session_id)  # closes it now unless a request holds it
        try:
            delete(session_id, self.store)
        except SessionNotFoundError:
            return dropped
        except SessionLockedError:
            return dropped
        return True


def _has_turns(value: object) -> bool:
    """Whether a freshly built durable RLM resumed turns from its store."""
    durable = getattr(value, "durable_session", None)
    return bool(getattr(durable, "thread", None))


def _close_all(values: builtins.list[T]) -> None:
    for value in values:
        try:
            value.close()
        except Exception:  # one broken session must not keep the others open
            continue
