"""The Starlette application: ``POST /v1/chat/completions``, ``GET /v1/models``,
``GET /metrics`` and ``GET /health``.

Every ``/v1`` route and ``/metrics`` run inside ``_guarded``: the bearer token is
checked first, and any exception becomes OpenAI's error JSON through
``errors.translate`` (unknown routes and methods too, through the ``HTTPException``
handler). ``GET /health`` needs no token: it answers ``{"status": "ok"}`` and never
calls a model or shows a setting. With ``access_log`` (the default) every request is
one line on the ``rlm.server.access`` logger (``rlm.server.access_log``); ``rlm
serve`` prints them. ``/metrics`` is Prometheus text (``rlm.server.metrics``).

A completion request takes one of ``max_concurrency`` slots only once its body is in
(a body must arrive within ``body_timeout`` seconds: 408), and gives it back however
it ends: answered, failed, or its client gone, which cancels the run (a stream's
client too). While the server runs, idle sessions past their TTL are closed by a
timer (every ``sweep_interval`` seconds), not only when the next request comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from rlm.core.rlm import RLM
from rlm.environments.inprocess.scratch import sweep_orphans
from rlm.server.access_log import AccessLog, note_for
from rlm.server.errors import APIError, error_response
from rlm.server.guards import DEFAULT_MAX_BODY_BYTES, ConcurrencyLimit, check_token, read_json
from rlm.server.memory import trim_native_memory
from rlm.server.metrics import Metrics
from rlm.server.openai_types import ChatCompletion
from rlm.server.runner import Runner
from rlm.server.sessions import InMemorySessionRegistry, RLMFactory, SessionRegistry
from rlm.server.translate import MAX_SESSION_ID, model_list, parse_request

Handler = Callable[[Request], Awaitable[Response]]
log = logging.getLogger("rlm.server")


DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_SWEEP_INTERVAL = 30.0
IDLE_TRIM_AFTER = 2.0  # seconds between looks for a server gone quiet after completions
MAX_IDEMPOTENCY_KEY = 255


@dataclass(frozen=True)
class ServerOptions:
    token: str
    model_ids: Sequence[str] = ("rlm",)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_concurrency: int = 4
    body_timeout: float = DEFAULT_BODY_TIMEOUT


class _ClientGone(Exception):
    """The client closed its connection before its answer was ready."""


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

    def __init__(self, runner: Runner, options: ServerOptions, metrics: Metrics) -> None:
        self.runner = runner
        self.options = options
        self.metrics = metrics
        self.model_ids = list(options.model_ids)
        self.limit = ConcurrencyLimit(options.max_concurrency)
        self.started = int(time.time())

    async def models(self, request: Request) -> Response:
        return JSONResponse(dict(model_list(self.model_ids, self.started)))

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})

    async def metrics_page(self, request: Request) -> Response:
        text = self.metrics.render(self.runner.sessions)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    async def end_session(self, request: Request) -> Response:
        """``DELETE /v1/sessions/{id}``: the client is done with the session. It is
        closed now (after its running turn, if any) and its place freed; with a store,
        its stored turns are deleted too. 204, or 404 for a session nobody knows."""
        session_id = request.path_params["session_id"]
        note_for(request.scope).session_id = session_id
        if not 0 < len(session_id) <= MAX_SESSION_ID:
            raise APIError(400, f"session ids are 1 to {MAX_SESSION_ID} characters",
                           param="session_id")  # fmt: skip
        if not await asyncio.to_thread(self.runner.sessions.drop, session_id):
            raise APIError(404, f"No session {session_id!r}", param="session_id",
                           code="session_not_found")  # fmt: skip
        return Response(status_code=204)

    async def chat_completions(self, request: Request) -> Response:
        note = note_for(request.scope)
        key = _idempotency_key(request.headers.get("idempotency-key"))
        self.limit.check()  # an overloaded server says so before reading the body
        try:
            body = await asyncio.wait_for(
                read_json(request, self.options.max_body_bytes), self.options.body_timeout
            )
        except TimeoutError:
            raise APIError(408, f"The request body did not arrive within "
                           f"{self.options.body_timeout:g} s", code="request_timeout") from None  # fmt: skip
        req = parse_request(body, self.model_ids)
        note.session_id = req.session_id
        self.limit.acquire()  # a slot only for a request that is all here
        try:
            if req.stream:
                headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
                stream = self.runner.stream(req, note)
                return _SlotStream(stream, self.limit.release, headers)
            run = self.runner.complete(req, note, key)
            result = await _unless_disconnected(request, run)
        except _ClientGone:
            note.disconnected = True
            return Response(status_code=499)  # nobody reads it; the access log does
        finally:
            if not req.stream:
                self.limit.release()
        return JSONResponse(dict(result))


def _idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not value or len(value) > MAX_IDEMPOTENCY_KEY or not value.isprintable():
        raise APIError(400, f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable "
                       "characters", param="Idempotency-Key", code="invalid_idempotency_key")  # fmt: skip
    return value


async def _unless_disconnected(request: Request, run: Awaitable[ChatCompletion]) -> ChatCompletion:
    """``run``'s result; if the client disconnects first, the run is cancelled (the
    engine stops its model calls and cell) and ``_ClientGone`` raised."""
    task = asyncio.ensure_future(run)
    watch = asyncio.ensure_future(_disconnect(request.receive))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this request itself was cancelled (server shutdown)
        task.cancel()
        raise
    finally:
        watch.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise _ClientGone()
    return task.result()


async def _disconnect(receive: Receive) -> None:
    """Returns when the client has gone (the body was read before this listens)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def _lifespan(
    registry: SessionRegistry[RLM], sweep_interval: float, limit: ConcurrencyLimit
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tasks = [
            asyncio.ensure_future(_sweep(registry, sweep_interval)),
            asyncio.ensure_future(_trim_when_idle(limit, IDLE_TRIM_AFTER)),
            asyncio.ensure_future(asyncio.to_thread(_sweep_orphan_folders)),
        ]
        try:
            yield
        finally:  # server shutdown: release every session's environment
            for task in tasks:
                task.cancel()
            await asyncio.to_thread(registry.close)
            trim_native_memory()

    return lifespan


def _sweep_orphan_folders() -> None:
    """Remove the scratch folders of earlier processes killed before they cleaned up
    (``kill -9`` of a server with live sessions)."""
    try:
        removed = sweep_orphans()
    except Exception:  # housekeeping: never stops the server
        log.exception("sweeping orphaned REPL folders failed")
        return
    if removed:
        log.info("removed %d REPL folders left by processes that are gone", len(removed))


async def _trim_when_idle(limit: ConcurrencyLimit, quiet: float) -> None:
    """Once the server has nothing running after a burst of completions, hand the memory
    they freed back to the system (RSS follows the load back down)."""
    seen = limit.finished
    while True:
        await asyncio.sleep(quiet)
        if limit.active == 0 and limit.finished != seen:
            seen = limit.finished
            await asyncio.to_thread(trim_native_memory)


async def _sweep(registry: SessionRegistry[RLM], interval: float) -> None:
    """Close sessions past their idle TTL every ``interval`` seconds, off the loop, and
    hand the memory they held back to the system."""
    while True:
        await asyncio.sleep(interval)
        try:
            if await asyncio.to_thread(registry.sweep):
                trim_native_memory()
        except Exception:  # a session that fails to close must not stop the timer
            log.exception("closing expired sessions failed")


def create_app(
    rlm_factory: RLMFactory,
    *,
    token: str,
    model_ids: Sequence[str] = ("rlm",),
    sessions: SessionRegistry[RLM] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_concurrency: int = 4,
    access_log: bool = True,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    sweep_interval: float = DEFAULT_SWEEP_INTERVAL,
) -> Starlette:
    """The ASGI app. ``rlm_factory`` builds each request's RLM (see ``RLMFactory``);
    ``sessions`` keeps persistent ones (default: in memory, 64 sessions, 1 h idle);
    ``access_log`` logs one line per request on ``rlm.server.access``."""
    if not token:
        raise ValueError("the server needs a token")
    if body_timeout <= 0 or sweep_interval <= 0:
        raise ValueError("body_timeout and sweep_interval must be greater than 0")
    registry: SessionRegistry[RLM] = sessions if sessions is not None else InMemorySessionRegistry()
    options = ServerOptions(token, tuple(model_ids), max_body_bytes, max_concurrency, body_timeout)
    metrics = Metrics()
    server = ChatServer(Runner(rlm_factory, registry), options, metrics)

    async def http_error(request: Request, exc: Exception) -> Response:
        return error_response(exc)

    app = Starlette(
        routes=[
            Route("/health", server.health, methods=["GET"]),
            Route("/v1/models", _guarded(token, server.models), methods=["GET"]),
            Route("/metrics", _guarded(token, server.metrics_page), methods=["GET"]),
            Route(
                "/v1/sessions/{session_id:path}",
                _guarded(token, server.end_session),
                methods=["DELETE"],
            ),
            Route(
                "/v1/chat/completions",
                _guarded(token, server.chat_completions),
                methods=["POST"],
            ),
        ],
        exception_handlers={HTTPException: http_error},
        middleware=[Middleware(AccessLog, observe=metrics.observe, enabled=access_log)],
        lifespan=_lifespan(registry, sweep_interval, server.limit),
    )
    app.state.server = server
    app.state.sessions = registry
    return app
