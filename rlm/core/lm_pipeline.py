"""The call pipeline: every LM call of a session, sync or async, single or batched.

A call is written once, as a flow (``rlm.core.lm_call.charged``: reserve, send, charge
or release). The drivers here only differ in how they send: ``call`` through the
governor's ``run`` in the calling thread, ``acall`` through ``arun`` on the running
loop, and a batch (``rlm.core.lm_batch``) drives one flow per prompt on a fixed pool
of workers. ``call_batched`` is ``acall_batched`` run on the session's event loop
(``rlm.core.runtime``).

Before a single call, ``pick`` chooses its client (``rlm.core.lm_router``); a client
the budget would refuse is never made. Every call, with or without a budget node, runs
through the session's ``Governor``: the tree-wide in-flight window, AIMD on rate
limits, retries and the circuit breaker. Python code calling the pipeline is not
restricted to the model policy; ``LMRoute`` and the socket check it for REPL code.

Each call names its ``purpose`` (``CallPurpose``; the client gets it through
``complete_for``) and, optionally, the ``scope`` of the run making it: each retry is
then announced there as a ``call_retry`` event (purpose, model, attempt, attempts,
error, wait). A sync call charged to a tree driven on a loop (``acompletion``,
``stream``, a run with ``max_timeout``: ``BudgetNode.tree.interruptible``) is sent on
the session's loop, so cancelling the tree cancels it in flight.

With ``RLM(cache=...)`` (``rlm.core.call_cache``) the drivers first ask the call cache:
a hit never reaches the governor and still ends through the flow, charged as free.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from rlm.base.cancel import call_token
from rlm.base.types import Prompt, RLMChatCompletion
from rlm.clients.base_lm import BaseLM, CallPurpose
from rlm.clients.context_windows import awindow_of, window_of
from rlm.core.lm_batch import check_batch_size, run_batch
from rlm.core.lm_call import Flow, Send, charged

if TYPE_CHECKING:
    from rlm.base.events import RunScope
    from rlm.base.json_schema import ResponseSchema
    from rlm.clients.base_lm import LMResult
    from rlm.clients.retry import RetryPolicy
    from rlm.core.budget import BudgetNode
    from rlm.core.call_cache import CallCache
    from rlm.core.governor import Governor, OnRetry
    from rlm.core.lm_router import ModelRouter, Route
    from rlm.core.runtime import AsyncRuntime

# Upper bound on sub-LM calls in flight for one llm_query_batched. rlms hard-codes 16;
# RLM(max_concurrent_llm_calls=...) sets it.
DEFAULT_MAX_CONCURRENT_LLM_CALLS = 256


def _returned(flow: Flow, result: LMResult) -> RLMChatCompletion:
    try:
        flow.send(result)
    except StopIteration as stop:
        completion: RLMChatCompletion = stop.value
        return completion
    raise RuntimeError("a call's flow yielded twice")


def shapes_calls(client: BaseLM) -> bool:
    """Whether ``client``'s class overrides ``complete_for`` (it shapes a call by its
    purpose). Other clients get ``complete``/``acomplete``, as they always did; a mocked
    client (``Mock(spec=BaseLM)``, as rlms-era tests build them) keeps working."""
    return getattr(type(client), "complete_for", BaseLM.complete_for) is not BaseLM.complete_for


def structured(client: BaseLM, schema: ResponseSchema | None) -> bool:
    """Whether a call with ``schema`` goes through the client's structured-output mode
    (its class says it has one: ``BaseLM.structured_output``)."""
    return schema is not None and getattr(type(client), "structured_output", False) is True


def complete(
    client: BaseLM, prompt: Prompt, purpose: CallPurpose, schema: ResponseSchema | None = None
) -> LMResult:
    """One call, told its purpose when the client wants to know it, in the client's
    structured-output mode for ``schema`` where it has one."""
    if schema is not None and structured(client, schema):
        return client.complete_structured(prompt, schema)
    if shapes_calls(client):
        return client.complete_for(prompt, purpose)
    return client.complete(prompt)


async def acomplete(
    client: BaseLM,
    prompt: Prompt,
    purpose: CallPurpose = CallPurpose.SUBCALL,
    schema: ResponseSchema | None = None,
) -> LMResult:
    """Async form of ``complete``; a sync-only client still fans out, on threads."""
    shaped = shapes_calls(client)
    try:
        if schema is not None and structured(client, schema):
            return await client.acomplete_structured(prompt, schema)
        if shaped:
            return await client.acomplete_for(prompt, purpose)
        return await client.acomplete(prompt)
    except NotImplementedError:
        return await asyncio.to_thread(complete, client, prompt, purpose, schema)


def retry_notice(send: Send, policy: RetryPolicy) -> OnRetry | None:
    """What tells the call's run of each retry (``call_retry``) if anyone listens then;
    nothing is asked of the event bus unless a call is retried."""
    scope = send.scope
    if scope is None:
        return None

    def notify(exc: BaseException, attempt: int, wait: float) -> None:
        if not scope.bus.active:
            return
        scope.emit(
            "call_retry",
            purpose=send.purpose.value,
            model=send.route.name,
            attempt=attempt + 1,
            attempts=policy.max_retries + 1,
            error=f"{type(exc).__name__}: {exc}",
            wait=wait,
        )

    return notify


def _cancellable(sink: BudgetNode | None) -> bool:
    """True for a call of a tree its token may stop at any moment (driven on a loop)."""
    return sink is not None and sink.tree.interruptible


class CallPipeline:
    """Makes a session's LM calls: ``router`` picks clients, ``governor`` runs them,
    ``runtime`` is the loop that sync batches run on."""

    def __init__(
        self,
        router: ModelRouter,
        governor: Governor,
        runtime: AsyncRuntime,
        batch_max_concurrent: int,
        max_batch_size: int,
    ) -> None:
        if batch_max_concurrent < 1:
            raise ValueError("batch_max_concurrent must be >= 1")
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.router = router
        self.governor = governor
        self.runtime = runtime
        self.batch_max_concurrent = batch_max_concurrent
        self.max_batch_size = max_batch_size
        self.cache: CallCache | None = None  # RLM(cache=...): memoised calls

    def pick(self, model: str | None, depth: int, sink: BudgetNode | None) -> Route:
        """The call's route. A client that would be made is first admitted by the
        budget, so a refused call makes (and caches) nothing."""
        if sink is not None and sink.guarded and self.router.makes(model):
            _, refusal = sink.admit(1)
            if refusal is not None:
                raise refusal
        return self.router.route(model, depth)

    # -- the drivers -----------------------------------------------------------------

    def drive(self, flow: Flow) -> RLMChatCompletion:
        """Run one call's flow, sending in this thread (a cache hit is not sent)."""
        send = next(flow)
        client, purpose, policy = send.route.client, send.purpose, send.route.retry_policy
        schema, cache, key, hit = send.schema, self.cache, None, None
        try:
            if cache is not None:
                key, hit = cache.probe(send)
            if hit is not None:
                return _returned(flow, hit)
            with call_token(send.token):  # a client that can stop mid-call looks it up
                result = self.governor.run(
                    lambda prompt: complete(client, prompt, purpose, schema),
                    send.prompt,
                    send.token,
                    policy,
                    client,
                    retry_notice(send, policy),
                )
        except BaseException:
            flow.close()  # the flow releases its reservation
            raise
        completion = _returned(flow, result)
        if key is not None and cache is not None:
            cache.save(key, result)
        return completion

    async def adrive(self, flow: Flow) -> RLMChatCompletion:
        """Run one call's flow, sending on the running loop (a cache hit is not sent)."""
        send = next(flow)
        client, purpose, policy = send.route.client, send.purpose, send.route.retry_policy
        schema, cache, key, hit = send.schema, self.cache, None, None
        try:
            if cache is not None:
                key, hit = await cache.aprobe(send)
            if hit is not None:
                return _returned(flow, hit)
            result = await self.governor.arun(
                lambda prompt: acomplete(client, prompt, purpose, schema),
                send.prompt,
                send.token,
                policy,
                client,
                retry_notice(send, policy),
            )
        except BaseException:
            flow.close()
            raise
        completion = _returned(flow, result)
        if key is not None and cache is not None:
            await cache.asave(key, result)
        return completion

    # -- calls -----------------------------------------------------------------------

    def call(
        self,
        prompt: Prompt,
        model: str | None = None,
        depth: int = 0,
        sink: BudgetNode | None = None,
        *,
        purpose: CallPurpose = CallPurpose.SUBCALL,
        scope: RunScope | None = None,
        schema: ResponseSchema | None = None,
    ) -> RLMChatCompletion:
        """One completion with its own usage (``schema``: in the client's structured-output
        mode, where it has one). Raises what the client raises, and
        ``BudgetExhaustedError``, ``CancellationError``, ``CircuitOpenError`` or (with
        ``max_budget``, for a model of unknown price) ``UnpricedModelError``. For an
        interruptible tree the request is sent on the session's loop, so cancelling
        the sink's tree cancels it in flight."""
        route = self.pick(model, depth, sink)
        if purpose is CallPurpose.SUBCALL:
            window_of(route.client)  # resolved here, once per client: never on the loop
        flow = charged(route, prompt, sink, purpose, scope, schema)
        if _cancellable(sink) and not self.runtime.in_loop_thread():
            assert sink is not None
            return self.runtime.run(self.adrive(flow), sink.token)
        return self.drive(flow)

    async def acall(
        self,
        prompt: Prompt,
        model: str | None = None,
        depth: int = 0,
        sink: BudgetNode | None = None,
        *,
        purpose: CallPurpose = CallPurpose.SUBCALL,
        scope: RunScope | None = None,
        schema: ResponseSchema | None = None,
    ) -> RLMChatCompletion:
        """Async form of ``call``; cancelling the awaiting task cancels the request."""
        route = self.pick(model, depth, sink)
        if purpose is CallPurpose.SUBCALL:
            await awindow_of(route.client)  # a first resolution runs off the loop
        return await self.adrive(charged(route, prompt, sink, purpose, scope, schema))

    def check_batch_size(self, size: int) -> None:
        """Raise ``BatchTooLargeError`` if ``size`` prompts exceed ``max_batch_size``."""
        check_batch_size(size, self.max_batch_size)

    async def acall_batched(
        self,
        prompts: list[Prompt],
        model: str | None = None,
        depth: int = 0,
        sink: BudgetNode | None = None,
        scope: RunScope | None = None,
        *,
        schema: ResponseSchema | None = None,
    ) -> list[RLMChatCompletion]:
        """All ``prompts`` concurrently (at most ``batch_max_concurrent`` of this batch,
        and what the governor's window allows, in flight), in prompt order. A failed
        prompt yields a completion whose ``error`` is set; so does each prompt beyond
        the calls the budget has left (failed at once). An auth or quota error cancels
        the rest of the batch: those prompts fail with the circuit breaker's error.
        Raises ``BatchTooLargeError`` above ``max_batch_size`` prompts. ``schema``:
        each call in the client's structured-output mode, where it has one."""
        return await run_batch(self, prompts, model, depth, sink, scope, schema)

    def call_batched(
        self,
        prompts: list[Prompt],
        model: str | None = None,
        depth: int = 0,
        sink: BudgetNode | None = None,
        scope: RunScope | None = None,
        *,
        schema: ResponseSchema | None = None,
    ) -> list[RLMChatCompletion]:
        """Sync form of ``acall_batched``, run on the session's event loop. Cancelling
        the sink's tree cancels the batch's in-flight calls at once."""
        self.check_batch_size(len(prompts))
        if not prompts:
            return []
        token = sink.token if sink is not None else None
        batch = self.acall_batched(prompts, model, depth, sink, scope, schema=schema)
        return self.runtime.run(batch, token)


__all__ = ["DEFAULT_MAX_CONCURRENT_LLM_CALLS", "CallPipeline", "acomplete", "retry_notice"]
