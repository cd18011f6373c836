"""Where the servers keep persistent sessions between requests.

``SessionRegistry`` is the interface the HTTP and MCP servers use.
``InMemorySessionRegistry`` (the default) keeps values in this process: least recently
used first out beyond ``max_sessions``, dropped after ``idle_ttl`` seconds unused, and
``close()``d whenever it lets one go. A session in use (inside ``lease``) is never
evicted; one dropped while in use closes when released.

``StoreBackedSessionRegistry`` keeps the same live set in memory, but the sessions are
durable RLMs in a session store (``rlm serve --session-store PATH``): an evicted,
expired or restarted-away session is resumed from the store by its next request.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from rlm.core.rlm import RLM
    from rlm.sessions.store import SessionStore


class Closable(Protocol):
    def close(self) -> None: ...


T = TypeVar("T", bound=Closable)


class RLMFactory(Protocol):
    """Builds an RLM. ``session_id`` set: a persistent one (``RLM(persistent=True)``) for
    that session; ``trajectory=True``: with an in-memory ``RLMLogger`` as ``rlm.logger``."""

    def __call__(self, *, session_id: str | None = None, trajectory: bool = False) -> RLM: ...


@dataclass(frozen=True)
class SessionInfo:
    session_id: str
    created: float  # time.time()
    idle_seconds: float
    turns: int  # leases taken: one per request that used the session
    in_use: bool


class SessionRegistry(Protocol[T]):
    def get(self, session_id: str) -> T | None:
        """The session's value if it exists (without creating or touching it)."""
        ...

    def get_or_create(self, session_id: str, factory: Callable[[], T]) -> T:
        """The session's value, built with ``factory`` the first time."""
        ...

    def lease(self, session_id: str, factory: Callable[[], T]) -> AbstractAsyncContextManager[T]:
        """``async with registry.lease(sid, f) as value``: exclusive use for one turn
        (turns of one session queue up; the value cannot be evicted meanwhile)."""
        ...

    def list(self) -> list[SessionInfo]: ...

    def drop(self, session_id: str) -> bool:
        """Forget and close a session; False if there was none."""
        ...

    def close(self) -> None:
        """Close every session."""
        ...


@dataclass
class _Entry(Generic[T]):
    value: T
    created: float
    last_used: float
    turns: int = 0
    users: int = 0
    dropped: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class InMemorySessionRegistry(Generic[T]):
    """A ``SessionRegistry`` in memory with LRU eviction and an idle TTL."""

    def __init__(
        self,
        max_sessions: int = 64,
        idle_ttl: float | None = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self.max_sessions = max_sessions
        self.idle_ttl = idle_ttl
        self._clock = clock
        self._entries: OrderedDict[str, _Entry[T]] = OrderedDict()
        self._lock = threading.Lock()  # the MCP server and tests call from threads too

    def _entry(self, session_id: str, factory: Callable[[], T]) -> _Entry[T]:
        with self._lock:
            released = self._expire()
            entry = self._entries.get(session_id)
            if entry is None:
                now = self._clock()
                entry = _Entry(factory(), created=time.time(), last_used=now)
                self._entries[session_id] = entry
                released += self._evict()
            self._entries.move_to_end(session_id)
            entry.last_used = self._clock()
        _close_all(released)
        return entry

    def get(self, session_id: str) -> T | None:
        with self._lock:
            entry = self._entries.get(session_id)
        return None if entry is None else entry.value

    def get_or_create(self, session_id: str, factory: Callable[[], T]) -> T:
        return self._entry(session_id, factory).value

    @asynccontextmanager
    async def _lease(self, session_id: str, factory: Callable[[], T]) -> AsyncIterator[T]:
        entry = self._entry(session_id, factory)
        entry.users += 1  # pinned from here: eviction skips it while we wait for the lock
        try:
            async with entry.lock:
                entry.turns += 1
                yield entry.value
        finally:
            entry.users -= 1
            entry.last_used = self._clock()
            if entry.dropped and entry.users == 0:
                entry.value.close()

    def lease(self, session_id: str, factory: Callable[[], T]) -> AbstractAsyncContextManager[T]:
        return self._lease(session_id, factory)

    def list(self) -> builtins.list[SessionInfo]:
        with self._lock:
            released = self._expire()
            now = self._clock()
            infos = [
                SessionInfo(sid, e.created, now - e.last_used, e.turns, e.users > 0)
                for sid, e in self._entries.items()
            ]
        _close_all(released)
        return infos

    def drop(self, session_id: str) -> bool:
        with self._lock:
            entry = self._entries.pop(session_id, None)
        if entry is None:
            return False
        _close_all(self._release(entry))
        return True

    def close(self) -> None:
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
        for entry in entries:
            _close_all(self._release(entry))

    def __len__(self) -> int:
        return len(self._entries)

    # -- eviction (callers hold self._lock; values are closed after it is released) -------

    @staticmethod
    def _release(entry: _Entry[T]) -> builtins.list[T]:
        entry.dropped = True
        return [entry.value] if entry.users == 0 else []  # else: closed on release

    def _expire(self) -> builtins.list[T]:
        if self.idle_ttl is None:
            return []
        cutoff = self._clock() - self.idle_ttl
        stale = [s for s, e in self._entries.items() if e.users == 0 and e.last_used < cutoff]
        return [v for s in stale for v in self._release(self._entries.pop(s))]

    def _evict(self) -> builtins.list[T]:
        released: builtins.list[T] = []
        for sid in list(self._entries):  # oldest first
            if len(self._entries) <= self.max_sessions:
                break
            entry = self._entries[sid]
            if entry.users == 0 and sid != next(reversed(self._entries)):
                released += self._release(self._entries.pop(sid))
        return released


class StoreBackedSessionRegistry(InMemorySessionRegistry[T]):
    """Live sessions in memory as ``InMemorySessionRegistry`` keeps them, backed by the
    session store ``store`` (a path, URL or ``SessionStore``). The factory must build
    durable RLMs in that store (``SettingsFactory(..., session_store=store)``): closing
    one releases its lock, and building it again resumes it. ``list()`` adds the stored
    sessions that are not in memory; ``drop()`` also deletes the stored session (unless
    a request, here or in another process, is using it: then only the live one goes)."""

    def __init__(
        self,
        store: SessionStore | str | os.PathLike[str],
        max_sessions: int = 64,
        idle_ttl: float | None = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(max_sessions, idle_ttl, clock)
        self.store = store

    def __bool__(self) -> bool:  # empty is still a registry (``sessions or default``)
        return True

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


def _close_all(values: builtins.list[T]) -> None:
    for value in values:
        try:
            value.close()
        except Exception:  # one broken session must not keep the others open
            continue
