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
carrying the best partial answer (both in ``rlm.core.limits``, re-exported here).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from rlm.base.cancel import CancelToken
from rlm.base.errors import BudgetExhaustedError
from rlm.base.types import ModelUsageSummary, UsageSummary
from rlm.core.limits import (
    Breach,
    Estimate,
    Limits,
    breach_error,
    describe_refusal,
    find_breach,
)

_NO_LIMITS = Limits()


class _Tree:
    """What every node of one call tree shares. ``interruptible``: the tree's root turn
    is driven on an event loop (``acompletion``, ``stream``, or a run with a deadline),
    so its token may stop it at any moment; blocking calls then go through the loop
    too, so the token cancels them in flight (``rlm.core.lm_pipeline``)."""

    __slots__ = ("interruptible", "lock", "token")

    def __init__(self, token: CancelToken) -> None:
        self.lock = threading.Lock()
        self.token = token
        self.interruptible = False


class BudgetNode:
    """Usage of one run and its descendants, its reservations, and its clock."""

    def __init__(
        self,
        limits: Limits = _NO_LIMITS,
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
                # ``UsageSummary.merge`` of ``{model: usage}``, without building one.
                summaries = node._usage.model_usage_summaries
                mine = summaries.get(model)
                if mine is None:
                    summaries[model] = usage.copy()
                else:
                    mine.add(usage)

    def reserve(self, estimate: Estimate) -> Estimate:
        """Hold ``estimate`` on this node and its ancestors, or raise
        ``BudgetExhaustedError`` if that would break a limit. Returns the hold, to pass
        to ``settle`` or ``release``."""
        with self.tree.lock:
            now = time.perf_counter()
            breach = self._first_shortfall(estimate, now)
            if breach is not None:
                raise BudgetExhaustedError(breach, describe_refusal(breach))
            for node in self.chain:
                node._held = node._held.plus(estimate, 1)
        return estimate

    def _first_shortfall(self, estimate: Estimate, now: float) -> Breach | None:
        """The first limit up the chain that ``estimate`` would break (the tree lock is
        held); every node whose limit refuses records it as its first refusal."""
        breach: Breach | None = None
        for node in self.chain:
            found = node._shortfall(estimate, now)
            if found is not None:
                if node.refused is None:
                    node.refused = found
                breach = breach or found
        return breach

    def admit(self, calls: int) -> tuple[int, BudgetExhaustedError | None]:
        """How many of ``calls`` more calls the limits up the chain let start now: the
        calls left, or none once time, tokens or USD are used up. Nothing is held (each
        call still reserves its own estimate). If not all fit, also the refusal for the
        rest, recorded on the nodes whose limit refused as ``reserve`` does. Lets a batch
        fail its excess, and a call skip making a client, before any work."""
        with self.tree.lock:
            now = time.perf_counter()
            fit = calls
            for node in self.chain:
                fit = min(fit, node._room(now, calls))
            if fit >= calls:
                return calls, None
            breach = self._first_shortfall(Estimate(calls=fit + 1, tokens=1, usd=0.0), now)
            assert breach is not None  # the node that limited ``fit`` refuses the probe
            return fit, BudgetExhaustedError(breach, describe_refusal(breach))

    def _room(self, now: float, wanted: int) -> int:
        """Calls this node's own limits let start now (caller holds the lock)."""
        lim, held, usage = self.limits, self._held, self._usage
        if lim.max_timeout is not None and now - self.started >= lim.max_timeout:
            return 0
        if lim.max_tokens is not None and usage.total_tokens + held.tokens >= lim.max_tokens:
            return 0
        if lim.max_budget is not None and (usage.total_cost or 0.0) + held.usd > lim.max_budget:
            return 0
        if lim.max_llm_calls is None:
            return wanted
        return max(lim.max_llm_calls - usage.total_calls - held.calls, 0)

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
        copy = UsageSummary()
        with self.tree.lock:
            copy.merge(self._usage)
        return copy

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


__all__ = [
    "Breach",
    "BudgetNode",
    "Estimate",
    "Limits",
    "breach_error",
    "describe_refusal",
    "find_breach",
]
