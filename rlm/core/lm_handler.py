"""LMHandler: routes every model call of a session to the right client.

It lives as long as the session. In-process environments call it directly through an
``LMRoute`` (no socket, no thread hop for single calls); out-of-process environments
reach the same methods through ``LMServer``, a loopback socket that is only started
when one asks for it (``start()``) and that authenticates every connection by token.

Every call returns its own usage and charges it to the caller's budget node (its
``sink``), so accounting stays right however many calls run at once. With a sink, a call
first reserves its estimated cost on the node (``rlm.core.reservation``) and stops if
the tree is cancelled. Every call, with or without a sink, runs through the session's
``Governor`` (``rlm.core.governor``): the tree-wide in-flight window, AIMD on rate
limits, retries and the circuit breaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rlm.clients.base_lm import BaseLM, LMResult
from rlm.clients.legacy import as_client
from rlm.core.budget import BudgetNode
from rlm.core.error_kinds import is_fatal, policy_of
from rlm.core.governor import Governor
from rlm.core.reservation import reserve_call
from rlm.core.runtime import AsyncRuntime
from rlm.core.types import Prompt, RLMChatCompletion, UsageSummary
from rlm.utils.exceptions import BudgetExhaustedError, CircuitOpenError

if TYPE_CHECKING:
    from rlm.core.events import RunScope
    from rlm.core.lm_server import LMServer

# Upper bound on sub-LM calls in flight for one llm_query_batched. rlms hard-codes 16;
# RLM(max_concurrent_llm_calls=...) sets it.
DEFAULT_MAX_CONCURRENT_LLM_CALLS = 256


# Where a call is reserved and charged, and whose tree's cancel token it obeys.
UsageSink = BudgetNode


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
        client: BaseLM | Any,
        host: str = "127.0.0.1",
        port: int = 0,
        other_backend_client: BaseLM | Any | None = None,
        batch_max_concurrent: int = DEFAULT_MAX_CONCURRENT_LLM_CALLS,
        client_factory: Callable[[str], BaseLM] | None = None,
        auth_token: str | None = None,
        governor: Governor | None = None,
    ) -> None:
        if batch_max_concurrent < 1:
            raise ValueError("batch_max_concurrent must be >= 1")
        # Clients written for rlms (only completion/get_last_usage) are adapted here, once.
        client = as_client(client)
        self.default_client = client
        self.other_backend_client = (
            as_client(other_backend_client) if other_backend_client is not None else None
        )
        self.clients: dict[str, BaseLM] = {}
        self.host = host
        self._port = port
        self.batch_max_concurrent = batch_max_concurrent
        self.client_factory = client_factory
        self.token = auth_token or secrets.token_hex(16)
        self.runtime = AsyncRuntime()
        self.governor = governor if governor is not None else Governor()
        self._server: LMServer | None = None
        self._lock = threading.Lock()
        self.register_client(client.model_name, client)

    # -- clients ---------------------------------------------------------------------

    def register_client(self, model_name: str, client: BaseLM | Any) -> None:
        self.clients[model_name] = as_client(client)

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
                        client = as_client(self.client_factory(model))
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
        """One completion with its own usage. Raises what the client raises, and
        ``BudgetExhaustedError``, ``CancellationError`` or ``CircuitOpenError``."""
        client = self.get_client(model, depth)
        name = model or client.model_name
        started = time.perf_counter()
        if sink is None:
            result = self.governor.run(client.complete, prompt, None, None, client)
            return self._completion(name, prompt, result, started)
        hold = reserve_call(sink, client, name, prompt) if sink.guarded else None
        try:
            result = self.governor.run(client.complete, prompt, sink.token, None, client)
        except BaseException:
            if hold is not None:
                sink.release(hold)
            raise
        sink.settle(name, result.usage, hold)
        return self._completion(name, prompt, result, started)

    async def acall(
        self,
        prompt: Prompt,
        model: str | None = None,
        depth: int = 0,
        sink: UsageSink | None = None,
    ) -> RLMChatCompletion:
        """Async form of ``call``; cancelling the awaiting task cancels the request."""
        client = self.get_client(model, depth)
        name = model or client.model_name
        started = time.perf_counter()
        run, policy = functools.partial(self._acomplete, client), policy_of(client)
        if sink is None:
            result = await self.governor.arun(run, prompt, None, policy, client)
            return self._completion(name, prompt, result, started)
        hold = reserve_call(sink, client, name, prompt) if sink.guarded else None
        try:
            result = await self.governor.arun(run, prompt, sink.token, policy, client)
        except BaseException:
            if hold is not None:
                sink.release(hold)
            raise
        sink.settle(name, result.usage, hold)
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
        """All ``prompts`` concurrently (at most ``batch_max_concurrent`` of this batch,
        and what the governor's window allows, in flight), in prompt order. A failed
        prompt yields a completion whose ``error`` is set. An auth or quota error cancels
        the rest of the batch: those prompts fail with the circuit breaker's error."""
        if not prompts:
            return []
        client = self.get_client(model, depth)
        name = model or client.model_name
        gate = asyncio.Semaphore(self.batch_max_concurrent)
        run, policy = functools.partial(self._acomplete, client), policy_of(client)
        token = sink.token if sink is not None else None

        async def one(prompt: Prompt) -> RLMChatCompletion:
            async with gate:
                started = time.perf_counter()
                hold = None
                try:
                    if sink is not None and sink.guarded:
                        hold = reserve_call(sink, client, name, prompt)
                    result = await self.governor.arun(run, prompt, token, policy, client)
                except BaseException as exc:
                    if hold is not None and sink is not None:
                        sink.release(hold)
                    if not isinstance(exc, Exception) or is_fatal(exc):
                        raise  # cancellation, or a doomed batch (see below)
                    return _failed(name, prompt, exc, started)
            if sink is not None:
                sink.settle(name, result.usage, hold)
            return self._completion(name, prompt, result, started)

        tasks = [asyncio.ensure_future(one(p)) for p in prompts]
        try:
            _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            if pending:  # an auth/quota error: every other call would fail the same way
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        return [self._outcome(t, client, name, p) for t, p in zip(tasks, prompts, strict=True)]

    def _outcome(
        self, task: asyncio.Task[RLMChatCompletion], client: BaseLM, name: str, prompt: Prompt
    ) -> RLMChatCompletion:
        if task.cancelled():
            cause = self.governor.tripped(client)
            error: BaseException = (
                CircuitOpenError(cause) if cause is not None else asyncio.CancelledError()
            )
            return _failed(name, prompt, error, time.perf_counter())
        exc = task.exception()
        if exc is not None:
            return _failed(name, prompt, exc, time.perf_counter())
        return task.result()

    def call_batched(
        self,
        prompts: list[Prompt],
        model: str | None = None,
        depth: int = 0,
        sink: UsageSink | None = None,
    ) -> list[RLMChatCompletion]:
        """Sync form of ``acall_batched``, run on the session's event loop. Cancelling
        the sink's tree cancels the batch's in-flight calls at once."""
        if not prompts:
            return []
        token = sink.token if sink is not None else None
        return self.runtime.run(self.acall_batched(prompts, model, depth, sink), token)

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

    def remaining(self) -> dict[str, Any]:
        """The REPL's ``budget()``: what remains of the run's limits."""
        if self.sink is None:
            return {"calls": None, "tokens": None, "usd": None, "seconds": None}
        return self.sink.remaining()

    def llm_query(self, prompt: Prompt, model: str | None = None) -> RLMChatCompletion:
        """One call; a refused reservation comes back as an ``error`` completion."""
        scope = self.scope
        if scope is None or not scope.bus.active:
            try:
                return self.handler.call(prompt, model, self.depth, self.sink)
            except BudgetExhaustedError as exc:
                return _failed(model or "", prompt, exc, time.perf_counter())
        scope.emit(
            "subcall_started", kind="llm", model=model, prompt_preview=_preview(prompt), count=1
        )
        started, error, result = time.perf_counter(), None, None
        try:
            result = self.handler.call(prompt, model, self.depth, self.sink)
            return result
        except BudgetExhaustedError as exc:
            error = str(exc)
            return _failed(model or "", prompt, exc, started)
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


def _failed(name: str, prompt: Prompt, exc: BaseException, started: float) -> RLMChatCompletion:
    """A completion for a call that failed (or was never made): the REPL shows the model
    ``Error: <error>``. A refused reservation reads "budget exhausted: ..."."""
    text = str(exc) if isinstance(exc, BudgetExhaustedError) else f"{type(exc).__name__}: {exc}"
    return RLMChatCompletion(
        root_model=name,
        prompt=prompt,
        response="",
        usage_summary=UsageSummary(),
        execution_time=time.perf_counter() - started,
        error=text,
    )


def handler_info(handler: LMHandler) -> dict[str, Any]:
    """Connection info an out-of-process worker needs (never logged: holds the token)."""
    host, port = handler.start()
    return {"host": host, "port": port, "token": handler.token}
