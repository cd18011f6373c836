"""``StoreBackedSessionRegistry``: live sessions kept as ``InMemorySessionRegistry``
keeps them, backed by a session store, so an evicted, expired or restarted-away session
is rebuilt from the store, and several ``rlm serve`` processes over one store serve the
same sessions (the rules are in ``rlm.server.sessions``)."""

from __future__ import annotations

import asyncio
import builtins
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from rlm.server.session_api import (
    DEFAULT_ADMISSION_TIMEOUT,
    DEFAULT_IDLE_TTL,
    DEFAULT_MAX_SESSIONS,
    SessionInfo,
    SharedDurable,
    T,
)
from rlm.server.session_registry import InMemorySessionRegistry, _close_all, _Entry

if TYPE_CHECKING:
    from rlm.sessions.store import SessionStore


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
