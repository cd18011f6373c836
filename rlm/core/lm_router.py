"""Model routing: which client serves an LM call of a session.

A ``ModelRouter`` holds a session's clients: the default (root) client, the other
backend (calls at depth 1 that name no model), clients registered by model name, and
an optional factory that makes a client for a model the first time code names it.
A named model wins; else depth 1 goes to the other backend when there is one; else
the default client.

Every client enters through ``rlm.clients.legacy.adopt``, once: a client written for
``rlms`` is adapted to ``BaseLM`` and the client's own retries are handed over; the
router keeps the retry policy the governor applies to it (``Route.retry_policy``).
``model_policy`` holds the model names REPL code may pass: every registered client's,
plus what the operator allowed.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from rlm.base.types import UsageSummary
from rlm.clients.base_lm import BaseLM
from rlm.clients.legacy import Adopted, adopt
from rlm.clients.retry import RetryPolicy
from rlm.core.model_policy import AllowedModels, ModelPolicy

ClientFactory = Callable[[str], Any]


class Route(NamedTuple):
    """Where one call goes: the client, the model name it is charged under, and the
    retry policy the governor applies."""

    client: BaseLM
    name: str
    retry_policy: RetryPolicy


class ModelRouter:
    """A session's clients, by model name and depth (thread-safe)."""

    def __init__(
        self,
        client: Any,
        other: Any | None = None,
        factory: ClientFactory | None = None,
        allowed_models: AllowedModels = None,
    ) -> None:
        self.model_policy = ModelPolicy(allowed_models)
        self.factory = factory
        self.clients: dict[str, BaseLM] = {}
        self._policies: dict[int, RetryPolicy] = {}  # id(client) -> its retry policy
        self._lock = threading.Lock()
        self.default = self._take(adopt(client))
        self.other = self._take(adopt(other)) if other is not None else None
        self._register(self.default.model_name, self.default)

    # -- clients ---------------------------------------------------------------------

    def _take(self, adopted: Adopted) -> BaseLM:
        self._policies[id(adopted.client)] = adopted.retry_policy
        return adopted.client

    def _register(self, model_name: str, client: BaseLM) -> None:
        self.clients[model_name] = client
        self.model_policy.allow(model_name)

    def register(self, model_name: str, client: Any) -> None:
        """Serve ``model_name`` with ``client``; REPL code may then name it."""
        self._register(model_name, self._take(adopt(client)))

    def makes(self, model: str | None) -> bool:
        """True if serving ``model`` would make a new client (through the factory)."""
        return bool(model) and self.factory is not None and model not in self.clients

    def get(self, model: str | None = None, depth: int = 0) -> BaseLM:
        """The client for ``model`` at ``depth`` (see the module docstring); a model the
        factory serves gets its client made once, however many threads ask at once."""
        if model:
            client = self.clients.get(model)
            if client is not None:
                return client
            if self.factory is not None:
                with self._lock:
                    client = self.clients.get(model)
                    if client is None:
                        client = self._take(adopt(self.factory(model)))
                        self.clients[model] = client
                return client
        if depth == 1 and self.other is not None:
            return self.other
        return self.default

    def route(self, model: str | None = None, depth: int = 0) -> Route:
        """Where a call for ``model`` at ``depth`` goes."""
        client = self.get(model, depth)
        name = model or client.model_name
        return Route(client, name, self._policies[id(client)])

    def name(self, depth: int = 0) -> str:
        """The model name a call without ``model`` at ``depth`` is made with."""
        if depth == 1 and self.other is not None:
            return self.other.model_name
        return self.default.model_name

    # -- all of them -----------------------------------------------------------------

    def _each(self) -> list[BaseLM]:
        seen: dict[int, BaseLM] = {}
        for client in (self.default, self.other, *list(self.clients.values())):
            if client is not None:
                seen.setdefault(id(client), client)
        return list(seen.values())

    def usage_summary(self) -> UsageSummary:
        """Totals of every client held (one entry per model)."""
        merged = UsageSummary()
        for client in self._each():
            merged.merge(client.get_usage_summary())
        return merged

    def close(self) -> None:
        """Close every client once; a client's failure to close is ignored."""
        for client in self._each():
            with contextlib.suppress(Exception):
                client.close()


__all__ = ["ClientFactory", "ModelRouter", "Route"]
