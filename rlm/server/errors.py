"""Every failure becomes OpenAI's error JSON here, and nowhere else.

``APIError`` is what the server's own checks raise; ``translate`` maps it, Starlette's
``HTTPException`` (unknown route, wrong method) and rlmx's errors onto
``(status, {"error": {"message", "type", "param", "code"}})``. The route wrapper in
``app.py`` and the SSE stream (an error after the stream began) both call it. A
provider failure is also logged (WARNING, ``rlm.server``), its message redacted.
``error_response`` adds the headers: ``Retry-After`` (whole seconds, rounded up, at
least 1) for an error that says when to retry, ``WWW-Authenticate`` for a 401, and any
an ``APIError`` carries.

=========================  ======  =====================  =====================  ===========
exception                  status  type                   code                   Retry-After
=========================  ======  =====================  =====================  ===========
APIError                   its own                                               its own
HTTPException              its own (404 not_found, 405 method_not_allowed)
ClientDisconnect           499     invalid_request_error  client_closed
SessionLockedError         409     invalid_request_error  session_busy           yes (1 s)
ConfigurationError         500     server_error           configuration_error
RateLimitError (provider)  429     rate_limit_error       upstream_rate_limited  yes (1 s)
ClientError (provider)     502     api_error              upstream_error
CancellationError          503     server_error           cancelled
SchemaValidationError      500     server_error           schema_validation_failed
RLMError                   500     server_error           rlm_error
anything else              500     server_error           internal_error
=========================  ======  =====================  =====================  ===========

A ``RateLimitError`` that is really a billing problem (``insufficient_quota``: retrying
will not help) stays a 502. The "yes (1 s)" rows use the error's ``retry_after`` when
it has one, else 1 second. ``ClientDisconnect`` (the client closed its connection while
its body was being read) is not logged: nobody reads the 499, the access log shows it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from rlm.base.errors import (
    CancellationError,
    ClientError,
    ConfigurationError,
    RateLimitError,
    RLMError,
    SchemaValidationError,
    SessionLockedError,
)
from rlm.base.redact import redact_text
from rlm.core.error_kinds import is_fatal
from rlm.server.openai_types import ErrorBody, ErrorType

if TYPE_CHECKING:
    from starlette.responses import JSONResponse

log = logging.getLogger("rlm.server")

MAX_RETRY_AFTER = 86_400.0  # seconds: a Retry-After past a day is sent as a day

_TYPE_BY_STATUS: dict[int, ErrorType] = {
    401: "authentication_error",
    429: "rate_limit_error",
}


class APIError(Exception):
    """An error the client should see as-is (bad request, auth, size, overload)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: ErrorType | None = None,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # seconds: sent as a Retry-After header
        self.headers = dict(headers or {})  # more response headers, sent as they are
        self.status = status
        self.message = message
        self.type: ErrorType = type or _TYPE_BY_STATUS.get(
            status, "invalid_request_error" if status < 500 else "server_error"
        )
        self.param = param
        self.code = code


def error_body(
    message: str, type: ErrorType, param: str | None = None, code: str | None = None
) -> ErrorBody:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _from_exception(exc: BaseException) -> APIError:
    if isinstance(exc, APIError):
        return exc
    status = getattr(exc, "status_code", None)  # starlette's HTTPException
    if isinstance(status, int) and status < 500:
        detail = str(getattr(exc, "detail", "") or "request failed")
        code = {404: "not_found", 405: "method_not_allowed"}.get(status)
        return APIError(status, detail, code=code)
    if _is_client_disconnect(exc):
        return APIError(499, "the client closed the connection before its request was read",
                        code="client_closed")  # fmt: skip
    if isinstance(exc, SessionLockedError):
        return APIError(409, f"The session is busy: {exc}. Retry after the Retry-After delay.",
                        param="session_id", code="session_busy",
                        retry_after=_retry_after_of(exc))  # fmt: skip
    if isinstance(exc, ConfigurationError):
        return APIError(500, f"server configuration: {exc}", code="configuration_error")
    if isinstance(exc, RateLimitError) and not is_fatal(exc):
        log.warning("the model provider failed: %s", redact_text(f"{type(exc).__name__}: {exc}"))
        return APIError(429, f"the model provider is rate limiting requests: {exc}",
                        code="upstream_rate_limited", retry_after=_retry_after_of(exc))  # fmt: skip
    if isinstance(exc, ClientError):
        log.warning("the model provider failed: %s", redact_text(f"{type(exc).__name__}: {exc}"))
        return APIError(502, f"the model provider failed: {exc}", type="api_error",
                        code="upstream_error")  # fmt: skip
    if isinstance(exc, CancellationError):
        return APIError(503, "the run was cancelled", code="cancelled")
    if isinstance(exc, SchemaValidationError):  # never the invalid answer as content
        return APIError(500, str(exc), param="response_format", code="schema_validation_failed")
    if isinstance(exc, RLMError):
        return APIError(500, f"{type(exc).__name__}: {exc}", code="rlm_error")
    log.exception("unexpected error", exc_info=exc)
    return APIError(500, f"internal error ({type(exc).__name__})", code="internal_error")


def _retry_after_of(exc: BaseException) -> float:
    """The error's own ``retry_after`` (seconds) when it has a usable one, else 1."""
    seconds = getattr(exc, "retry_after", None)
    if isinstance(seconds, int | float) and math.isfinite(seconds) and seconds >= 0:
        return float(seconds)
    return 1.0


def _is_client_disconnect(exc: BaseException) -> bool:
    """Starlette's ``ClientDisconnect``: the client left while its body was read."""
    try:
        from starlette.requests import ClientDisconnect
    except ImportError:  # not serving: nothing raises it
        return False
    return isinstance(exc, ClientDisconnect)


def retry_after_header(seconds: float | None) -> str | None:
    """A ``Retry-After`` value: whole seconds, rounded up, at least 1, at most a day
    (``None`` for no usable delay: missing, negative or NaN)."""
    if seconds is None or math.isnan(seconds) or seconds < 0:
        return None
    return str(max(1, math.ceil(min(seconds, MAX_RETRY_AFTER))))


def translate(exc: BaseException) -> tuple[int, ErrorBody]:
    """The HTTP status and OpenAI error body for ``exc`` (credentials in the message,
    such as a provider URL's ``user:password@``, are redacted)."""
    return _translated(_from_exception(exc))


def _translated(api: APIError) -> tuple[int, ErrorBody]:
    return api.status, error_body(redact_text(api.message), api.type, api.param, api.code)


def error_response(exc: BaseException) -> JSONResponse:
    """A Starlette ``JSONResponse`` for ``exc`` (Starlette imported only when serving)."""
    from starlette.responses import JSONResponse

    api = _from_exception(exc)
    status, body = _translated(api)
    return JSONResponse(dict(body), status_code=status, headers=response_headers(api) or None)


def response_headers(api: APIError) -> dict[str, str]:
    """The headers an error response carries (see the module docstring)."""
    headers = {"WWW-Authenticate": "Bearer"} if api.status == 401 else {}
    retry_after = retry_after_header(api.retry_after)
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    headers.update(api.headers)
    return headers
