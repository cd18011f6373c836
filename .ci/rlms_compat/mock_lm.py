"""``tests.mock_lm.MockLM`` for rlms's published test suites (their sdists do not ship it).

Written for rlmx from how those tests use it: ``MockLM(responses=[...])`` answers with
the listed replies in call order, ``MockLM(response_fn=f)`` answers ``f(prompt)``, and
with neither it echoes the prompt. Every call counts 10 tokens in and 10 out.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from rlm.clients.base_lm import BaseLM
from rlm.core.types import ModelUsageSummary, UsageSummary

TOKENS_PER_CALL = 10


class MockLM(BaseLM):
    """A scripted in-memory client speaking the rlms ``BaseLM`` contract."""

    def __init__(
        self,
        model_name: str = "mock-model",
        responses: list[str] | None = None,
        response_fn: Callable[[Any], str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_name=model_name, **kwargs)
        self._queue: deque[str] | None = deque(responses) if responses is not None else None
        self._fn = response_fn
        self._calls = 0
        self._lock = threading.Lock()

    def _reply(self, prompt: Any) -> str:
        with self._lock:
            self._calls += 1
            if self._queue is not None:
                if not self._queue:
                    raise IndexError("MockLM has no scripted replies left")
                return self._queue.popleft()
        if self._fn is not None:
            return self._fn(prompt)
        shown = prompt if isinstance(prompt, str) else str(prompt)[:80]
        return f"Mock response to: {shown}"

    def completion(self, prompt: Any) -> str:
        return self._reply(prompt)

    async def acompletion(self, prompt: Any) -> str:
        return self._reply(prompt)

    def get_usage_summary(self) -> UsageSummary:
        n = self._calls
        usage = ModelUsageSummary(n, n * TOKENS_PER_CALL, n * TOKENS_PER_CALL)
        return UsageSummary(model_usage_summaries={self.model_name: usage})

    def get_last_usage(self) -> ModelUsageSummary:
        return ModelUsageSummary(1, TOKENS_PER_CALL, TOKENS_PER_CALL)
