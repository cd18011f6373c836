"""What a failed LM call means for the call tree: fatal, or rate-limited.

Pure functions over the rlmx error tree (and the ``status_code`` of SDK errors raised
by clients written for ``rlms``), used by the governor. Whether an error may heal on a
retry is the clients' call (``rlm.clients.retry.is_retryable``).
"""

from __future__ import annotations

from rlm.base.errors import CircuitOpenError, MissingAPIKeyError, ProviderError

_FATAL_STATUS = frozenset({401, 402, 403})
# Billing problems, not pacing: OpenAI's insufficient_quota arrives as a 429.
_QUOTA_MARKERS = (
    "insufficient_quota",
    "exceeded your current quota",
    "billing",
    "credit balance",
    "payment required",
)


def _status(exc: BaseException) -> int | None:
    if isinstance(exc, ProviderError):
        return exc.status
    status = getattr(exc, "status_code", None)  # SDK errors from rlms-style clients
    return status if isinstance(status, int) else None


def is_fatal(exc: BaseException) -> bool:
    """Auth and quota errors: retrying, or making any other call, will not help."""
    if isinstance(exc, MissingAPIKeyError | CircuitOpenError):
        return True
    if _status(exc) in _FATAL_STATUS:
        return True
    if isinstance(exc, ProviderError):
        text = str(exc).lower()
        return any(marker in text for marker in _QUOTA_MARKERS)
    return False


def is_rate_limit(exc: BaseException) -> bool:
    return _status(exc) == 429
