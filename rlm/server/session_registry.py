"""``InMemorySessionRegistry``: live sessions in this process, with admission control,
eviction past a grace, an idle TTL and a 410 for a session it let go (the rules are in
``rlm.server.sessions``)."""

from __future__ import annotations

import asyncio
import builtins
import math
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Generic

from rlm.server.session_api import (
    DEFAULT_ADMISSION_TIMEOUT,
    DEFAULT_GRACE,
    DEFAULT_IDLE_TTL,
    DEFAULT_MAX_SESSIONS,
    DEFAULT_REMEMBER,
    RegistryStats,
    SessionGoneError,
    SessionInfo,
    SessionsFullError,
    T,
)

_POLL = 0.02  # seconds between looks for a free place while a new session waits


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


def _close_all(values: builtins.list[T]) -> None:
    for value in values:
        try:
            value.close()
        except Exception:  # one broken session must not keep the others open
            continue
