"""One cap on LM calls in flight across a whole evaluation, whatever runs the items.

Each RLM already caps its own call tree (``max_inflight_llm_calls``); an evaluation runs
many RLMs at once (threads, Ray workers), so the provider's limit must hold across
all of them. A ``Permit`` is that shared budget: ``ThreadPermit`` for one process, the
Ray engine's actor-backed permit for a cluster. ``governed(backend, kwargs, permit)``
registers, through the public client registry, a backend whose clients take a permit
for every call and build the real client from the original backend name and kwargs,
so ``RLM(...)`` and its sub-call clients are governed without touching the engine.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any, Protocol

from rlm.base.types import ModelUsageSummary, Prompt, UsageSummary
from rlm.clients import BackendSpec, BaseLM, LMResult, get_client, register_backend

INNER = "_eval_inner_backend"  # the key that carries the real backend's name


class Permit(Protocol):
    """A counting semaphore shared by every LM call of an evaluation."""

    def acquire(self) -> None: ...

    def release(self) -> None: ...


class ThreadPermit:
    """A ``Permit`` for the threads of one process."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the LM call cap must be at least 1, got {limit}")
        self.limit = limit
        self.in_flight = 0
        self.peak = 0  # the most calls ever held at once
        self._semaphore = threading.BoundedSemaphore(limit)
        self._count = threading.Lock()

    def acquire(self) -> None:
        self._semaphore.acquire()
        with self._count:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)

    def release(self) -> None:
        with self._count:
            self.in_flight -= 1
        self._semaphore.release()


class GovernedLM(BaseLM):
    """A client that holds a permit for the length of each call of ``inner``."""

    def __init__(self, inner: BaseLM, permit: Permit) -> None:
        super().__init__(model_name=inner.model_name, timeout=inner.timeout)
        self.inner = inner
        self.permit = permit
        self.reports_cost = inner.reports_cost
        self.sampling_args = inner.sampling_args

    def complete(self, prompt: Prompt) -> LMResult:
        self.permit.acquire()
        try:
            return self.inner.complete(prompt)
        finally:
            self.permit.release()

    async def acomplete(self, prompt: Prompt) -> LMResult:
        await asyncio.to_thread(self.permit.acquire)
        try:
            return await self.inner.acomplete(prompt)
        finally:
            self.permit.release()

    def completion(self, prompt: Prompt) -> str:
        return self.complete(prompt).text

    async def acompletion(self, prompt: Prompt) -> str:
        return (await self.acomplete(prompt)).text

    def get_usage_summary(self) -> UsageSummary:
        return self.inner.get_usage_summary()

    def get_last_usage(self) -> ModelUsageSummary:
        return self.inner.get_last_usage()

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:  # rlms-era attributes of the real client
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


_registered: dict[int, str] = {}
_lock = threading.Lock()


def _backend_for(permit: Permit) -> str:
    """The registered backend name whose clients hold ``permit`` (one per permit)."""
    with _lock:
        name = _registered.get(id(permit))
        if name is None:
            name = f"eval-governed-{uuid.uuid4().hex[:8]}"

            def factory(**kwargs: Any) -> BaseLM:
                inner = get_client(kwargs.pop(INNER), kwargs)
                return GovernedLM(inner, permit)

            register_backend(BackendSpec(name, factory, "an evaluation's shared LM call cap"))
            _registered[id(permit)] = name
        return name


def governed(backend: str, kwargs: dict[str, Any], permit: Permit) -> tuple[str, dict[str, Any]]:
    """The (backend, kwargs) that build ``backend``'s client behind ``permit``."""
    return _backend_for(permit), {**kwargs, INNER: backend}
