"""Small helpers shared by the RLM front-end and its logger."""

from __future__ import annotations

import re
from typing import Any

# Substrings that mark a key as secret wherever they appear in its (lowercased) name.
_SECRET_SUBSTRINGS = ("secret", "password", "passwd", "authorization")
# Splits snake_case, kebab-case, dotted and camelCase names into lowercase words.
_WORD_SPLIT = re.compile(r"[^0-9a-zA-Z]+|(?<=[a-z0-9])(?=[A-Z])")


def is_sensitive_key(key: str) -> bool:
    """True when ``key`` names a credential that must never reach a log.

    ``token`` is matched as a word or suffix (``access_token``, ``hfToken``,
    ``authtoken``) rather than as a substring, so ordinary settings such as
    ``max_tokens`` or ``tokenizer`` are kept.
    """
    lower = key.lower()
    if "api" in lower and "key" in lower:
        return True
    if any(s in lower for s in _SECRET_SUBSTRINGS):
        return True
    words = [w.lower() for w in _WORD_SPLIT.split(key) if w]
    return lower.endswith("token") or "token" in words


def filter_sensitive_keys(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Copy of ``kwargs`` without credential-like keys (nested dicts are filtered too)."""
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if isinstance(key, str) and is_sensitive_key(key):
            continue
        out[key] = filter_sensitive_keys(value) if isinstance(value, dict) else value
    return out
