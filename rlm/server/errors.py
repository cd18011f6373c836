"""Every failure becomes OpenAI's error JSON here, and nowhere else.

``APIError`` is what the server's own checks raise; ``translate`` maps it, Starlette's
``HTTPException`` (unknown route, wrong method) and rlmx's errors onto
``(status, {"error": {"message", "type", "param", "code"}})``. The route wrapper in
``app.py`` and the SSE stream (an error after the stream began) both call it. A
provider failure is also logged (WARNING, ``rlm.server``), its message redacted.

=========================  ======  =====================  ===================
exception                  status  type                   code
=========================  ======  =====================  ===================
APIError                   its own
HTTPException              its own (404 not_found, 405 method_not_allowed)
ConfigurationError         500     server_error           configuration_error
ClientError (provider)     502     api_error              upstream_error
CancellationError          503     server_error           cancelled
RLMError                   500     server_error           rlm_error
anything else              500     server_error           internal_error
=========================  ======  =====================  ===================
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from rlm.base.errors import CancellationError, ClientError, ConfigurationError, RLMError
from rlm.base.redact import redact_text
from rlm.server.openai_types import ErrorBody, ErrorType

if TYPE_CHECKING:
    from starlette.responses import JSONResponse

log = logging.getLogger("rlm.server")

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
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # seconds: sent as a Retry-After header
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
    if isinstance(exc, ConfigurationError):
        return APIError(500, f"server configuration: {exc}", code="configuration_error")
    if isinstance(exc, ClientError):
        log.warning("the model provider failed: %s", redact_text(f"{type(exc).__name__}: {exc}"))
        return APIError(502, f"the model provider failed: {exc}", type="api_error",
                        code="upstream_error")  # fmt: skip
    if isinstance(exc, CancellationError):
        return APIError(503, "the run was cancelled", code="cancelled")
    if isinstance(exc, RLMError):
        return APIError(500, f"{type(exc).__name__}: {exc}", code="rlm_error")
    log.exception("unexpected error", exc_info=exc)
    return APIError(500, f"internal error ({type(exc).__name__})", code="internal_error")


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
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if api.retry_after is not None and api.retry_after >= 0:
        headers["Retry-After"] = str(max(1, math.ceil(api.retry_after)))
    return JSONResponse(dict(body), status_code=status, headers=headers or None)
