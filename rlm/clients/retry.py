"""Retries with exponential back-off and jitter, shared by every client.

Clients translate their SDK's exceptions into the rlmx error tree (``ProviderError``,
``RateLimitError``, ``ProviderConnectionError``...) at their boundary; this module then
decides, without I/O, whether and how long to wait. ``Retry-After`` wins over back-off.
Errors that will not heal (auth, bad request, context too long) are not retried.

Calls the engine makes go through its concurrency governor (``rlm.core.governor``),
which applies the client's ``retry_policy`` itself so it can pace the whole call tree.
While it runs a call, ``suspend_retries`` makes the helpers below try once: the two
layers never multiply.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import TypeVar

from rlm.base.errors import ProviderConnectionError, ProviderError, RateLimitError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """``max_retries`` extra attempts; delay ``base * 2**attempt`` capped at ``max_delay``,
    spread by ±``jitter`` (a fraction)."""

    max_retries: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0
    jitter: float = 0.25

    def delay(
        self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, self.max_delay)
        raw = min(self.base_delay * (2**attempt), self.max_delay)
        spread = (rng or random).uniform(-self.jitter, self.jitter) if self.jitter else 0.0
        return max(0.0, raw * (1 + spread))


NO_RETRIES = RetryPolicy(max_retries=0)

_suspended: ContextVar[bool] = ContextVar("rlm_retries_suspended", default=False)


def suspend_retries() -> Token[bool]:
    """Make ``call_with_retries`` try once in this context (the governor retries)."""
    return _suspended.set(True)


def resume_retries(token: Token[bool]) -> None:
    _suspended.reset(token)


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, ProviderError):
        return exc.retryable
    return isinstance(exc, ProviderConnectionError)


# Statuses below 500 that are worth another try (timeout, conflict) besides 429.
_RETRYABLE_4XX = frozenset({408, 409})


def http_error(status: int, message: str, retry_after: float | None = None) -> ProviderError:
    """The rlmx error for a provider's HTTP error status.

    429 is a ``RateLimitError``; 5xx (Anthropic's 529 "overloaded" included), 408 and
    409 may heal on retry; any other status will not.
    """
    if status == 429:
        return RateLimitError(message, retry_after=retry_after)
    retryable = status >= 500 or status in _RETRYABLE_4XX
    return ProviderError(message, status=status, retry_after=retry_after, retryable=retryable)


def _retry_after(exc: BaseException) -> float | None:
    return exc.retry_after if isinstance(exc, ProviderError) else None


def call_with_retries(
    fn: Callable[[], T],
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn`` until it succeeds, fails for good, or retries run out."""
    if _suspended.get():
        return fn()
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            if attempt >= policy.max_retries or not is_retryable(exc):
                raise
            sleep(policy.delay(attempt, _retry_after(exc)))
            attempt += 1


async def acall_with_retries(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Async form of ``call_with_retries``."""
    if _suspended.get():
        return await fn()
    attempt = 0
    while True:
        try:
            return await fn()
        except Exception as exc:
            if attempt >= policy.max_retries or not is_retryable(exc):
                raise
            await sleep(policy.delay(attempt, _retry_after(exc)))
            attempt += 1


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
