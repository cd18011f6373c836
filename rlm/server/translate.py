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

Nothing runs before the whole body is checked (a 400 naming ``param``): every string in
it is valid Unicode (no lone surrogate from a ``\\ud800`` escape), and OpenAI's typed
parameters have OpenAI's types and ranges (``"stream": "no"`` is ``invalid_type``, not
a stream). Client text quoted back in an error (an unknown model) is cut to 64 characters.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from rlm.base.errors import ConfigurationError
from rlm.base.types import RLMChatCompletion, UsageSummary
from rlm.core.output_schema import OutputSchema
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
MAX_SHOWN = 64  # client-chosen text quoted in an error message is cut here
ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})

# OpenAI's typed request parameters, checked as OpenAI checks them (a wrong type is a
# 400 ``invalid_type`` naming the parameter; ``null`` means "not given"). Those the
# server does not use are still checked, so a typo fails here as it would upstream.
_BOOLEANS = ("stream", "logprobs", "parallel_tool_calls", "store", "rlm_events")
_INTEGERS: dict[str, tuple[int | None, int | None]] = {
    "n": (1, 128),
    "max_tokens": (1, None),
    "max_completion_tokens": (1, None),
    "seed": (None, None),
    "top_logprobs": (0, 20),
}
_NUMBERS: dict[str, tuple[float, float]] = {
    "temperature": (0, 2),
    "top_p": (0, 1),
    "presence_penalty": (-2, 2),
    "frequency_penalty": (-2, 2),
}
_STRINGS = ("model", "user", "root_prompt", "session_id")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_Trail = tuple[Any, str | int] | None  # (the parent's trail, a key or an index)


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
    output: OutputSchema | None = None  # ``response_format``: the answer's JSON Schema


def shown(text: str, limit: int = MAX_SHOWN) -> str:
    """Client-chosen text for an error message: at most ``limit`` characters (and "…")."""
    return text if len(text) <= limit else text[:limit] + "…"


def _bad(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def _kind(value: Any) -> str:
    """The JSON type of ``value`` in OpenAI's words ("a string", "an integer", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _wrong_type(param: str, expected: str, value: Any) -> APIError:
    return _bad(f"Invalid type for '{param}': expected {expected}, but got {_kind(value)} "
                "instead.", param, "invalid_type")  # fmt: skip


def _check_unicode(body: dict[str, Any]) -> None:
    """Every string in the body (keys too) is valid Unicode: JSON's ``\\ud800`` escapes
    can smuggle in a lone surrogate, which no encoder, store or provider accepts. Walked
    without recursion (the body may nest as deep as the JSON parser allows)."""
    stack: list[tuple[Any, _Trail]] = [(body, None)]
    while stack:
        value, trail = stack.pop()
        if isinstance(value, str):
            if found := _SURROGATE.search(value):
                path = _path(trail)
                raise _bad(f"'{path}' is not valid Unicode: it holds a lone surrogate "
                           f"(\\u{ord(found.group()):04x}) at character {found.start()}",
                           path, "invalid_unicode")  # fmt: skip
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and _SURROGATE.search(key):
                    path = _path(trail)
                    where = f"'{path}'" if path else "the request body"
                    raise _bad(f"a key in {where} is not valid Unicode (a lone surrogate)",
                               path or None, "invalid_unicode")  # fmt: skip
                if isinstance(item, str | dict | list):
                    stack.append((item, (trail, key)))
        elif isinstance(value, list):
            stack.extend((item, (trail, i)) for i, item in enumerate(value)
                         if isinstance(item, str | dict | list))  # fmt: skip


def _path(trail: _Trail) -> str:
    """``messages[0].content`` for the trail of keys and indexes down to a value."""
    parts: list[str | int] = []
    while trail is not None:
        trail, step = trail
        parts.append(step)
    text = ""
    for step in reversed(parts):
        text += f"[{step}]" if isinstance(step, int) else (("." if text else "") + shown(step))
    return text


def _check_types(body: dict[str, Any]) -> None:
    """OpenAI's typed parameters (``_BOOLEANS``, ``_INTEGERS``, ...) have their types
    and ranges; a wrong one is a 400 naming it, never silently read as something else."""
    for name in _BOOLEANS:
        value = body.get(name)
        if value is not None and not isinstance(value, bool):
            raise _wrong_type(name, "a boolean", value)
    for name, (low, high) in _INTEGERS.items():
        value = body.get(name)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int):
                raise _wrong_type(name, "an integer", value)
            _in_range(name, value, low, high)
    for name, (low_f, high_f) in _NUMBERS.items():
        value = body.get(name)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _wrong_type(name, "a number", value)
            _in_range(name, value, low_f, high_f)
    for name in _STRINGS:
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            raise _wrong_type(name, "a string", value)
    stop = body.get("stop")
    strings = isinstance(stop, list) and all(isinstance(s, str) for s in stop)
    if stop is not None and not isinstance(stop, str) and not strings:
        raise _wrong_type("stop", "a string or an array of strings", stop)
    for name in ("stream_options", "metadata"):
        value = body.get(name)
        if value is not None and not isinstance(value, dict):
            raise _wrong_type(name, "an object", value)
    include_usage = (body.get("stream_options") or {}).get("include_usage")
    if include_usage is not None and not isinstance(include_usage, bool):
        raise _wrong_type("stream_options.include_usage", "a boolean", include_usage)
    session = (body.get("metadata") or {}).get("session_id")
    if session is not None and not isinstance(session, str):
        raise _wrong_type("metadata.session_id", "a string", session)


def _in_range(name: str, value: float, low: float | None, high: float | None) -> None:
    word = "integer" if isinstance(value, int) else "decimal"
    got = shown(str(value))
    if low is not None and value < low:
        raise _bad(f"Invalid '{name}': {word} below minimum value. Expected a value >= "
                   f"{low}, but got {got} instead.", name, f"{word}_below_min_value")  # fmt: skip
    if high is not None and value > high:
        raise _bad(f"Invalid '{name}': {word} above maximum value. Expected a value <= "
                   f"{high}, but got {got} instead.", name, f"{word}_above_max_value")  # fmt: skip


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise _bad(f"{where}: only text content parts are supported", where)
            text = part.get("text")
            if text is not None and not isinstance(text, str):
                raise _wrong_type(f"{where}.content[{j}].text", "a string", text)
            texts.append(text or "")
        return "".join(texts)
    raise _bad(f"{where}: content must be a string or a list of text parts", where)


def _messages(body: dict[str, Any]) -> list[dict[str, str]]:
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise _bad("'messages' must be a non-empty array", "messages", "missing_messages")
    messages = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        role = m.get("role") if isinstance(m, dict) else None
        if not isinstance(role, str) or role not in ROLES:
            raise _bad(f"{where}: each message needs a role, one of {sorted(ROLES)}", where)
        messages.append({"role": role, "content": _text(m.get("content"), where)})
    return messages


def _session_id(body: dict[str, Any]) -> str | None:
    """``session_id``, else ``metadata.session_id``, else ``user`` (types checked)."""
    sid: str | None = body.get("session_id")
    if sid is None:
        sid = (body.get("metadata") or {}).get("session_id")
    if sid is None:
        sid = body.get("user")
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
    """Validate a chat-completions body; raises ``APIError`` (400, or 404 for a model).

    Everything is checked before anything runs: the body's strings are valid Unicode,
    OpenAI's typed parameters have their types (``"stream": "no"`` is a 400, not a
    stream), and client-chosen text quoted back in an error is cut to ``MAX_SHOWN``."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    _check_unicode(body)
    model = body.get("model")
    if model is None or model == "":
        raise _bad("'model' is required", "model", "missing_model")
    _check_types(body)
    if model not in model_ids:
        raise APIError(404, f"The model '{shown(model)}' does not exist; this server serves "
                       f"{', '.join(model_ids)}", param="model", code="model_not_found")  # fmt: skip
    if body.get("n") not in (None, 1):
        raise _bad("only n=1 is supported", "n")
    messages = _messages(body)
    context, root_prompt = context_and_root_prompt(messages, body.get("root_prompt"))
    options = body.get("stream_options") or {}
    return RLMRequest(
        model=model,
        context=context,
        root_prompt=root_prompt,
        session_id=_session_id(body),
        stream=body.get("stream") is True,
        include_usage=options.get("include_usage") is True,
        events=body.get("rlm_events") is not False,
        id=f"chatcmpl-{uuid.uuid4().hex}",
        created=int(time.time()),
        output=response_format(body.get("response_format")),
    )


def response_format(value: Any) -> OutputSchema | None:
    """OpenAI's ``response_format``: ``text`` (or none), ``json_object`` (any JSON
    object) or ``json_schema`` (``{"name", "schema", "strict"}``) as the run's output
    schema; anything else is a 400 naming the parameter."""
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return OutputSchema.of({"type": "object"}, name="json_object")
    if kind != "json_schema":
        raise _bad("'response_format.type' must be one of 'text', 'json_object', "
                   "'json_schema'", "response_format")  # fmt: skip
    spec = value.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise _bad("'response_format.json_schema.schema' must be a JSON Schema object",
                   "response_format.json_schema.schema")  # fmt: skip
    name = spec.get("name") if isinstance(spec, dict) else None
    try:
        return OutputSchema.of(schema, name=name if isinstance(name, str) else None)
    except ConfigurationError as exc:
        raise _bad(f"Invalid 'response_format.json_schema.schema': {shown(str(exc))}",
                   "response_format.json_schema.schema") from None  # fmt: skip


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
