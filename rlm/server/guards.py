"""The checks every request passes before it reaches an RLM: token, size, load."""

from __future__ import annotations

import hmac
import json
import sys
from typing import Any

from rlm.server.errors import APIError

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024


def check_token(authorization: str | None, token: str) -> None:
    """``Authorization: Bearer <token>``, compared in constant time; else 401."""
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise APIError(401, "Missing credentials: send 'Authorization: Bearer <token>' "
                       "(the token rlm serve printed, or RLM_SERVER_TOKEN)",
                       code="invalid_api_key")  # fmt: skip
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise APIError(401, "Incorrect API key provided", code="invalid_api_key")


def _too_large(limit: int) -> APIError:
    return APIError(413, f"Request body too large: the limit is {limit:,} bytes",
                    code="request_too_large")  # fmt: skip


async def read_json(request: Any, limit: int) -> Any:
    """The request's JSON body, refusing more than ``limit`` bytes (413) before it is
    all read, whether or not the client sent a Content-Length."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise _too_large(limit)
    return parse_json(bytes(body))


def _invalid_json(message: str) -> APIError:
    return APIError(400, message, code="invalid_json")


def _no_constant(name: str) -> Any:
    raise _invalid_json(f"The request body is not valid JSON: {name} is not a JSON value")


def parse_json(body: bytes) -> Any:
    """``body`` as JSON, or a 400 ``invalid_json`` that says what is wrong: a syntax
    error, bytes that are not UTF-8, ``NaN``/``Infinity`` (Python's extensions, not
    JSON), nesting deeper than the parser's recursion allows, or an integer longer than
    Python converts (``sys.get_int_max_str_digits()``, 4,300 digits by default)."""
    try:
        return json.loads(body, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise _invalid_json(f"The request body is not valid JSON: {exc}") from None
    except UnicodeDecodeError as exc:
        raise _invalid_json(f"The request body is not valid UTF-8 JSON: {exc}") from None
    except RecursionError:
        raise _invalid_json("The request body nests arrays or objects too deeply to read; "
                            "keep JSON nesting under a few hundred levels") from None  # fmt: skip
    except ValueError:  # int("1" * 5000): Python's limit on integer digits
        raise _invalid_json(f"The request body holds an integer with more than "
                            f"{sys.get_int_max_str_digits():,} digits") from None  # fmt: skip


class ConcurrencyLimit:
    """At most ``limit`` completions at once; one more is refused with 429 and a
    ``Retry-After`` at once (queueing would only hide the overload from the client's
    retry logic). ``check()`` refuses without taking a slot: the server calls it before
    reading a body, and takes the slot (``acquire()``) once the body is all here."""

    def __init__(self, limit: int, retry_after: float = 1.0) -> None:
        if limit < 1:
            raise ValueError("the concurrency limit must be at least 1")
        self.limit = limit
        self.retry_after = retry_after
        self.active = 0  # touched only on the event loop's thread
        self.finished = 0  # completions that gave their slot back, ever

    def check(self) -> None:
        if self.active >= self.limit:
            raise APIError(
                429,
                f"Server overloaded: {self.active} of {self.limit} completions are running. "
                "Retry shortly, or start rlm serve with a higher --max-concurrency.",
                code="overloaded",
                retry_after=self.retry_after,
            )

    def acquire(self) -> None:
        self.check()
        self.active += 1

    def release(self) -> None:
        self.active = max(self.active - 1, 0)
        self.finished += 1
