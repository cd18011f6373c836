"""Thread- and async-safe usage accounting for one client.

Every call records its own ``ModelUsageSummary``; totals are aggregated per model under a
lock. ``last`` is kept per thread / per asyncio task (a ``ContextVar``), so concurrent
batched calls never overwrite each other's "last usage".
"""

from __future__ import annotations

import threading
from contextvars import ContextVar
from dataclasses import replace
from typing import Any

from rlm.base.types import ModelUsageSummary, UsageSummary


class UsageTracker:
    """Aggregates per-call usage by model name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals = UsageSummary()
        self._last: ContextVar[ModelUsageSummary | None] = ContextVar(
            f"rlm_last_usage_{id(self)}", default=None
        )
        self._last_global: ModelUsageSummary | None = None

    def record(self, model: str, usage: ModelUsageSummary) -> None:
        with self._lock:
            self._totals.merge(UsageSummary({model: usage}))
            self._last_global = usage
        self._last.set(usage)

    def summary(self) -> UsageSummary:
        copy = UsageSummary()
        with self._lock:
            copy.merge(self._totals)
        return copy

    def last(self) -> ModelUsageSummary:
        """The caller's own last call if it made one, else the most recent call overall."""
        usage = self._last.get() or self._last_global
        return usage.copy() if usage is not None else ModelUsageSummary(0, 0, 0)

    def amend_last(self, **fields: Any) -> None:
        """Overwrite fields of the last call (``rlms`` code sets ``last_prompt_tokens``).

        With no call yet, this makes one: a last call whose tokens were set happened.
        """
        with self._lock:
            current = self._last.get() or self._last_global or ModelUsageSummary(total_calls=1)
            usage = replace(current, **fields)
            self._last_global = usage
        self._last.set(usage)
