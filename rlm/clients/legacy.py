"""Where a client enters the engine: ``adopt``, and the adapter for ``rlms`` clients.

The engine calls ``complete``/``acomplete`` and expects a ``str`` and that call's own
usage. A client written for ``rlms`` (or a ``unittest.mock.Mock`` standing in for one)
has only ``completion``/``acompletion`` and ``get_last_usage``, whose usage may be a
``ModelUsageSummary``, a whole ``UsageSummary`` or nothing useful. ``as_client`` wraps
anything that is not an rlmx ``BaseLM`` in ``LegacyClient``; ``reply_text`` and
``usage_of`` (in ``base_lm``) are the two checks both paths share.

``adopt`` is the one call the engine makes when it takes a client in: the client as a
``BaseLM``, and its retries handed over (``rlm.clients.retry.hand_over``) so the
engine's governor is the only layer that retries it.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, NamedTuple

from rlm.base.types import ModelUsageSummary, Prompt, UsageSummary
from rlm.clients.base_lm import BaseLM, LMResult, reply_text, usage_of
from rlm.clients.retry import RetryPolicy, hand_over


def _last_usage(client: Any) -> ModelUsageSummary:
    getter = getattr(client, "get_last_usage", None)
    return usage_of(getter()) if callable(getter) else ModelUsageSummary(1, 0, 0)


class LegacyClient(BaseLM):
    """A ``BaseLM`` over an object that only speaks the ``rlms`` client contract."""

    def __init__(self, inner: Any) -> None:
        if not callable(getattr(inner, "completion", None)):
            raise TypeError(
                f"{type(inner).__name__} is not a model client: it has no completion() method"
            )
        name = getattr(inner, "model_name", None)
        super().__init__(model_name=name if isinstance(name, str) else type(inner).__name__)
        self.inner = inner
        self.reports_cost = getattr(inner, "reports_cost", False) is True

    def completion(self, prompt: Prompt) -> str:
        return reply_text(self.inner, self.inner.completion(prompt))

    async def acompletion(self, prompt: Prompt) -> str:
        method = getattr(self.inner, "acompletion", None)
        if callable(method) and inspect.iscoroutinefunction(method):
            return reply_text(self.inner, await method(prompt))
        return await asyncio.to_thread(self.completion, prompt)

    def complete(self, prompt: Prompt) -> LMResult:
        text = self.completion(prompt)
        return LMResult(text=text, model=self.model_name, usage=_last_usage(self.inner))

    async def acomplete(self, prompt: Prompt) -> LMResult:
        text = await self.acompletion(prompt)
        return LMResult(text=text, model=self.model_name, usage=_last_usage(self.inner))

    def get_usage_summary(self) -> UsageSummary:
        summary = (
            self.inner.get_usage_summary() if hasattr(self.inner, "get_usage_summary") else None
        )
        return summary if isinstance(summary, UsageSummary) else UsageSummary()

    def get_last_usage(self) -> ModelUsageSummary:
        return _last_usage(self.inner)

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()

    def __getattr__(self, name: str) -> Any:  # e.g. a test reading mock attributes
        return getattr(self.__dict__["inner"], name)


def as_client(client: Any) -> BaseLM:
    """``client`` itself if it is an rlmx ``BaseLM``, else a ``LegacyClient`` over it."""
    return client if isinstance(client, BaseLM) else LegacyClient(client)


class Adopted(NamedTuple):
    """A client the engine has taken in, and the retry policy the engine applies to it."""

    client: BaseLM
    retry_policy: RetryPolicy


def adopt(client: Any) -> Adopted:
    """Take ``client`` into the engine: ``as_client(client)``, with its own retries handed
    over (the client then tries once per call; the returned policy is its own)."""
    return Adopted(as_client(client), hand_over(client))
