"""What the MCP tools do, without MCP: sessions of RLM turns, queued contexts, trajectories.

A session is a persistent RLM (``context_N``/``history_N`` carry over between queries)
kept in a ``SessionRegistry``, with an in-memory ``RLMLogger`` whose trajectory is saved
after every query. ``add_context`` queues a context for the session's next query, as
``/add`` does in ``rlm chat``: that query's context is the queued contexts (one item, or
a list in order) plus its own ``context``, or, when there is none, the question itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from rlm.base.errors import CancellationError, ConfigurationError, RLMLimitError
from rlm.base.types import serialize_value
from rlm.core.output_schema import OutputSchema
from rlm.core.rlm import RLM
from rlm.mcp_server.paths import ContextPathError, ContextPolicy, read_context_path
from rlm.server.sessions import InMemorySessionRegistry, RLMFactory, SessionRegistry


class ToolInputError(ValueError):
    """Bad tool arguments; the MCP layer reports it as a tool error."""


@dataclass
class McpSession:
    rlm: RLM
    queued: list[Any] = field(default_factory=list)
    trajectories: list[dict[str, Any]] = field(default_factory=list)

    def close(self) -> None:
        self.rlm.close()


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=serialize_value))


def read_context(
    context: str | None, context_path: str | None, policy: ContextPolicy
) -> Any | None:
    """``context`` text, or the text(s) at ``context_path`` (file, directory or glob),
    read only where ``policy`` allows (``rlm.mcp_server.paths``)."""
    if context is not None and context_path is not None:
        raise ToolInputError("pass context or context_path, not both")
    if context_path is None:
        return context
    try:
        return read_context_path(context_path, policy)
    except ContextPathError as exc:
        raise ToolInputError(str(exc)) from None


class Sessions:
    """The tools' state. ``policy`` confines ``context_path`` (default: the working
    directory, ``DEFAULT_MAX_CONTEXT_MB``)."""

    def __init__(
        self,
        factory: RLMFactory,
        registry: SessionRegistry[McpSession] | None = None,
        policy: ContextPolicy | None = None,
    ) -> None:
        self.factory = factory
        self.registry: SessionRegistry[McpSession] = registry or InMemorySessionRegistry()
        self.policy = policy or ContextPolicy.create()

    def _new(self, session_id: str) -> McpSession:
        return McpSession(self.factory(session_id=session_id, trajectory=True))

    async def query(
        self,
        question: str,
        context: str | None = None,
        context_path: str | None = None,
        session_id: str | None = None,
        schema: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        own = read_context(context, context_path, self.policy)
        output = _output_schema(schema)
        if session_id is None:
            rlm = self.factory()
            try:
                payload = own if own is not None else question
                return await _answer(rlm, payload, question, output)
            finally:
                rlm.close()
        async with self.registry.lease(session_id, lambda: self._new(session_id)) as session:
            pending = [*session.queued, *([own] if own is not None else [])]
            session.queued = []
            payload = pending[0] if len(pending) == 1 else (pending or question)
            try:
                reply = await _answer(session.rlm, payload, question, output)
            finally:
                trajectory = session.rlm.logger.get_trajectory() if session.rlm.logger else None
                session.trajectories.append(_jsonable(trajectory or {}))
            return {**reply, "session_id": session_id, "turn": len(session.trajectories) - 1}

    async def add_context(
        self, session_id: str, context: str | None = None, context_path: str | None = None
    ) -> dict[str, Any]:
        value = read_context(context, context_path, self.policy)
        if value is None:
            raise ToolInputError("pass context or context_path")
        async with self.registry.lease(session_id, lambda: self._new(session_id)) as session:
            session.queued.append(value)
            return {"session_id": session_id, "queued": len(session.queued)}

    def list(self) -> list[dict[str, Any]]:
        listed = []
        for info in self.registry.list():
            session = self.registry.get(info.session_id)
            if session is None:  # evicted since list() returned
                continue
            listed.append(
                {
                    "session_id": info.session_id,
                    "queries": len(session.trajectories),
                    "queued_contexts": len(session.queued),
                    "idle_seconds": round(info.idle_seconds, 3),
                    "in_use": info.in_use,
                }
            )
        return listed

    def trajectory(self, session_id: str, turn: int | None = None) -> dict[str, Any]:
        session = self.registry.get(session_id)
        if session is None:
            raise ToolInputError(f"no session {session_id!r}")
        if not session.trajectories:
            raise ToolInputError(f"session {session_id!r} has no finished query yet")
        index = len(session.trajectories) - 1 if turn is None else turn
        if not 0 <= index < len(session.trajectories):
            raise ToolInputError(f"turn {turn} out of range 0..{len(session.trajectories) - 1}")
        return {"session_id": session_id, "turn": index, **session.trajectories[index]}

    def close(self) -> None:
        self.registry.close()


def _output_schema(schema: Any) -> OutputSchema | None:
    """The tool's ``schema`` argument, checked before anything runs."""
    if schema is None:
        return None
    try:
        return OutputSchema.of(schema)
    except ConfigurationError as exc:
        raise ToolInputError(f"schema: {exc}") from None


async def _answer(
    rlm: RLM, payload: Any, question: str, output: OutputSchema | None = None
) -> dict[str, Any]:
    try:
        result = await rlm.acompletion(payload, root_prompt=question, output_schema=output)
    except CancellationError:
        raise
    except RLMLimitError as exc:  # a partial answer is still worth returning
        return {"answer": exc.partial_answer or "", "stopped_by": f"{type(exc).__name__}: {exc}"}
    usage = result.usage_summary
    reply = {
        "answer": result.response,
        "execution_time": round(result.execution_time, 3),
        "tokens": usage.total_input_tokens + usage.total_output_tokens,
        "cost_usd": usage.total_cost,
    }
    if output is not None:
        reply["parsed"] = result.to_dict().get("parsed")
    return reply
