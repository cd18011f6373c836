"""What the servers need to know of a session registry: the ``SessionRegistry``
protocol, the ``RLMFactory`` that builds sessions, the admission errors (410, 429), the
counters and the defaults. The registries: ``rlm.server.session_registry`` (in memory)
and ``rlm.server.session_store_registry`` (backed by a session store); the rules they
keep are in ``rlm.server.sessions``."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

from rlm.server.errors import APIError

if TYPE_CHECKING:
    from rlm.core.rlm import RLM

DEFAULT_MAX_SESSIONS = 64
DEFAULT_IDLE_TTL = 3600.0
DEFAULT_GRACE = 120.0  # in memory: a session used this recently is not evicted
DEFAULT_ADMISSION_TIMEOUT = 5.0  # a new session waits this long for a place, then 429
DEFAULT_REMEMBER = 100_000  # ids of sessions let go, kept to answer 410 rather than reset


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
