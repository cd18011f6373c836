"""LMHandler: routes every model call of a session to the right client.

It lives as long as the session. In-process environments call it directly through an
``LMRoute`` (no socket, no thread hop for single calls); out-of-process environments
reach the same methods through ``LMServer``, a loopback socket that is only started
when one asks for it (``start()``) and that authenticates every connection by token.

Every call returns its own usage and charges it to the caller's ``UsageSink``, so
accounting stays right however many calls run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from rlm.clients.base_lm import BaseLM, LMResult
from rlm.core.runtime import AsyncRuntime
from rlm.core.types import ModelUsageSummary, Prompt, RLMChatCompletion, UsageSummary

if TYPE_CHECKING:
    from rlm.core.events import RunScope
    from rlm.core.lm_server import LMServer

# Upper bound on sub-LM calls in flight for one llm_query_batched. rlms hard-codes 16;
# RLM(max_concurrent_llm_calls=...) sets it.
DEFAULT_MAX_CONCURRENT_LLM_CALLS = 256


class UsageSink(Protocol):
    """Where a call's usage is charged (a budget node of the call tree)."""

    def charge(self, model: str, usage: ModelUsageSummary) -> None: ...


def _preview(prompt: Prompt, limit: int = 80) -> str:
    if isinstance(prompt, str):
        text = prompt
    elif isinstance(prompt, dict):
        text = str(prompt.get("content", ""))
    elif isinstance(prompt, list) and prompt:
        last = prompt[-1]
        text = str(last.get("content", "")) if isinstance(last, dict) else str(last)
    else:
        text = str(prompt)
    return text[:limit]


class LMHandler:
    """Holds a session's clients and makes every LM call of that session."""

    def __init__(
        self,
        client: BaseLM,
        host: str = "127.0.0.1",
        port: int = 0,
        other_backend_client: BaseLM | None = None,
        batch_max_concurrent: int = DEFAULT_MAX_CONCURRENT_LLM_CALLS,
        client_factory: Callable[[str], BaseLM] | None = None,
        auth_token: str | None = None,
    ) -> None:
        if batch_max_concurrent < 1:
            raise ValueError("batch_max_concurrent must be >= 1")
        self.default_client = client
        self.other_backend_client = other_backend_client
        self.clients: dict[str, BaseLM] = {}
        self.host = host
        self._port = port
        self.batch_max_concurrent = batch_max_concurrent
        self.client_factory = client_factory
        self.token = auth_token or secrets.token_hex(16)
        self.runtime = AsyncRuntime()
        self._server: LMServer | None = None
        self._lock = threading.Lock()
        self.register_client(client.model_name, client)

    # -- clients ---------------------------------------------------------------------

    def register_client(self, model_name: str, client: BaseLM) -> None:
        self.clients[model_name] = client

    def get_client(self, model: str | None = None, depth: int = 0) -> BaseLM:
        """A named ``model`` wins; else depth 1 goes to the other backend when set."""
        if model:
            client = self.clients.get(model)
            if client is not None:
                return client
            if self.client_factory is not None:
                with self._lock:
                    client = self.clients.get(model)
                    if client is None:
                        client = self.client_factory(model)
                        self.clients[model] = client
                return client
        if depth == 1 and self.other_backend_client is not None:
            return self.other_backend_client
        return self.default_client

    # -- calls -----------------------------------------------------------------------

    @staticmethod
    def _completion(
        name: str, prompt: Prompt, result: LMResult, started: float
    ) -> RLMChatCompletion:
        return RLMChatCompletion(
            root_model=name,
            prompt=prompt,
            response=result.text,
            usage_summary=UsageSummary({name: result.usage}),
            execution_time=time.perf_counter() - started,
        )

    def call(
        self,
        prompt: Prompt,
        model: str | None = None,
        depth: int = 0,
        sink: UsageSink | None = None,
    ) -> RLMChatCompletion:
        """One completion with its own usage. Raises what the client raises."""
        client = self.get_client(model, depth)
        started = time.perf_counter()
        result = client.complete(prompt)
        name = model or client.model_name
        if sink is not None:
            sink.charge(name, result.usage)
        return self._completion(name, prompt, result, started)

    async def acall(
        self,
        prompt: Prompt,
        model: str | None = None,
        depth: int = 0,
        sink: UsageSink | None = None,
    ) -> RLMChatCompletion:
        """Async form of ``call``."""
        client = self.get_client(model, depth)
        started = time.perf_counter()
        result = await self._acomplete(client, prompt)
        name = model or client.model_name
        if sink is not None:
            sink.charge(name, result.usage)
        return self._completion(name, prompt, result, started)

    @staticmethod
    async def _acomplete(client: BaseLM, prompt: Prompt) -> LMResult:
        try:
            return await client.acomplete(prompt)
        except NotImplementedError:  # a sync-only client still fans out, on threads
            return await asyncio.to_thread(client.complete, prompt)

    async def acall_batched(
        self,
        prompts: list[Prompt],
        model: str | None = None,
        depth: int = 0,
        sink: UsageSink | None = None,
    ) -> list[RLMChatCompletion]:
        """All ``prompts`` concurrently (at most ``batch_max_concurrent`` in flight), in
        prompt order. A failed prompt yields a completion whose ``error`` is set."""
        client = self.get_client(model, depth)
        name = model or client.model_name
        gate = asyncio.Semaphore(self.batch_max_concurrent)

        async def one(prompt: Prompt) -> RLMChatCompletion:
            async with gate:
                started = time.perf_counter()
                try:
                    result = await self._acomplete(client, prompt)
                except Exception as exc:
                    return RLMChatCompletion(
                        root_model=name,
                        prompt=prompt,
                        response="",
                        usage_summary=UsageSummary(),
                        execution_time=time.perf_counter() - started,
                        error=f"{type(exc).__name__}: {exc}",
                    )
            if sink is not None:
                sink.charge(name, result.usage)
            return self._completion(name, prompt, result, started)

        return list(await asyncio.gather(*(one(p) for p in prompts)))

    def call_batched(
        self,
        prompts: list[Prompt],
        model: str | None = None,
        depth: int = 0,
        sink: UsageSink | None = None,
    ) -> list[RLMChatCompletion]:
        """Sync form of ``acall_batched``, run on the session's event loop."""
        if not prompts:
            return []
        return self.runtime.run(self.acall_batched(prompts, model, depth, sink))

    def completion(self, prompt: Prompt, model: str | None = None) -> str:
        """Plain text completion with the default (or named) client."""
        return self.get_client(model).completion(prompt)

    def route(
        self, depth: int, sink: UsageSink | None = None, scope: RunScope | None = None
    ) -> LMRoute:
        """A view of this handler for one environment at ``depth``."""
        return LMRoute(self, depth, sink, scope)

    def get_usage_summary(self) -> UsageSummary:
        """Totals of every client this handler holds (one entry per model)."""
        merged = UsageSummary()
        seen: set[int] = set()
        for client in (self.default_client, self.other_backend_client, *self.clients.values()):
            if client is None or id(client) in seen:
                continue
            seen.add(id(client))
            merged.merge(client.get_usage_summary())
        return merged

    # -- socket server for out-of-process environments -------------------------------

    @property
    def port(self) -> int:
        return self._server.port if self._server is not None else self._port

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def start(self) -> tuple[str, int]:
        """Start the loopback socket server (idempotent). Returns ``(host, port)``."""
        with self._lock:
            if self._server is None:
                from rlm.core.lm_server import LMServer

                self._server = LMServer(self, self.host, self._port, self.token)
                self._server.start()
        return self.address

    def stop(self) -> None:
        """Stop the socket server, if running. Returns immediately (no polling)."""
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.stop()

    def close(self) -> None:
        """Stop the server and the event loop, and close every client."""
        self.stop()
        self.runtime.close()
        seen: set[int] = set()
        for client in (self.default_client, self.other_backend_client, *self.clients.values()):
            if client is not None and id(client) not in seen:
                seen.add(id(client))
                with contextlib.suppress(Exception):
                    client.close()

    def __enter__(self) -> LMHandler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LMRoute:
    """What an in-process environment holds: the handler bound to one depth, one usage
    sink and one run's event scope. ``llm_query`` raises on failure;
    ``llm_query_batched`` reports failures per item in ``RLMChatCompletion.error``."""

    __slots__ = ("depth", "handler", "scope", "sink")

    def __init__(
        self,
        handler: LMHandler,
        depth: int,
        sink: UsageSink | None = None,
        scope: RunScope | None = None,
    ) -> None:
        self.handler = handler
        self.depth = depth
        self.sink = sink
        self.scope = scope

    def llm_query(self, prompt: Prompt, model: str | None = None) -> RLMChatCompletion:
        scope = self.scope
        if scope is None or not scope.bus.active:
            return self.handler.call(prompt, model, self.depth, self.sink)
        scope.emit(
            "subcall_started", kind="llm", model=model, prompt_preview=_preview(prompt), count=1
        )
        started, error, result = time.perf_counter(), None, None
        try:
            result = self.handler.call(prompt, model, self.depth, self.sink)
            return result
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            scope.emit(
                "subcall_finished",
                kind="llm",
                model=result.root_model if result else model,
                duration=time.perf_counter() - started,
                usage=result.usage_summary if result else None,
                error=error,
            )

    def llm_query_batched(
        self, prompts: list[Prompt], model: str | None = None
    ) -> list[RLMChatCompletion]:
        scope = self.scope
        if scope is None or not scope.bus.active:
            return self.handler.call_batched(prompts, model, self.depth, self.sink)
        scope.emit(
            "subcall_started",
            kind="llm",
            model=model,
            prompt_preview=_preview(prompts[0]) if prompts else "",
            count=len(prompts),
        )
        started = time.perf_counter()
        results = self.handler.call_batched(prompts, model, self.depth, self.sink)
        usage = UsageSummary()
        for r in results:
            usage.merge(r.usage_summary)
        errors = [r.error for r in results if r.error]
        scope.emit(
            "subcall_finished",
            kind="llm",
            model=model,
            duration=time.perf_counter() - started,
            usage=usage,
            error=f"{len(errors)} of {len(results)} failed: {errors[0]}" if errors else None,
        )
        return results


def handler_info(handler: LMHandler) -> dict[str, Any]:
    """Connection info an out-of-process worker needs (never logged: holds the token)."""
    host, port = handler.start()
    return {"host": host, "port": port, "token": handler.token}
