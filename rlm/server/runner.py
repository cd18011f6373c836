"""Runs one chat-completions request on an RLM: a one-off, or a leased session's.

``complete`` returns the ``chat.completion`` body; ``stream`` yields SSE text: a role
chunk, the run's events as comments, the answer as one content chunk, a finish chunk,
the usage chunk when asked for (``stream_options.include_usage``), then ``[DONE]``.

A limit (budget, tokens, time, ...) is not an error here: the partial answer comes back
with ``finish_reason: "length"`` and ``rlm.limit`` naming the limit, as a model cut off
by ``max_tokens`` would. Cancellation and every other failure are errors.

Both fill in the request's ``RequestNote`` (``rlm.server.access_log``), when given: the
tokens and cost the run used, the kind of a provider failure, and the error code of a
stream that failed after its 200.

**Idempotency.** A request with an ``Idempotency-Key`` header (``idempotency_key``) runs at most once per (session, key) while this process remembers it (the last
``REMEMBERED_REPLIES``): a retry gets the first run's body, or waits for the first run
when it is still going. A failed run is not remembered (a retry runs again). In a
session store the key is also stored with the turn, so a retry that reaches another
replica, or this one after a restart, gets the committed turn's answer instead of a
second turn.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, cast

from rlm.base.errors import (
    CancellationError,
    ClientError,
    ProviderConnectionError,
    RateLimitError,
    RLMLimitError,
)
from rlm.base.events import Event
from rlm.base.types import RLMChatCompletion, UsageSummary
from rlm.core.rlm import RLM
from rlm.server import sse
from rlm.server.access_log import RequestNote
from rlm.server.errors import translate
from rlm.server.openai_types import ChatCompletion, FinishReason
from rlm.server.sessions import RLMFactory, SessionRegistry
from rlm.server.translate import RLMRequest, chunk, completion_body, rlm_info

if TYPE_CHECKING:
    from rlm.sessions.models import TurnRecord

REMEMBERED_REPLIES = 10_000


class Runner:
    def __init__(self, factory: RLMFactory, sessions: SessionRegistry[RLM]) -> None:
        self.factory = factory
        self.sessions = sessions
        self._replies: OrderedDict[tuple[str, str], asyncio.Future[ChatCompletion]] = OrderedDict()

    @contextlib.asynccontextmanager
    async def _rlm(self, req: RLMRequest) -> AsyncIterator[RLM]:
        sid = req.session_id
        if sid is None:
            rlm = self.factory()
            try:
                yield rlm
            finally:
                await asyncio.to_thread(rlm.close)  # environment cleanup may block
            return
        async with self.sessions.lease(sid, lambda: self.factory(session_id=sid)) as rlm:
            yield rlm

    async def complete(
        self, req: RLMRequest, note: RequestNote | None = None, idempotency_key: str | None = None
    ) -> ChatCompletion:
        note = note or RequestNote()
        key = idempotency_key
        if key is None:
            return await self._complete(req, note)
        slot = (req.session_id or "", key)
        first = self._replies.get(slot)
        if first is not None:  # a retry: the first run's answer, once it has one
            self._replies.move_to_end(slot)
            return _replayed(req, await asyncio.shield(first))
        future: asyncio.Future[ChatCompletion] = asyncio.get_running_loop().create_future()
        self._replies[slot] = future
        while len(self._replies) > REMEMBERED_REPLIES:
            self._replies.popitem(last=False)
        try:
            body = await self._complete(req, note, key)
        except BaseException as exc:
            if self._replies.get(slot) is future:
                del self._replies[slot]  # failed runs are not remembered: a retry runs
            future.set_exception(exc if isinstance(exc, Exception) else _Abandoned())
            future.exception()  # retrieved: no "never retrieved" warning
            raise
        future.set_result(body)
        return body

    async def _complete(
        self, req: RLMRequest, note: RequestNote, key: str | None = None
    ) -> ChatCompletion:
        try:
            async with self._rlm(req) as rlm:
                durable = rlm.durable_session if key is not None else None
                if durable is not None and key is not None:
                    turn = await asyncio.to_thread(durable.store.find_turn, durable.session_id, key)
                    if turn is not None and turn.completed:  # committed before: not again
                        return _from_turn(req, turn)
                    durable.idempotency_key = key  # stored with this turn
                try:
                    result = await rlm.acompletion(
                        req.context, req.root_prompt, output_schema=req.output
                    )
                except RLMLimitError as exc:
                    if not _is_limit(exc):
                        raise
                    info = rlm_info(req, None, type(exc).__name__)
                    return completion_body(req, exc.partial_answer or "", "length", None, info)
        except ClientError as exc:
            note.upstream = _upstream_kind(exc)
            raise
        _note_usage(note, result.usage_summary)
        info = rlm_info(req, result, None)
        return completion_body(req, result.response, "stop", result.usage_summary, info)

    async def stream(self, req: RLMRequest, note: RequestNote | None = None) -> AsyncIterator[str]:
        note = note or RequestNote()
        yield sse.data(chunk(req, {"role": "assistant", "content": ""}))
        result: RLMChatCompletion | None = None
        limit: str | None = None
        try:
            async with self._rlm(req) as rlm:
                events = rlm.astream(req.context, req.root_prompt, output_schema=req.output)
                iterator = cast(AsyncGenerator[Event, None], events.__aiter__())
                async with contextlib.aclosing(iterator):  # a client gone: stop the run
                    async for event in iterator:
                        if req.events:
                            yield sse.comment(event)
                result = events.result
            answer = result.response if result is not None else ""
        except Exception as exc:
            if isinstance(exc, ClientError):
                note.upstream = _upstream_kind(exc)
            if not _is_limit(exc):  # the status line is sent: the error goes in the stream
                body = translate(exc)[1]
                note.error = body["error"]["code"] or body["error"]["type"]
                yield sse.data(body)
                yield sse.DONE
                return
            limit, answer = type(exc).__name__, getattr(exc, "partial_answer", None) or ""
        if result is not None:
            _note_usage(note, result.usage_summary)
        finish: FinishReason = "length" if limit else "stop"
        if answer:
            yield sse.data(chunk(req, {"content": answer}))
        yield sse.data(chunk(req, {}, finish))
        if req.include_usage:
            usage = result.usage_summary if result is not None else None
            yield sse.data(chunk(req, usage=usage or UsageSummary()))
        yield sse.DONE


class _Abandoned(Exception):
    """The first run of an idempotent request was cancelled (its client went away)."""


def _replayed(req: RLMRequest, first: ChatCompletion) -> ChatCompletion:
    """The first run's body, for a retry (its own request id kept)."""
    return cast(ChatCompletion, {**first, "id": req.id or first["id"]})


def _from_turn(req: RLMRequest, turn: TurnRecord) -> ChatCompletion:
    """The body for a turn a store already holds (a retry that reached a replica, or
    this process after a restart, after the first run committed)."""
    usage = UsageSummary.from_dict(turn.usage)
    info = rlm_info(req, None, None)
    info["cost_usd"] = usage.total_cost
    return completion_body(req, turn.answer or "", "stop", usage, info)


def _note_usage(note: RequestNote, usage: UsageSummary) -> None:
    note.tokens = usage.total_tokens
    note.cost = usage.total_cost


def _upstream_kind(exc: ClientError) -> str:
    if isinstance(exc, RateLimitError):
        return "rate_limited"
    if isinstance(exc, ProviderConnectionError):
        return "unreachable"
    return "error"


def _is_limit(exc: BaseException) -> bool:
    """A limit (budget, tokens, time, ...) stopped the run; a cancellation is an error."""
    return isinstance(exc, RLMLimitError) and not isinstance(exc, CancellationError)
