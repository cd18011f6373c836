"""Secret redaction: the one rule for what never reaches an error, a log or a page.

``redact_secrets`` (values) and ``redact_text`` (messages) are the one rule
for what never reaches an error message, a log or the viewer: keys that name a
credential (``is_sensitive_key``: API keys, tokens, secrets, passwords,
``Authorization``, ``Cookie``) are dropped, and in text, URL credentials
(``scheme://user:pass@host``), ``Bearer``/``Basic`` credentials and ``name=value`` pairs
whose name is sensitive are replaced with ``***``. ``filter_sensitive_keys`` is the
historical name for ``redact_secrets`` on a dict.
"""

from __future__ import annotations

import re
from typing import Any

# Substrings that mark a key as secret wherever they appear in its (lowercased) name.
_SECRET_SUBSTRINGS = ("secret", "password", "passwd", "authorization", "cookie", "credential")
# Splits snake_case, kebab-case, dotted and camelCase names into lowercase words.
_WORD_SPLIT = re.compile(r"[^0-9a-zA-Z]+|(?<=[a-z0-9])(?=[A-Z])")
# scheme://userinfo@ : the userinfo (user:password, or a bare token) is a credential.
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_COOKIE_HEADER = re.compile(r"(?i)\b((?:set-)?cookie\s*:\s*)[^\r\n]+")
# name=value (query strings, kwargs reprs) or "name": value (JSON, dict reprs; the colon
# form needs the quoted name, so prose such as "KeyError: 'x'" is left alone). Redacted
# when ``is_sensitive_key(name)``.
_PAIR = re.compile(
    r"""(?<![\w.-])(?P<lead>["']?)(?P<name>[A-Za-z_][\w.-]*)(?P=lead)(?P<sep>\s*(?:=|(?<=["']):)\s*)"""
    r"""(?:(?P<quote>["'])(?P<quoted>[^"']*)(?P=quote)|(?P<bare>[^\s"'&,;)}\]]+))"""
)
REDACTED = "***"


def is_sensitive_key(key: str) -> bool:
    """True when ``key`` names a credential that must never reach a log.

    ``token`` and ``key`` are matched as a word or suffix (``access_token``, ``hfToken``,
    ``private_key``, ``apikey``) rather than as substrings, so ordinary settings such as
    ``max_tokens``, ``tokenizer`` or ``keys`` are kept.
    """
    lower = key.lower()
    if "api" in lower and "key" in lower:
        return True
    if any(s in lower for s in _SECRET_SUBSTRINGS):
        return True
    words = [w.lower() for w in _WORD_SPLIT.split(key) if w]
    return any(lower.endswith(w) or w in words for w in ("token", "key"))


def _redact_pair(match: re.Match[str]) -> str:
    if not is_sensitive_key(match["name"]):
        return match.group()
    quote = match["quote"] or ""
    return f"{match['lead']}{match['name']}{match['lead']}{match['sep']}{quote}{REDACTED}{quote}"


def redact_text(text: str) -> str:
    """``text`` with URL credentials, ``Bearer``/``Basic`` credentials, ``Cookie``
    headers and sensitive ``name=value`` pairs replaced by ``***`` (for error messages
    and logged strings)."""
    text = _URL_USERINFO.sub(rf"\1{REDACTED}@", text)
    text = _AUTH_SCHEME.sub(rf"\1 {REDACTED}", text)
    text = _COOKIE_HEADER.sub(rf"\1{REDACTED}", text)
    return _PAIR.sub(_redact_pair, text)


def redact_secrets(value: Any) -> Any:
    """A copy of ``value`` fit for logs: dict entries under sensitive keys dropped, and
    every string passed through ``redact_text``, in nested dicts, lists and tuples too."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {
            k: redact_secrets(v)
            for k, v in value.items()
            if not (isinstance(k, str) and is_sensitive_key(k))
        }
    if isinstance(value, list):
        return [redact_secrets(v) for v in value]
    if type(value) is tuple:
        return tuple(redact_secrets(v) for v in value)
    return value


def filter_sensitive_keys(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Copy of ``kwargs`` without credential-like keys and with credentials in its
    strings redacted (``redact_secrets``; nested dicts and lists too)."""
    result: dict[str, Any] = redact_secrets(kwargs)
    return result
