"""The durable-session side of the public ``RLM`` class (``docs/sessions.md``): opening
the store, ``fork``, and handing the session's write lock between processes."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from rlm.base.errors import ConfigurationError

if TYPE_CHECKING:
    from rlm.core.config import RLMConfig
    from rlm.core.durable import DurableSession
    from rlm.core.rlm import RLM
    from rlm.core.session import Session
    from rlm.sessions.store import SessionStore


class DurableSessions:
    """Mixed into ``RLM``: what a durable session adds to it."""

    config: RLMConfig
    durable: bool
    persistent: bool
    session_id: str
    session_store: SessionStore | str | Any
    _durable: DurableSession | None
    _init_kwargs: dict[str, Any]

    def _get_session(self) -> Session:
        raise NotImplementedError

    def _new_child(self, kwargs: dict[str, Any]) -> RLM:
        raise NotImplementedError

    def _open_durable(self) -> DurableSession:
        from rlm.core.durable import open_durable

        cfg = self.config
        model = cfg.root_model
        if model == "unknown" and cfg.backend == "llama_cpp":  # the GGUF's name, as the CLI
            from rlm.clients.llama_cpp import model_label

            model = model_label(cfg.backend_kwargs.get("model_path")) or model
        summary = {"backend": cfg.backend, "model": model, "environment": cfg.environment}
        return open_durable(
            self.session_store, self.session_id, persistent=self.persistent, config=summary
        )

    def fork(self, new_session_id: str | None = None) -> RLM:
        """A new durable session (``new_session_id``, or a generated one) that shares this
        one's turns so far and diverges after: an RLM with the same arguments, resumed
        from the fork. This session is unaffected."""
        if self._durable is None:
            if not self.durable:
                raise ConfigurationError(
                    "fork() needs a durable session: pass session_store=... or durable=True"
                )
            self._get_session()  # closed before: open it again
        assert self._durable is not None
        new_id = new_session_id or uuid.uuid4().hex
        self._durable.fork(new_id)
        return self._new_child({**self._init_kwargs, "session_id": new_id})

    # -- sharing a durable session between processes ------------------------------------

    @property
    def durable_session(self) -> DurableSession | None:
        """The store side of an open durable session (``rlm.core.durable``): its
        ``store``, ``thread`` and the ``idempotency_key`` stored with the next turn.
        ``None`` when the session is not durable or not open."""
        return self._durable

    def release_session_lock(self) -> None:
        """Let other processes write this durable session until the next
        ``reacquire_session_lock`` (a server between turns: ``rlm serve`` replicas over
        one store). A no-op for a session that is not durable or not open."""
        if self._durable is not None:
            self._durable.release_lock()

    def reacquire_session_lock(self, timeout: float | None = None) -> bool:
        """Become the session's writer again, waiting up to ``timeout`` seconds (default:
        the store's ``lock_timeout``; raises ``SessionLockedError``). False when another
        process moved the session on meanwhile: this object is then stale; ``close()``
        it and build a new ``RLM`` for the session, which resumes from the store."""
        if self._durable is None:
            return True
        return self._durable.reacquire(timeout)


__all__ = ["DurableSessions"]
