"""Retries with exponential back-off and jitter, shared by every client.

Clients translate their SDK's exceptions into the rlmx error tree (``ProviderError``,
``RateLimitError``, ``ProviderConnectionError``...) at their boundary; this module then
decides, without I/O, whether and how long to wait. ``Retry-After`` wins over back-off.
Errors that will not heal (auth, bad request, context too long) are not retried.

A client retries with its ``retry_policy`` attribute (``call_with_retries(fn,
self.retry_policy)``). When the engine takes a client in, its concurrency governor
(``rlm.core.governor``) becomes the one retry layer, so it can pace the whole call
tree: ``hand_over(client)`` returns the client's policy for the governor to apply and
sets the client's own to ``HandedOver`` (no retries), so the two layers never
multiply. The client's own retries stay off from then on: the engine owns the client
(it also closes it).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rlm.base.errors import ProviderConnectionError, ProviderError, RateLimitError
from rlm.base.redact import REDACTED, redact_text

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
        raw = min(self.base_delay * 2.0**attempt, self.max_delay)
        uniform = rng.uniform if rng is not None else random.uniform
        spread = uniform(-self.jitter, self.jitter) if self.jitter else 0.0
        return max(0.0, raw * (1 + spread))


DEFAULT_POLICY = RetryPolicy()
NO_RETRIES = RetryPolicy(max_retries=0)


@dataclass(frozen=True)
class HandedOver(RetryPolicy):
    """A client's ``retry_policy`` once its caller retries for it: the client tries once
    per call (``max_retries`` is 0); ``policy`` is the one its caller applies."""

    max_retries: int = 0
    policy: RetryPolicy = field(default_factory=RetryPolicy)


def hand_over(client: Any) -> RetryPolicy:
    """Take over ``client``'s retries: the policy its caller should apply from now on.

    A client with a ``RetryPolicy`` of its own gets ``HandedOver`` in its place and
    tries once per call; taking over a client again (another session sharing it)
    returns the same policy. A client without one (it does not retry by itself) is
    left alone and gets ``DEFAULT_POLICY``.
    """
    own = getattr(client, "retry_policy", None)
    if isinstance(own, HandedOver):
        return own.policy
    if not isinstance(own, RetryPolicy):
        return DEFAULT_POLICY
    try:
        client.retry_policy = HandedOver(policy=own)
    except AttributeError:  # a read-only policy: the client keeps retrying by itself
        return NO_RETRIES
    return own


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, ProviderError):
        return exc.retryable
    return isinstance(exc, ProviderConnectionError)


# Statuses below 500 that are worth another try (timeout, conflict) besides 429.
_RETRYABLE_4XX = frozenset({408, 409})


def http_error(
    status: int, message: str, retry_after: float | None = None, secret: str | None = None
) -> ProviderError:
    """The rlmx error for a provider's HTTP error status.

    429 is a ``RateLimitError``; 5xx (Anthropic's 529 "overloaded" included), 408 and
    409 may heal on retry; any other status will not. The message is redacted (and
    ``secret``, the API key, masked) and cut to ``MESSAGE_CHARS``: a proxy's error page
    may echo a whole request back.
    """
    message = _scrubbed(_clipped(message, MESSAGE_CHARS), secret)
    if status == 429:
        return RateLimitError(message, retry_after=retry_after)
    retryable = status >= 500 or status in _RETRYABLE_4XX
    return ProviderError(message, status=status, retry_after=retry_after, retryable=retryable)


# How much of an unreadable body an error message quotes, and of a provider's message.
SNIPPET_CHARS = 120
MESSAGE_CHARS = 1000


def _clipped(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def provider_at(where: str) -> str:
    """``where`` as the subject of a sentence: a bare URL or host becomes "the provider
    at <url>"; a phrase ("Azure OpenAI at <url>", "the Anthropic API") stays as it is."""
    return where if " " in where.strip() else f"the provider at {where}"


def _quoted(text: str) -> str:
    return f"'{_clipped(' '.join(text.split()), SNIPPET_CHARS)}'"


def _scrubbed(message: str, secret: str | None) -> str:
    if secret and len(secret) >= 8:  # a body that echoes the key back
        message = message.replace(secret, REDACTED)
    return redact_text(message)


def unreadable_reply(
    where: str,
    body: str | bytes | None,
    content_type: str | None = None,
    secret: str | None = None,
) -> ProviderError:
    """The error for an answer (HTTP 200) whose body is not a reply: an HTML page, text,
    broken or empty JSON. Such bodies come from proxies, gateways and servers starting
    up, so the error is retryable; its message quotes the start of the body, redacted
    (``secret``, the API key, is masked too)."""
    raw = body.encode("utf-8", "replace") if isinstance(body, str) else (body or b"")
    kind = (content_type or "no content type").split(";")[0].strip() or "no content type"
    if not raw.strip():
        detail = f"an empty body ({kind})"
    else:
        text = raw.decode("utf-8", "replace")
        detail = f"a non-JSON body ({kind}, {len(raw):,} bytes): {_quoted(text)}"
    message = f"{provider_at(where)} answered 200 with {detail}"
    return ProviderError(_scrubbed(message, secret), retryable=True)


def empty_reply(
    where: str, what: str, body: str | None = None, secret: str | None = None
) -> ProviderError:
    """The error for an answer (HTTP 200) that holds no reply: ``what`` says what is
    missing ("no choices", "no message content (finish_reason: length)"). Retryable: a
    second try may well answer."""
    quoted = f": {_quoted(body)}" if body else ""
    message = f"{provider_at(where)} answered 200 with {what}{quoted}"
    return ProviderError(_scrubbed(message, secret), retryable=True)


def _retry_after(exc: BaseException) -> float | None:
    return exc.retry_after if isinstance(exc, ProviderError) else None


def call_with_retries(
    fn: Callable[[], T],
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn`` until it succeeds, fails for good, or ``policy``'s retries run out."""
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
