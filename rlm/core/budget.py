"""Spending, limits and reservations for a call tree.

Each run (root turn or child RLM) owns a ``BudgetNode``; a child's node links to its
parent's, and all nodes of a tree share one lock and one cancel token. Charging a node
charges every ancestor too, so a parent always sees what its children spent.

Before an LM call, the caller *reserves* an estimate (one call, its tokens, its USD) on
its node. The reservation checks every limit up the chain under the tree's lock, so
concurrent children cannot together overshoot a limit that none of them breaks alone;
the real usage then replaces the estimate (``settle``). A refused reservation raises
``BudgetExhaustedError`` and leaves the breach on each node whose limit it hit
(``refused``), where the run's loop finds it at its next check. Trees without limits
skip all of this (``guarded`` is false).

Whether a limit is broken after the fact is decided by the pure function
``find_breach``; ``breach_error`` turns a breach into the ``rlms``-compatible exception
carrying the best partial answer.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from rlm.core.cancel import CancelToken
from rlm.core.types import ModelUsageSummary, UsageSummary
from rlm.utils.exceptions import (
    BudgetExceededError,
    BudgetExhaustedError,
    ErrorThresholdExceededError,
    LLMCallLimitExceededError,
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
    max_llm_calls: int | None = None

    @property
    def reservable(self) -> bool:
        """True if a call must reserve against these limits (``max_errors`` is per run)."""
        return not (
            self.max_budget is None
            and self.max_timeout is None
            and self.max_tokens is None
            and self.max_llm_calls is None
        )


@dataclass(frozen=True)
class Estimate:
    """What one call may cost, reserved before it is made."""

    calls: int = 1
    tokens: int = 0
    usd: float = 0.0

    def plus(self, other: Estimate, sign: int) -> Estimate:
        return Estimate(
            self.calls + sign * other.calls,
            self.tokens + sign * other.tokens,
            self.usd + sign * other.usd,
        )


@dataclass(frozen=True)
class Breach:
    """A broken limit: which one, how much was used, and the limit. A refused
    reservation also says what the call asked for and what calls in flight held."""

    kind: str  # "timeout" | "budget" | "tokens" | "errors" | "calls"
    used: float
    limit: float
    requested: float | None = None
    reserved: float = 0.0


class _Tree:
    """What every node of one call tree shares."""

    __slots__ = ("lock", "token")

    def __init__(self, token: CancelToken) -> None:
        self.lock = threading.Lock()
        self.token = token


class BudgetNode:
    """Usage of one run and its descendants, its reservations, and its clock."""

    def __init__(
        self,
        limits: Limits = Limits(),
        parent: BudgetNode | None = None,
        token: CancelToken | None = None,
    ) -> None:
        self.limits = limits
        self.parent = parent
        self.tree: _Tree = parent.tree if parent is not None else _Tree(token or CancelToken())
        self.token: CancelToken = self.tree.token  # the call tree's cancel token
        self.chain: tuple[BudgetNode, ...] = (self,) if parent is None else (self, *parent.chain)
        self.guarded: bool = limits.reservable or (parent is not None and parent.guarded)
        self.started = time.perf_counter()
        self.refused: Breach | None = None  # the first reservation this node's limits refused
        self._usage = UsageSummary()
        self._held = Estimate(0, 0, 0.0)  # what calls in flight have reserved

    def needs(self, kind: str) -> bool:
        """True if some node up the chain limits ``kind`` ("tokens", "budget", ...)."""
        field = {"tokens": "max_tokens", "budget": "max_budget", "calls": "max_llm_calls"}[kind]
        return any(getattr(node.limits, field) is not None for node in self.chain)

    # -- spending ----------------------------------------------------------------------

    def charge(self, model: str, usage: ModelUsageSummary) -> None:
        """Add one call's real usage to this node and every ancestor."""
        self.settle(model, usage, None)

    def settle(self, model: str, usage: ModelUsageSummary, hold: Estimate | None) -> None:
        """Replace the reservation ``hold`` (if any) by the call's real usage."""
        with self.tree.lock:
            for node in self.chain:
                if hold is not None:
                    node._unhold(hold)
                mine = node._usage.model_usage_summaries.get(model)
                if mine is None:
                    node._usage.model_usage_summaries[model] = usage.copy()
                else:
                    mine.add(usage)

    def reserve(self, estimate: Estimate) -> Estimate:
        """Hold ``estimate`` on this node and its ancestors, or raise
        ``BudgetExhaustedError`` if that would break a limit. Returns the hold, to pass
        to ``settle`` or ``release``."""
        with self.tree.lock:
            now = time.perf_counter()
            breach: Breach | None = None
            for node in self.chain:
                found = node._shortfall(estimate, now)
                if found is not None:
                    if node.refused is None:
                        node.refused = found
                    breach = breach or found
            if breach is not None:
                raise BudgetExhaustedError(breach, describe_refusal(breach))
            for node in self.chain:
                node._held = node._held.plus(estimate, 1)
        return estimate

    def release(self, hold: Estimate) -> None:
        """Drop a reservation whose call was never made or failed."""
        with self.tree.lock:
            for node in self.chain:
                node._unhold(hold)

    def ensure_room(self) -> None:
        """Raise ``BudgetExhaustedError`` if not even a minimal call fits (used before
        spawning a child, which would fail on its first call anyway)."""
        if self.guarded:
            self.release(self.reserve(Estimate(calls=1, tokens=1, usd=0.0)))

    def _unhold(self, hold: Estimate) -> None:
        self._held = self._held.plus(hold, -1)

    def _shortfall(self, est: Estimate, now: float) -> Breach | None:
        """The limit of this node that ``est`` would break (caller holds the lock)."""
        lim, held, usage = self.limits, self._held, self._usage
        if lim.max_timeout is not None and now - self.started >= lim.max_timeout:
            return Breach("timeout", now - self.started, lim.max_timeout)
        if lim.max_llm_calls is not None:
            calls = usage.total_calls
            if calls + held.calls + est.calls > lim.max_llm_calls:
                return Breach("calls", calls, lim.max_llm_calls, est.calls, held.calls)
        if lim.max_tokens is not None:
            tokens = usage.total_tokens
            if tokens + held.tokens + est.tokens > lim.max_tokens:
                return Breach("tokens", tokens, lim.max_tokens, est.tokens, held.tokens)
        if lim.max_budget is not None:
            spent = usage.total_cost or 0.0
            if spent + held.usd + est.usd > lim.max_budget:
                return Breach("budget", spent, lim.max_budget, est.usd, held.usd)
        return None

    # -- reading -----------------------------------------------------------------------

    @property
    def usage(self) -> UsageSummary:
        """A copy of everything charged to this node and its descendants."""
        with self.tree.lock:
            return UsageSummary({m: u.copy() for m, u in self._usage.model_usage_summaries.items()})

    @property
    def spent_usd(self) -> float:
        with self.tree.lock:
            return self._usage.total_cost or 0.0

    @property
    def tokens(self) -> int:
        with self.tree.lock:
            return self._usage.total_tokens

    @property
    def calls(self) -> int:
        with self.tree.lock:
            return self._usage.total_calls

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def remaining(self) -> dict[str, Any]:
        """What is left for this run, the tightest of its own and its ancestors' limits,
        minus what calls in flight hold: ``calls``, ``tokens``, ``usd``, ``seconds``
        (``None`` where unlimited). This is the REPL's ``budget()``."""
        left: dict[str, Any] = {"calls": None, "tokens": None, "usd": None, "seconds": None}

        def tighten(key: str, value: float) -> None:
            current = left[key]
            left[key] = value if current is None else min(current, value)

        with self.tree.lock:
            now = time.perf_counter()
            for node in self.chain:
                lim, held, usage = node.limits, node._held, node._usage
                if lim.max_llm_calls is not None:
                    tighten("calls", max(lim.max_llm_calls - usage.total_calls - held.calls, 0))
                if lim.max_tokens is not None:
                    tighten("tokens", max(lim.max_tokens - usage.total_tokens - held.tokens, 0))
                if lim.max_budget is not None:
                    spent = usage.total_cost or 0.0
                    tighten("usd", max(lim.max_budget - spent - held.usd, 0.0))
                if lim.max_timeout is not None:
                    tighten("seconds", max(lim.max_timeout - (now - node.started), 0.0))
        return left

    def cost_per_token(self, model: str) -> float | None:
        """USD per token that ``model`` has cost so far in this tree (for estimating
        calls to models with no known price), or ``None``."""
        root = self.chain[-1]
        with self.tree.lock:
            usage = root._usage.model_usage_summaries.get(model)
            if usage is None or not usage.total_cost or not usage.total_tokens:
                return None
            return usage.total_cost / usage.total_tokens

    def report(self) -> dict[str, Any]:
        """The ``budget_update`` event's data for this node."""
        with self.tree.lock:
            usage = self._usage
            spent, tokens, calls = usage.total_cost or 0.0, usage.total_tokens, usage.total_calls
        return {
            "spent_usd": spent,
            "tokens": tokens,
            "calls": calls,
            "elapsed": self.elapsed,
            "remaining": self.remaining(),
        }

    # -- children ----------------------------------------------------------------------

    def child_limits(self, inherited: Limits) -> Limits:
        """Limits for a child: what remains of this node's budget, time, tokens and calls
        (reservations of calls in flight excluded)."""
        lim = self.limits
        with self.tree.lock:
            usage, held = self._usage, self._held
            spent, tokens, calls = usage.total_cost or 0.0, usage.total_tokens, usage.total_calls
        return Limits(
            max_budget=None
            if lim.max_budget is None
            else max(lim.max_budget - spent - held.usd, 0.0),
            max_timeout=None
            if lim.max_timeout is None
            else max(lim.max_timeout - self.elapsed, 0.0),
            max_tokens=None
            if lim.max_tokens is None
            else max(lim.max_tokens - tokens - held.tokens, 0),
            max_errors=inherited.max_errors,
            max_llm_calls=None
            if lim.max_llm_calls is None
            else max(lim.max_llm_calls - calls - held.calls, 0),
        )

    def child(self, inherited: Limits) -> BudgetNode:
        return BudgetNode(self.child_limits(inherited), parent=self)


def find_breach(
    limits: Limits,
    *,
    elapsed: float = 0.0,
    spent_usd: float = 0.0,
    tokens: int = 0,
    consecutive_errors: int = 0,
    calls: int = 0,
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
    if limits.max_llm_calls is not None and calls > limits.max_llm_calls:
        return Breach("calls", calls, limits.max_llm_calls)
    return None


def describe_refusal(breach: Breach) -> str:
    """What a sub-call that was not made tells the model (after ``Error: ``)."""
    if breach.kind == "timeout":
        return f"budget exhausted: max_timeout of {breach.limit:.1f}s reached"
    if breach.kind == "calls":
        return (
            f"budget exhausted: max_llm_calls {int(breach.limit)} reached "
            f"({int(breach.used)} made, {int(breach.reserved)} in flight)"
        )
    if breach.kind == "tokens":
        return (
            f"budget exhausted: max_tokens {int(breach.limit):,} would be exceeded "
            f"({int(breach.used):,} used, {int(breach.reserved):,} held by calls in flight, "
            f"this call needs ~{int(breach.requested or 0):,})"
        )
    return (
        f"budget exhausted: max_budget ${breach.limit:.6f} would be exceeded "
        f"(${breach.used:.6f} spent, ${breach.reserved:.6f} held by calls in flight, "
        f"this call needs ~${breach.requested or 0.0:.6f})"
    )


def breach_error(
    breach: Breach, partial_answer: str | None, iteration: int, last_error: str | None = None
) -> RLMLimitError:
    """The exception for ``breach``, carrying ``partial_answer``."""
    where = f"after iteration {iteration}" if iteration else "before the first iteration"
    refused = breach.requested is not None  # a call was refused rather than overspent
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
        message = f"Budget exceeded {where}: spent ${breach.used:.6f} of ${breach.limit:.6f} budget"
        if refused:
            message = (
                f"Budget exhausted {where}: spent ${breach.used:.6f} of ${breach.limit:.6f}; "
                f"a call needing ~${breach.requested:.6f} more was not made"
            )
        return BudgetExceededError(breach.used, breach.limit, message, partial_answer)
    if breach.kind == "calls":
        return LLMCallLimitExceededError(
            int(breach.used),
            int(breach.limit),
            partial_answer,
            f"LM call limit reached {where}: {int(breach.used)} of {int(breach.limit)} calls",
        )
    message = f"Token limit exceeded {where}: {int(breach.used):,} of {int(breach.limit):,} tokens"
    if refused:
        message = (
            f"Token limit reached {where}: {int(breach.used):,} of {int(breach.limit):,} "
            f"tokens used; a call needing ~{int(breach.requested or 0):,} more was not made"
        )
    return TokenLimitExceededError(int(breach.used), int(breach.limit), partial_answer, message)
