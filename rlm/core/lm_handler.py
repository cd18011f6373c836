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

REPL code reaches the handler through an ``LMRoute`` (``rlm.core.lm_route``) or the
socket; both check the model it names against ``model_policy`` (by default only
registered models; ``rlm.core.model_policy``). Python code calling ``call`` itself is
not restricted. A batch is bounded (``rlm.core.lm_batch``): at most ``max_batch_size``
prompts, counted against ``max_llm_calls`` before any work, run by a fixed pool of
``batch_max_concurrent`` workers. A call the budget refuses makes no client.
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

from rlm.base.types import Prompt, RLMChatCompletion, UsageSummary
from rlm.clients.base_lm import BaseLM, LMResult
from rlm.clients.legacy import as_client
from rlm.core.budget import BudgetNode
from rlm.core.error_kinds import policy_of
from rlm.core.governor import Governor
from rlm.core.lm_batch import DEFAULT_MAX_BATCH_SIZE, check_batch_size, run_batch
from rlm.core.lm_route import LMRoute
from rlm.core.model_policy import AllowedModels, ModelPolicy
from rlm.core.reservation import reserve_call
from rlm.core.runtime import AsyncRuntime

if TYPE_CHECKING:
    from rlm.base.events import RunScope
    from rlm.core.lm_server import LMServer

# Upper bound on sub-LM calls in flight for one llm_query_batched. rlms hard-codes 16;
# RLM(max_concurrent_llm_calls=...) sets it.
DEFAULT_MAX_CONCURRENT_LLM_CALLS = 256


# Where a call is reserved and charged, and whose tree's cancel token it obeys.
UsageSink = BudgetNode


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
        *,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        allowed_models: AllowedModels = None,
    ) -> None:
        if batch_max_concurrent < 1:
            raise ValueError("batch_max_concurrent must be >= 1")
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
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
        self.max_batch_size = max_batch_size
        # The models REPL code may name: these, plus every registered client's.
        self.model_policy = ModelPolicy(allowed_models)
        self.client_factory = client_factory
        self.token = auth_token or secrets.token_hex(16)
        self.runtime = AsyncRuntime()
        self.governor = governor if governor is not None else Governor()
        self._server: LMServer | None = None
        self._lock = threading.Lock()
        self.register_client(client.model_name, client)

    # -- clients ---------------------------------------------------------------------

    def register_client(self, model_name: str, client: BaseLM | Any) -> None:
        """Serve ``model_name`` with ``client``; REPL code may then name it."""
        self.clients[model_name] = as_client(client)
        self.model_policy.allow(model_name)

    def client_name(self, depth: int = 0) -> str:
        """The model name a call without ``model`` at ``depth`` is made with."""
        if depth == 1 and self.other_backend_client is not None:
            return self.other_backend_client.model_name
        return self.default_client.model_name

    def _client_for(self, model: str | None, depth: int, sink: UsageSink | None) -> BaseLM:
        """``get_client``; a client that would be made is first admitted by the budget,
        so a refused call makes (and caches) nothing."""
        if (
            sink is not None
            and sink.guarded
            and model
            and self.client_factory is not None
            and model not in self.clients
        ):
            _, refusal = sink.admit(1)
            if refusal is not None:
                raise refusal
        return self.get_client(model, depth)

    def check_batch_size(self, size: int) -> None:
        """Raise ``BatchTooLargeError`` if ``size`` prompts exceed ``max_batch_size``."""
        check_batch_size(size, self.max_batch_size)

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
    def completion_of(
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
        ``BudgetExhaustedError``, ``CancellationError``, ``CircuitOpenError`` or (with
        ``max_budget``, for a model of unknown price) ``UnpricedModelError``."""
        client = self._client_for(model, depth, sink)
        name = model or client.model_name
        started = time.perf_counter()
        if sink is None:
            result = self.governor.run(client.complete, prompt, None, None, client)
            return self.completion_of(name, prompt, result, started)
        hold = reserve_call(sink, client, name, prompt) if sink.guarded else None
        try:
            result = self.governor.run(client.complete, prompt, sink.token, None, client)
        except BaseException:
            if hold is not None:
                sink.release(hold)
            raise
        sink.settle(name, result.usage, hold)
        return self.completion_of(name, prompt, result, started)

    async def acall(
        self,
        prompt: Prompt,
        model: str | None = None,
        depth: int = 0,
        sink: UsageSink | None = None,
    ) -> RLMChatCompletion:
        """Async form of ``call``; cancelling the awaiting task cancels the request."""
        client = self._client_for(model, depth, sink)
        name = model or client.model_name
        started = time.perf_counter()
        run, policy = functools.partial(self.acomplete, client), policy_of(client)
        if sink is None:
            result = await self.governor.arun(run, prompt, None, policy, client)
            return self.completion_of(name, prompt, result, started)
        hold = reserve_call(sink, client, name, prompt) if sink.guarded else None
        try:
            result = await self.governor.arun(run, prompt, sink.token, policy, client)
        except BaseException:
            if hold is not None:
                sink.release(hold)
            raise
        sink.settle(name, result.usage, hold)
        return self.completion_of(name, prompt, result, started)

    @staticmethod
    async def acomplete(client: BaseLM, prompt: Prompt) -> LMResult:
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
        prompt yields a completion whose ``error`` is set; so does each prompt beyond
        the calls the budget has left (failed at once). An auth or quota error cancels
        the rest of the batch: those prompts fail with the circuit breaker's error.
        Raises ``BatchTooLargeError`` above ``max_batch_size`` prompts."""
        return await run_batch(self, prompts, model, depth, sink)

    def call_batched(
        self,
        prompts: list[Prompt],
        model: str | None = None,
        depth: int = 0,
        sink: UsageSink | None = None,
    ) -> list[RLMChatCompletion]:
        """Sync form of ``acall_batched``, run on the session's event loop. Cancelling
        the sink's tree cancels the batch's in-flight calls at once."""
        self.check_batch_size(len(prompts))
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


def handler_info(handler: LMHandler) -> dict[str, Any]:
    """Connection info an out-of-process worker needs (never logged: holds the token)."""
    host, port = handler.start()
    return {"host": host, "port": port, "token": handler.token}


__all__ = [
    "DEFAULT_MAX_BATCH_SIZE",
    "DEFAULT_MAX_CONCURRENT_LLM_CALLS",
    "LMHandler",
    "LMRoute",
    "UsageSink",
    "handler_info",
]
