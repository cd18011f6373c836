"""Spending and limits for a call tree.

Each run (root turn or child RLM) owns a ``BudgetNode``. Charging a node charges every
ancestor too, so a parent always sees what its children spent. Whether a limit is broken
is decided by the pure function ``find_breach``; ``breach_error`` turns a breach into the
``rlms``-compatible exception carrying the best partial answer.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from rlm.core.types import ModelUsageSummary, UsageSummary
from rlm.utils.exceptions import (
    BudgetExceededError,
    ErrorThresholdExceededError,
    RLMLimitError,
    TimeoutExceededError,
    TokenLimitExceededError,
)


@dataclass(frozen=True)
class Limits:
    """The limits of one run; ``None`` means unlimited."""

    max_budget: float | None = None
    max_timeout: float | None = None
    max_tokens: int | None = None
    max_errors: int | None = None


class BudgetNode:
    """Usage of one run and its descendants, plus the clock it started on."""

    def __init__(self, limits: Limits = Limits(), parent: BudgetNode | None = None) -> None:
        self.limits = limits
        self.parent = parent
        self.started = time.perf_counter()
        self._usage = UsageSummary()
        self._lock = threading.Lock()

    def charge(self, model: str, usage: ModelUsageSummary) -> None:
        node: BudgetNode | None = self
        while node is not None:
            with node._lock:
                mine = node._usage.model_usage_summaries.get(model)
                if mine is None:
                    node._usage.model_usage_summaries[model] = usage.copy()
                else:
                    mine.add(usage)
            node = node.parent

    @property
    def usage(self) -> UsageSummary:
        """A copy of everything charged to this node and its descendants."""
        with self._lock:
            return UsageSummary({m: u.copy() for m, u in self._usage.model_usage_summaries.items()})

    @property
    def spent_usd(self) -> float:
        with self._lock:
            return self._usage.total_cost or 0.0

    @property
    def tokens(self) -> int:
        with self._lock:
            return self._usage.total_tokens

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def child_limits(self, inherited: Limits) -> Limits:
        """Limits for a child: what remains of this node's budget, time and tokens."""
        lim = self.limits
        return Limits(
            max_budget=None
            if lim.max_budget is None
            else max(lim.max_budget - self.spent_usd, 0.0),
            max_timeout=None
            if lim.max_timeout is None
            else max(lim.max_timeout - self.elapsed, 0.0),
            max_tokens=None if lim.max_tokens is None else max(lim.max_tokens - self.tokens, 0),
            max_errors=inherited.max_errors,
        )

    def child(self, inherited: Limits) -> BudgetNode:
        return BudgetNode(self.child_limits(inherited), parent=self)


@dataclass(frozen=True)
class Breach:
    """A broken limit: which one, how much was used, and the limit."""

    kind: str  # "timeout" | "budget" | "tokens" | "errors"
    used: float
    limit: float


def find_breach(
    limits: Limits,
    *,
    elapsed: float = 0.0,
    spent_usd: float = 0.0,
    tokens: int = 0,
    consecutive_errors: int = 0,
) -> Breach | None:
    """The first limit that is exceeded, or ``None``. Pure: no clock, no locks."""
    if limits.max_timeout is not None and elapsed > limits.max_timeout:
        return Breach("timeout", elapsed, limits.max_timeout)
    if limits.max_errors is not None and consecutive_errors >= limits.max_errors:
        return Breach("errors", consecutive_errors, limits.max_errors)
    if limits.max_budget is not None and spent_usd > limits.max_budget:
        return Breach("budget", spent_usd, limits.max_budget)
    if limits.max_tokens is not None and tokens > limits.max_tokens:
        return Breach("tokens", tokens, limits.max_tokens)
    return None


def breach_error(
    breach: Breach, partial_answer: str | None, iteration: int, last_error: str | None = None
) -> RLMLimitError:
    """The exception for ``breach``, carrying ``partial_answer``."""
    where = f"after iteration {iteration}" if iteration else "before the first iteration"
    if breach.kind == "timeout":
        return TimeoutExceededError(
            breach.used,
            breach.limit,
            partial_answer,
            f"Timeout exceeded {where}: {breach.used:.1f}s of {breach.limit:.1f}s limit",
        )
    if breach.kind == "errors":
        return ErrorThresholdExceededError(
            int(breach.used),
            int(breach.limit),
            last_error,
            partial_answer,
            f"Error threshold exceeded: {int(breach.used)} consecutive errors "
            f"(limit: {int(breach.limit)})",
        )
    if breach.kind == "budget":
        return BudgetExceededError(
            breach.used,
            breach.limit,
            f"Budget exceeded {where}: spent ${breach.used:.6f} of ${breach.limit:.6f} budget",
            partial_answer,
        )
    return TokenLimitExceededError(
        int(breach.used),
        int(breach.limit),
        partial_answer,
        f"Token limit exceeded {where}: {int(breach.used):,} of {int(breach.limit):,} tokens",
    )
