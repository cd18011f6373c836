"""Bounded summaries of REPL values and long texts, for the run log.

A run log must not grow with the size of the data a run works on: a 200 MB context
bound to ``context`` and ``context_0`` would otherwise be written twice per iteration.
So a variable is logged as a *summary*::

    {"type": "str", "length": 2000000, "preview": "first 200 characters",
     "clipped": true, "sha256": "<hex digest of the whole value>"}

``length`` is ``len(value)`` when the value has one; ``preview`` is at most
``preview_chars`` characters (the text itself for a ``str``, a bounded ``repr``
otherwise); ``clipped`` is present (true) when the preview is not the whole value. The
digest covers the whole value: UTF-8 for ``str``, the bytes for ``bytes``, compact JSON
for anything else (an object JSON cannot encode enters as its ``repr``; the whole value
as its ``repr`` when JSON fails), so two summaries with the same ``sha256`` name the
same content.

Long free text (stdout, a sub-call's prompt) is cut to its head and tail by
``clip_text``, with a marker that names the full length and digest.
"""

from __future__ import annotations

import hashlib
import json
import reprlib
import threading
from collections import OrderedDict
from typing import Any

from rlm.base.types import serialize_value

DEFAULT_PREVIEW_CHARS = 200
# Hashing is O(size): a big immutable value seen again (the context, every iteration)
# is hashed once. Entries hold the value itself, so an id can never be reused under us.
_CACHE_MIN_CHARS = 1 << 16
_CACHE_ENTRIES = 16


def _encode(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    try:
        text = json.dumps(value, default=serialize_value, ensure_ascii=False, separators=(",", ":"))
    except Exception:  # not JSON-able, circular, or changed while being read
        text = safe_repr(value)
    return text.encode("utf-8", "surrogatepass")


def sha256_hex(value: Any) -> str:
    """The digest of ``value``'s whole content (see the module docstring)."""
    return hashlib.sha256(_encode(value)).hexdigest()


def safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__}>"


def _bounded_repr(value: Any, limit: int) -> str:
    shape = reprlib.Repr()
    shape.maxlevel, shape.maxlist, shape.maxtuple = 3, 20, 20
    shape.maxdict, shape.maxset, shape.maxfrozenset = 20, 20, 20
    shape.maxstring = shape.maxother = max(limit, 8)
    try:
        return shape.repr(value)
    except Exception:
        return f"<{type(value).__name__}>"


def _length(value: Any) -> int | None:
    if isinstance(value, str | bytes | bytearray | list | tuple | dict | set | frozenset):
        return len(value)
    return None


class ValueHasher:
    """``sha256_hex`` with a small identity cache for big ``str``/``bytes`` values.

    Thread-safe; ``clear()`` drops the cached values (and so the references to them).
    """

    def __init__(self) -> None:
        self._cache: OrderedDict[int, tuple[Any, str]] = OrderedDict()
        self._lock = threading.Lock()

    def digest(self, value: Any) -> str:
        if not isinstance(value, str | bytes) or len(value) < _CACHE_MIN_CHARS:
            return sha256_hex(value)
        key = id(value)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] is value:
                self._cache.move_to_end(key)
                return hit[1]
        digest = sha256_hex(value)
        with self._lock:
            self._cache[key] = (value, digest)
            while len(self._cache) > _CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return digest

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()


def summarize(
    value: Any, preview_chars: int = DEFAULT_PREVIEW_CHARS, hasher: ValueHasher | None = None
) -> dict[str, Any]:
    """The summary of one value (see the module docstring)."""
    out: dict[str, Any] = {"type": type(value).__name__}
    length = _length(value)
    if length is not None:
        out["length"] = length
    if isinstance(value, str):
        preview, clipped = value[:preview_chars], len(value) > preview_chars
    else:
        full = _bounded_repr(value, preview_chars)
        # reprlib marks what it leaves out with "...": then the preview is partial.
        preview, clipped = full[:preview_chars], len(full) > preview_chars or "..." in full
    out["preview"] = preview
    if clipped:
        out["clipped"] = True
    out["sha256"] = (hasher or ValueHasher()).digest(value)
    return out


def is_summary(value: Any) -> bool:
    """True for a dict shaped like ``summarize``'s result."""
    return (
        isinstance(value, dict)
        and isinstance(value.get("type"), str)
        and isinstance(value.get("preview"), str)
        and isinstance(value.get("sha256"), str)
    )


def clip_text(text: str, limit: int | None) -> tuple[str, dict[str, Any] | None]:
    """``text`` cut to about ``limit`` characters (head and tail kept), and what was
    cut: ``{"length": full length, "sha256": digest of the full text}``; ``None`` when
    nothing was (``limit`` None means no limit)."""
    if limit is None or len(text) <= limit:
        return text, None
    digest = sha256_hex(text)
    info: dict[str, Any] = {"length": len(text), "sha256": digest}
    half = max(limit // 2, 1)
    hidden = len(text) - 2 * half
    marker = (
        f"\n… [{hidden:,} characters not logged; full length {len(text):,}, "
        f"sha256 {digest[:16]}] …\n"
    )
    return text[:half] + marker + text[-half:], info
