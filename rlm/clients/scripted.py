"""A scripted model for tests and demos, in the spirit of ``llm``'s ``MockModel``.

Replies come from a list (consumed in order; the last one repeats if ``repeat_last``)
or from a callable ``responder(prompt) -> str``. Token counts are estimated as
characters / 4, so budgets and usage accounting can be exercised without a provider.
A structured-output call (``output_schema``'s last call) is answered from the same
script; its schema is recorded in ``schemas``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from rlm.base.json_schema import ResponseSchema
from rlm.base.types import ModelUsageSummary, Prompt
from rlm.clients.base_lm import LMResult, TrackedLM
from rlm.clients.tokens import estimate_tokens


class ScriptedLM(TrackedLM):
    """Replies from a script; records every prompt it receives in ``prompts`` (and the
    schema of every structured-output call in ``schemas``)."""

    structured_output = True

    def __init__(
        self,
        model_name: str = "scripted",
        responses: Iterable[str] | None = None,
        responder: Callable[[Prompt], str] | None = None,
        latency: float = 0.0,
        cost_per_token: float | None = None,
        repeat_last: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_name=model_name, **kwargs)
        self._responses = list(responses or [])
        self._responder = responder
        self.latency = latency
        self.cost_per_token = cost_per_token
        self.reports_cost = cost_per_token is not None  # each call's usage carries it
        self.repeat_last = repeat_last
        self.prompts: list[Prompt] = []
        self.schemas: list[ResponseSchema] = []
        self._lock = threading.Lock()

    def _next_reply(self, prompt: Prompt) -> str:
        with self._lock:
            self.prompts.append(prompt)
            if self._responder is None:
                if not self._responses:
                    raise RuntimeError("ScriptedLM has no more scripted responses")
                if len(self._responses) == 1 and self.repeat_last:
                    return self._responses[0]
                return self._responses.pop(0)
        return self._responder(prompt)

    def _result(self, prompt: Prompt, text: str) -> LMResult:
        tokens_in, tokens_out = estimate_tokens(prompt), estimate_tokens(text)
        cost = None
        if self.cost_per_token is not None:
            cost = (tokens_in + tokens_out) * self.cost_per_token
        return LMResult(text, self.model_name, ModelUsageSummary(1, tokens_in, tokens_out, cost))

    def _complete(self, prompt: Prompt) -> LMResult:
        text = self._next_reply(prompt)
        if self.latency:
            time.sleep(self.latency)
        return self._result(prompt, text)

    async def _acomplete(self, prompt: Prompt) -> LMResult:
        text = self._next_reply(prompt)
        if self.latency:
            await asyncio.sleep(self.latency)
        return self._result(prompt, text)

    def complete_structured(self, prompt: Prompt, schema: ResponseSchema) -> LMResult:
        with self._lock:
            self.schemas.append(schema)
        return self.complete(prompt)

    async def acomplete_structured(self, prompt: Prompt, schema: ResponseSchema) -> LMResult:
        with self._lock:
            self.schemas.append(schema)
        return await self.acomplete(prompt)
