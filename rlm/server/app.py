"""The Starlette application: ``POST /v1/chat/completions``, ``GET /v1/models`` and
``GET /health``.

Every ``/v1`` route runs inside ``_guarded``: the bearer token is checked first, and
any exception becomes OpenAI's error JSON through ``errors.translate`` (unknown routes
and methods too, through the ``HTTPException`` handler). ``GET /health`` needs no
token: it answers ``{"status": "ok"}`` and never calls a model or shows a setting.
With ``access_log`` (the default) every request is one line on the
``rlm.server.access`` logger (``rlm.server.access_log``); ``rlm serve`` prints them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from rlm.core.rlm import RLM
from rlm.server.access_log import AccessLog, note_for
from rlm.server.errors import error_response
from rlm.server.guards import DEFAULT_MAX_BODY_BYTES, ConcurrencyLimit, check_token, read_json
from rlm.server.runner import Runner
from rlm.server.sessions import InMemorySessionRegistry, RLMFactory, SessionRegistry
from rlm.server.translate import model_list, parse_request

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class ServerOptions:
    token: str
    model_ids: Sequence[str] = ("rlm",)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_concurrency: int = 4


class _SlotStream(StreamingResponse):
    """An SSE response that frees its concurrency slot however the stream ends
    (finished, failed, or the client gone before the first byte)."""

    def __init__(
        self, body: AsyncIterator[str], release: Callable[[], None], headers: dict[str, str]
    ) -> None:
        super().__init__(body, media_type="text/event-stream", headers=headers)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def _guarded(token: str, handler: Handler) -> Handler:
    async def endpoint(request: Request) -> Response:
        try:
            check_token(request.headers.get("authorization"), token)
            return await handler(request)
        except Exception as exc:
            return error_response(exc)

    return endpoint


class ChatServer:
    """The routes' state: options, the concurrency limit and the runner."""

    def __init__(self, runner: Runner, options: ServerOptions) -> None:
        self.runner = runner
        self.options = options
        self.model_ids = list(options.model_ids)
        self.limit = ConcurrencyLimit(options.max_concurrency)
        self.started = int(time.time())

    async def models(self, request: Request) -> Response:
        return JSONResponse(dict(model_list(self.model_ids, self.started)))

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})

    async def chat_completions(self, request: Request) -> Response:
        self.limit.acquire()  # before reading the body: an overloaded server says so fast
        note = note_for(request.scope)
        try:
            body = await read_json(request, self.options.max_body_bytes)
            req = parse_request(body, self.model_ids)
            note.session_id = req.session_id
            if req.stream:
                headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
                stream = self.runner.stream(req, note)
                return _SlotStream(stream, self.limit.release, headers)
            result = await self.runner.complete(req, note)
        except BaseException:
            self.limit.release()
            raise
        self.limit.release()
        return JSONResponse(dict(result))


def _closing(
    registry: SessionRegistry[RLM],
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:  # server shutdown: release every session's environment
            registry.close()

    return lifespan


def create_app(
    rlm_factory: RLMFactory,
    *,
    token: str,
    model_ids: Sequence[str] = ("rlm",),
    sessions: SessionRegistry[RLM] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_concurrency: int = 4,
    access_log: bool = True,
) -> Starlette:
    """The ASGI app. ``rlm_factory`` builds each request's RLM (see ``RLMFactory``);
    ``sessions`` keeps persistent ones (default: in memory, 64 sessions, 1 h idle);
    ``access_log`` logs one line per request on ``rlm.server.access``."""
    if not token:
        raise ValueError("the server needs a token")
    registry: SessionRegistry[RLM] = sessions if sessions is not None else InMemorySessionRegistry()
    options = ServerOptions(token, tuple(model_ids), max_body_bytes, max_concurrency)
    server = ChatServer(Runner(rlm_factory, registry), options)

    async def http_error(request: Request, exc: Exception) -> Response:
        return error_response(exc)

    app = Starlette(
        routes=[
            Route("/health", server.health, methods=["GET"]),
            Route("/v1/models", _guarded(token, server.models), methods=["GET"]),
            Route(
                "/v1/chat/completions",
                _guarded(token, server.chat_completions),
                methods=["POST"],
            ),
        ],
        exception_handlers={HTTPException: http_error},
        middleware=[Middleware(AccessLog)] if access_log else [],
        lifespan=_closing(registry),
    )
    app.state.server = server
    app.state.sessions = registry
    return app
