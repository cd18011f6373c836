"""``ProbeLM``: a scripted client for concurrency tests. It sleeps per call (really: a
thread sleep or an ``asyncio.sleep``), records how many calls overlap, and can inject
errors, so governor, cancellation and budget tests see real concurrency."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from rlm.base.types import ModelUsageSummary, Prompt
from rlm.clients.base_lm import LMResult, TrackedLM
from rlm.clients.retry import RetryPolicy
from rlm.clients.tokens import estimate_tokens

FAST = RetryPolicy(max_retries=20, base_delay=0.005, max_delay=0.05, jitter=0.25)

Latency = float | Callable[[Prompt], float]


class ProbeLM(TrackedLM):
    """Sleeps ``latency`` (seconds, or a function of the prompt) per call and records how
    many calls overlap. ``fail(n, prompt)`` (``n``: calls in flight, this one included)
    may raise to inject errors. Usage is estimated like ``ScriptedLM``'s; with
    ``cost_per_token`` each call also has a cost."""

    def __init__(
        self,
        model_name: str = "probe",
        latency: Latency = 0.02,
        fail: Callable[[int, Prompt], None] | None = None,
        reply: Callable[[Prompt], str] = lambda p: f"ok:{p}",
        retry_policy: RetryPolicy | None = FAST,
        cost_per_token: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_name=model_name, **kwargs)
        self.latency, self.fail, self.reply = latency, fail, reply
        self.cost_per_token = cost_per_token
        if retry_policy is not None:
            self.retry_policy = retry_policy
        self._lock = threading.Lock()
        self.inflight = self.max_inflight = self.attempts = self.completed = 0
        self.prompts: list[Prompt] = []

    def _delay(self, prompt: Prompt) -> float:
        return self.latency(prompt) if callable(self.latency) else self.latency

    def _enter(self, prompt: Prompt) -> None:
        with self._lock:
            self.attempts += 1
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
            self.prompts.append(prompt)
            n = self.inflight
        if self.fail is not None:
            try:
                self.fail(n, prompt)
            except BaseException:
                self._leave()
                raise

    def _leave(self, done: bool = False) -> None:
        with self._lock:
            self.inflight -= 1
            self.completed += done

    def _result(self, prompt: Prompt) -> LMResult:
        self._leave(done=True)
        text = self.reply(prompt)
        tokens_in, tokens_out = estimate_tokens(prompt), estimate_tokens(text)
        cost = None
        if self.cost_per_token is not None:
            cost = (tokens_in + tokens_out) * self.cost_per_token
        return LMResult(text, self.model_name, ModelUsageSummary(1, tokens_in, tokens_out, cost))

    def _complete(self, prompt: Prompt) -> LMResult:
        self._enter(prompt)
        try:
            time.sleep(self._delay(prompt))
        except BaseException:
            self._leave()
            raise
        return self._result(prompt)

    async def _acomplete(self, prompt: Prompt) -> LMResult:
        self._enter(prompt)
        try:
            await asyncio.sleep(self._delay(prompt))
        except BaseException:
            self._leave()  # cancelled: the call never completes
            raise
        return self._result(prompt)
