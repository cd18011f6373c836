"""One access-log line per HTTP request, on the ``rlm.server.access`` logger (INFO).

    POST /v1/chat/completions 200 1.52s session=notes tokens=1,234
    GET /v1/models 401 2ms session=- tokens=-

The line holds the method, the path (no query string), the status, the time until
the response ended (a stream's last byte included), the session id and the tokens
the run used (in + out), and ``error=CODE`` when a stream ended in an error after its
200 status was sent. It never holds the token, a header or a body; the path and the
session id are client-chosen, so their control characters are escaped.

``AccessLog`` is the ASGI middleware; a route fills in what only it knows through
``note_for(request.scope)``. It also tells an ``observe`` callback of each request
(the server's metrics), with or without the log line.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("rlm.server.access")

SCOPE_KEY = "rlm.access"
MAX_FIELD = 120  # a path or session id is cut here in the log
_UNSAFE = re.compile(r"[\x00-\x20\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


@dataclass
class RequestNote:
    """What a route learns about its request, for the access line."""

    session_id: str | None = None
    tokens: int | None = None
    error: str | None = None  # the error code of a stream that failed after its 200
    cost: float | None = None  # what the run's model calls cost, when reported
    upstream: str | None = None  # the run ended in a provider error: its kind
    disconnected: bool = False  # the client went away; its run was cancelled


# Told of each request as its response ends: path, status, seconds, the route's note.
Observer = Callable[[str, "int | None", float, RequestNote], None]


def note_for(scope: Scope) -> RequestNote:
    """The request's note (a throwaway one when the app runs without ``AccessLog``)."""
    note = scope.get(SCOPE_KEY)
    return note if isinstance(note, RequestNote) else RequestNote()


def _safe(text: str) -> str:
    """Client-chosen text for a log line: no control, space or bidi character raw."""
    escaped = _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return escaped if len(escaped) <= MAX_FIELD else escaped[: MAX_FIELD - 1] + "…"


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.2f}s"


def format_line(
    method: str, path: str, status: int | None, seconds: float, note: RequestNote
) -> str:
    session = _safe(note.session_id) if note.session_id is not None else "-"
    tokens = f"{note.tokens:,}" if note.tokens is not None else "-"
    line = (
        f"{_safe(method)} {_safe(path)} {status if status is not None else '-'} "
        f"{_duration(seconds)} session={session} tokens={tokens}"
    )
    return line + (f" error={_safe(note.error)}" if note.error else "")


class AccessLog:
    """ASGI middleware: logs one line per HTTP request as its response ends."""

    def __init__(
        self,
        app: ASGIApp,
        logger: logging.Logger | None = None,
        observe: Observer | None = None,
        enabled: bool = True,
    ) -> None:
        self.app = app
        self.log = logger or log
        self.observe = observe  # also told of each request (``rlm.server.metrics``)
        self.enabled = enabled  # False: no log line, the observer only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        note = RequestNote()
        scope[SCOPE_KEY] = note
        status: int | None = None
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except BaseException:
            status = status or 500
            raise
        finally:
            seconds = time.perf_counter() - started
            method, path = str(scope.get("method", "")), str(scope.get("path", ""))
            if self.observe is not None:
                self.observe(path, status, seconds, note)
            if self.enabled:
                self.log.info(format_line(method, path, status, seconds, note))


def usage_tokens(body: Any) -> int | None:
    """``usage.total_tokens`` of a chat-completion body or chunk, if any."""
    usage = body.get("usage") if isinstance(body, dict) else None
    total = usage.get("total_tokens") if isinstance(usage, dict) else None
    return total if isinstance(total, int) else None
