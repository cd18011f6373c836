"""The limits of a run, what one call may cost, and the breaches of both.

Pure data and pure functions: ``find_breach`` decides whether a limit is broken after
the fact, ``describe_refusal`` is what a refused sub-call tells the model, and
``breach_error`` turns a breach into the ``rlms``-compatible exception carrying the best
partial answer. ``rlm.core.budget`` holds the stateful side (``BudgetNode``).
"""

from __future__ import annotations

from dataclasses import dataclass

from rlm.base.errors import (
    BudgetExceededError,
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
