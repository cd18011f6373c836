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

from rlm.server.session_api import (
    DEFAULT_ADMISSION_TIMEOUT,
    DEFAULT_GRACE,
    DEFAULT_IDLE_TTL,
    DEFAULT_MAX_SESSIONS,
    DEFAULT_REMEMBER,
    Closable,
    RegistryStats,
    RLMFactory,
    SessionGoneError,
    SessionInfo,
    SessionRegistry,
    SessionsFullError,
    SharedDurable,
)
from rlm.server.session_registry import InMemorySessionRegistry
from rlm.server.session_store_registry import StoreBackedSessionRegistry

__all__ = [
    "DEFAULT_ADMISSION_TIMEOUT",
    "DEFAULT_GRACE",
    "DEFAULT_IDLE_TTL",
    "DEFAULT_MAX_SESSIONS",
    "DEFAULT_REMEMBER",
    "Closable",
    "InMemorySessionRegistry",
    "RLMFactory",
    "RegistryStats",
    "SessionGoneError",
    "SessionInfo",
    "SessionRegistry",
    "SessionsFullError",
    "SharedDurable",
    "StoreBackedSessionRegistry",
]
