"""Pure translation between OpenAI's chat format and an RLM call.

The rule for a request's messages (documented in ``docs/surfaces.md``):

1. ``root_prompt`` given (``extra_body``): the root prompt is that text and the context
   is every message.
2. Otherwise, when the last message is a ``user`` message, it is the root prompt and the
   context is every message before it; with no message before it, the context is that
   message too (a lone question is its own context, as in ``rlm chat``).
3. Otherwise (the last message is not from the user) there is no separate root prompt
   and the context is every message.

The context is the message's text when it is a single message, else a list of
``{"role", "content"}`` dicts in order (system messages included).

The session comes from ``session_id`` (``extra_body``), else ``metadata.session_id``,
else ``user``. No session: a one-off RLM. A session: one persistent RLM, so a follow-up
request's context becomes ``context_1``, ``context_2``, ... next to ``history_N``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from rlm.base.types import RLMChatCompletion, UsageSummary
from rlm.server.errors import APIError
from rlm.server.openai_types import (
    ChatCompletion,
    ChatCompletionChunk,
    ChunkDelta,
    FinishReason,
    Model,
    ModelList,
    RLMInfo,
    Usage,
)

MAX_SESSION_ID = 256
ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


@dataclass(frozen=True)
class RLMRequest:
    """What one chat-completions request asks of an RLM."""

    model: str
    context: str | list[dict[str, str]]
    root_prompt: str | None
    session_id: str | None
    stream: bool = False
    include_usage: bool = False
    events: bool = True  # send trajectory events as SSE comments while streaming
    id: str = ""
    created: int = 0


def _bad(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise _bad(f"{where}: only text content parts are supported", where)
            texts.append(str(part.get("text") or ""))
        return "".join(texts)
    raise _bad(f"{where}: content must be a string or a list of text parts", where)


def _messages(body: dict[str, Any]) -> list[dict[str, str]]:
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise _bad("'messages' must be a non-empty array", "messages", "missing_messages")
    messages = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise _bad(f"{where}: each message needs a role, one of {sorted(ROLES)}", where)
        messages.append({"role": str(m["role"]), "content": _text(m.get("content"), where)})
    return messages


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad(f"'{key}' must be a string", key)
    return value


def _session_id(body: dict[str, Any]) -> str | None:
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _bad("'metadata' must be an object", "metadata")
    sid = _optional_str(body, "session_id")
    if sid is None and metadata:
        sid = metadata.get("session_id")
        if sid is not None and not isinstance(sid, str):
            raise _bad("'metadata.session_id' must be a string", "metadata")
    if sid is None:
        sid = _optional_str(body, "user")
    if sid is not None and not (0 < len(sid) <= MAX_SESSION_ID):
        raise _bad(f"session ids are 1 to {MAX_SESSION_ID} characters", "session_id")
    return sid


def context_and_root_prompt(
    messages: list[dict[str, str]], root_prompt: str | None
) -> tuple[str | list[dict[str, str]], str | None]:
    """The module docstring's rule."""
    if root_prompt is None and messages[-1]["role"] == "user":
        root_prompt = messages[-1]["content"]
        messages = messages[:-1] or messages
    if len(messages) == 1:
        return messages[0]["content"], root_prompt
    return messages, root_prompt


def parse_request(body: Any, model_ids: list[str]) -> RLMRequest:
    """Validate a chat-completions body; raises ``APIError`` (400, or 404 for a model)."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' is required", "model", "missing_model")
    if model not in model_ids:
        raise APIError(404, f"The model '{model}' does not exist; this server serves "
                       f"{', '.join(model_ids)}", param="model", code="model_not_found")  # fmt: skip
    if body.get("n") not in (None, 1):
        raise _bad("only n=1 is supported", "n")
    messages = _messages(body)
    context, root_prompt = context_and_root_prompt(messages, _optional_str(body, "root_prompt"))
    options = body.get("stream_options") or {}
    return RLMRequest(
        model=model,
        context=context,
        root_prompt=root_prompt,
        session_id=_session_id(body),
        stream=bool(body.get("stream")),
        include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
        events=body.get("rlm_events") is not False,
        id=f"chatcmpl-{uuid.uuid4().hex}",
        created=int(time.time()),
    )


# -- responses -----------------------------------------------------------------------


def usage_of(summary: UsageSummary | None) -> Usage:
    tokens_in = summary.total_input_tokens if summary else 0
    tokens_out = summary.total_output_tokens if summary else 0
    return {
        "prompt_tokens": tokens_in,
        "completion_tokens": tokens_out,
        "total_tokens": tokens_in + tokens_out,
    }


def rlm_info(req: RLMRequest, result: RLMChatCompletion | None, limit: str | None) -> RLMInfo:
    info: RLMInfo = {"session_id": req.session_id}
    if result is not None:
        info["execution_time"] = result.execution_time
        info["cost_usd"] = result.usage_summary.total_cost
    if limit:
        info["limit"] = limit
    return info


def completion_body(
    req: RLMRequest,
    content: str,
    finish: FinishReason,
    usage: UsageSummary | None,
    info: RLMInfo,
) -> ChatCompletion:
    return {
        "id": req.id,
        "object": "chat.completion",
        "created": req.created,
        "model": req.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish,
                "logprobs": None,
            }
        ],
        "usage": usage_of(usage),
        "rlm": info,
    }


def chunk(
    req: RLMRequest,
    delta: ChunkDelta | None = None,
    finish: FinishReason | None = None,
    usage: UsageSummary | None = None,
) -> ChatCompletionChunk:
    """One ``chat.completion.chunk``; with ``usage`` it is the usage-only last chunk."""
    body: ChatCompletionChunk = {
        "id": req.id,
        "object": "chat.completion.chunk",
        "created": req.created,
        "model": req.model,
        "choices": [],
    }
    if usage is not None:
        body["usage"] = usage_of(usage)
    else:
        body["choices"] = [
            {"index": 0, "delta": delta or {}, "finish_reason": finish, "logprobs": None}
        ]
    return body


def model_list(model_ids: list[str], created: int) -> ModelList:
    models: list[Model] = [
        {"id": mid, "object": "model", "created": created, "owned_by": "rlmx"} for mid in model_ids
    ]
    return {"object": "list", "data": models}
