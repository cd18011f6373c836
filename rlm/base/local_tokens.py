"""Tokens of the LM handler sockets started in this process, found by address.

Every handler socket rejects requests without its token, so another process (a
sandboxed worker, a container) needs to be handed it. Code in *this* process that only
knows the address, as ``rlms``-era code does (``LocalREPL(lm_handler_address=
handler.address)``, ``send_lm_request(handler.address, ...)``), finds the token here.
The registry is plain process memory: nothing outside the process can read it.
"""

from __future__ import annotations

import threading

_tokens: dict[tuple[str, int], str] = {}
_lock = threading.Lock()
_LOOPBACK_NAMES = {"localhost": "127.0.0.1", "ip6-localhost": "::1"}


def _key(address: tuple[str, int]) -> tuple[str, int]:
    host, port = address[0], int(address[1])
    return (_LOOPBACK_NAMES.get(host, host), port)


def register(address: tuple[str, int], token: str) -> None:
    """Record the token of a socket this process serves on ``address``."""
    with _lock:
        _tokens[_key(address)] = token


def unregister(address: tuple[str, int]) -> None:
    """Forget ``address`` (its server stopped)."""
    with _lock:
        _tokens.pop(_key(address), None)


def lookup(address: tuple[str, int] | list[object] | None) -> str | None:
    """The token of a handler socket started in this process at ``address``, if any."""
    if not isinstance(address, tuple | list) or len(address) < 2:
        return None
    try:
        key = _key((str(address[0]), int(str(address[1]))))
    except ValueError:
        return None
    with _lock:
        return _tokens.get(key)
