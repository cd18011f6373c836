"""Handing freed native memory back to the operating system.

A long-running server frees sessions (their environments, provider clients, TLS
contexts) but glibc's allocator keeps the freed pages in its arenas, so the process's
RSS stays at its high-water mark although the Python heap is flat. ``malloc_trim(0)``
returns them; it is cheap (milliseconds) and called after sessions are closed in bulk.
Elsewhere (musl, macOS, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def trim_native_memory() -> bool:
    """Return freed heap pages to the system; False where that is not possible."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
