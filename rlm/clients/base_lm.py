"""The client contract every model backend implements.

``BaseLM`` keeps the ``rlms`` abstract methods (``completion``, ``acompletion``,
``get_usage_summary``, ``get_last_usage``). The engine itself calls ``complete`` /
``acomplete``, which return the text *and that call's own usage*; clients written for
``rlms`` get a default that reads ``get_last_usage()`` right after the call.

New clients should subclass ``TrackedLM`` and implement only ``_complete`` and
``_acomplete``: usage accounting, ``completion``/``acompletion`` and the usage getters
come for free and are safe under concurrency.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from rlm.clients.usage import UsageTracker
from rlm.core.types import ModelUsageSummary, Prompt, UsageSummary

DEFAULT_TIMEOUT: float = 300.0


@dataclass
class LMResult:
    """One completion: its text, the model that produced it and its own usage."""

    text: str
    model: str
    usage: ModelUsageSummary = field(default_factory=lambda: ModelUsageSummary(1, 0, 0))


class BaseLM(ABC):
    """Base class of every language-model client."""

    def __init__(
        self,
        model_name: str = "unknown",
        timeout: float = DEFAULT_TIMEOUT,
        sampling_args: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.model_name = model_name
        self.timeout = timeout
        self.sampling_args: dict[str, Any] = dict(sampling_args or {})
        self.kwargs = kwargs

    @abstractmethod
    def completion(self, prompt: Prompt) -> str:
        """Return the model's reply to a string or a list of chat messages."""

    @abstractmethod
    async def acompletion(self, prompt: Prompt) -> str:
        """Async form of ``completion``."""

    @abstractmethod
    def get_usage_summary(self) -> UsageSummary:
        """Totals for every call this client made, per model."""

    @abstractmethod
    def get_last_usage(self) -> ModelUsageSummary:
        """Usage of the last call (prefer ``complete``, which returns it with the text)."""

    # -- what the engine calls -------------------------------------------------------

    def complete(self, prompt: Prompt) -> LMResult:
        """One call with its own usage. The default suits clients written for ``rlms``."""
        text = self.completion(prompt)
        return LMResult(text=text, model=self.model_name, usage=self.get_last_usage())

    async def acomplete(self, prompt: Prompt) -> LMResult:
        """Async form of ``complete``."""
        text = await self.acompletion(prompt)
        return LMResult(text=text, model=self.model_name, usage=self.get_last_usage())

    def close(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release connections. Called when the session that owns the client closes."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_name={self.model_name!r})"


class TrackedLM(BaseLM):
    """A client whose subclasses return ``LMResult`` and get accounting for free."""

    def __init__(self, model_name: str = "unknown", **kwargs: Any) -> None:
        super().__init__(model_name=model_name, **kwargs)
        self._usage = UsageTracker()

    @abstractmethod
    def _complete(self, prompt: Prompt) -> LMResult:
        """Make one call and return its text and usage."""

    @abstractmethod
    async def _acomplete(self, prompt: Prompt) -> LMResult:
        """Async form of ``_complete``."""

    def complete(self, prompt: Prompt) -> LMResult:
        result = self._complete(prompt)
        self._usage.record(result.model, result.usage)
        return result

    async def acomplete(self, prompt: Prompt) -> LMResult:
        result = await self._acomplete(prompt)
        self._usage.record(result.model, result.usage)
        return result

    def completion(self, prompt: Prompt) -> str:
        return self.complete(prompt).text

    async def acompletion(self, prompt: Prompt) -> str:
        return (await self.acomplete(prompt)).text

    def get_usage_summary(self) -> UsageSummary:
        return self._usage.summary()

    def get_last_usage(self) -> ModelUsageSummary:
        return self._usage.last()
