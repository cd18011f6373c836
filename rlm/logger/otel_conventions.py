"""The OpenTelemetry GenAI semantic conventions, as rlmx maps its events onto them.

The GenAI conventions are experimental ("Development" status): attribute names and
span names still move between releases. Every name rlmx emits is in this one module, so
following a new release is an edit here. Mapped against semantic-conventions 1.37+:

- a completion (root or ``rlm_query`` child): ``invoke_agent rlm``, kind INTERNAL;
- a model call (the run's own, or an ``llm_query`` / ``llm_query_batched`` from a cell):
  ``chat {model}``, kind CLIENT;
- a REPL cell: ``execute_tool python_repl``, kind INTERNAL.

Attributes outside ``gen_ai.*`` / ``error.*`` are rlmx's own and start with ``rlm.``.
Standard library only: no OpenTelemetry import here.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

# -- operation and span names --------------------------------------------------------------

OPERATION = "gen_ai.operation.name"
INVOKE_AGENT = "invoke_agent"
CHAT = "chat"
EXECUTE_TOOL = "execute_tool"

AGENT_NAME_VALUE = "rlm"
TOOL_NAME_VALUE = "python_repl"
TOOL_TYPE_VALUE = "function"  # runs on the client side (the REPL), not at a provider

# -- attributes ----------------------------------------------------------------------------

PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
CONVERSATION_ID = "gen_ai.conversation.id"
AGENT_NAME = "gen_ai.agent.name"
AGENT_ID = "gen_ai.agent.id"
TOOL_NAME = "gen_ai.tool.name"
TOOL_TYPE = "gen_ai.tool.type"
TOOL_CALL_ID = "gen_ai.tool.call.id"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
CACHE_READ_TOKENS = "gen_ai.usage.cache_read.input_tokens"
CACHE_WRITE_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
ERROR_TYPE = "error.type"
# Content: only with capture on (the convention's opt-in rule).
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
TOOL_ARGUMENTS = "gen_ai.tool.call.arguments"
TOOL_RESULT = "gen_ai.tool.call.result"

# rlmx's own
DEPTH = "rlm.depth"
ITERATION = "rlm.iteration"
ITERATIONS = "rlm.iterations"
RUN_ID = "rlm.run_id"
PARENT_RUN_ID = "rlm.parent_run_id"
TURN = "rlm.turn"
COST = "rlm.usage.cost"  # USD, when the provider or the price table knows it
CALLS = "rlm.usage.calls"
BATCH_SIZE = "rlm.batch.size"  # an llm_query_batched: the prompts in the one span
SUBCALL = "rlm.subcall"  # "llm_query" on a sub-call's chat span
ANSWER_SOURCE = "rlm.answer.source"
ENVIRONMENT = "rlm.environment"
CELL_INDEX = "rlm.cell.index"
CELL_STDERR = "rlm.cell.has_stderr"
CACHE_HIT = "rlm.cache.hit"  # the call cache (``RLM(cache=...)``) answered this call

# Span events (no GenAI convention for these yet)
EVENT_RETRY = "rlm.call_retry"
EVENT_LIMIT = "rlm.limit_exceeded"
EVENT_SCHEMA_REPAIR = "rlm.schema_repair"

# -- metrics -------------------------------------------------------------------------------

METRIC_TOKEN_USAGE = "gen_ai.client.token.usage"
METRIC_DURATION = "gen_ai.client.operation.duration"
TOKEN_TYPE = "gen_ai.token.type"  # "input" | "output"
TOKEN_BUCKETS = [4.0**i for i in range(14)]  # 1 ... 67,108,864 (the convention's advice)
DURATION_BUCKETS = [0.01 * 2.0**i for i in range(14)]  # 0.01 ... 81.92 s

# -- content capture -----------------------------------------------------------------------

CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_CAPTURE_ON = {"1", "true", "yes", "on", "span_only", "span_and_event"}


def capture_from_env() -> bool:
    """The convention's opt-in: content is recorded only when the variable says so."""
    return os.environ.get(CAPTURE_ENV, "").strip().lower() in _CAPTURE_ON


# -- providers -----------------------------------------------------------------------------

# rlmx backend name -> gen_ai.provider.name (a well-known value where one applies; else
# the backend's own name, as the convention allows for custom providers).
_PROVIDERS = {
    "openai": "openai",
    "azure_openai": "azure.ai.openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
}


def provider_name(backend: str) -> str:
    return _PROVIDERS.get(backend, backend)


# -- span names and attribute helpers ------------------------------------------------------


def agent_span_name() -> str:
    return f"{INVOKE_AGENT} {AGENT_NAME_VALUE}"


def chat_span_name(model: str | None) -> str:
    return f"{CHAT} {model}" if model else CHAT


def tool_span_name() -> str:
    return f"{EXECUTE_TOOL} {TOOL_NAME_VALUE}"


def agent_attributes(
    provider: str, model: str, depth: int, turn: int, session: str | None, env: str | None
) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        OPERATION: INVOKE_AGENT,
        AGENT_NAME: AGENT_NAME_VALUE,
        PROVIDER: provider,
        REQUEST_MODEL: model,
        DEPTH: depth,
        TURN: turn,
    }
    if session:
        attrs[CONVERSATION_ID] = session
    if env:
        attrs[ENVIRONMENT] = env
    return attrs


def tool_attributes(run_id: str, iteration: int, index: int, depth: int) -> dict[str, Any]:
    return {
        OPERATION: EXECUTE_TOOL,
        TOOL_NAME: TOOL_NAME_VALUE,
        TOOL_TYPE: TOOL_TYPE_VALUE,
        TOOL_CALL_ID: f"{run_id}.{iteration}.{index}",
        DEPTH: depth,
        ITERATION: iteration,
        CELL_INDEX: index,
    }


def histograms(meter: Any) -> tuple[Any, Any]:
    """The two client histograms on ``meter`` (an OpenTelemetry ``Meter``)."""
    tokens = meter.create_histogram(
        METRIC_TOKEN_USAGE,
        unit="{token}",
        description="Number of input and output tokens used",
        explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
    )
    duration = meter.create_histogram(
        METRIC_DURATION,
        unit="s",
        description="GenAI operation duration",
        explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
    )
    return tokens, duration


def error_type(error: object) -> str:
    """``error.type`` from an event's ``error`` ("ClassName: message"): the class name,
    a low-cardinality value as the convention asks; ``_OTHER`` if there is none."""
    text = str(error or "").strip()
    head = text.split(":", 1)[0].strip()
    return head if head and " " not in head else "_OTHER"


def usage_attributes(usage: Any) -> dict[str, Any]:
    """Token, cache and cost attributes of a ``ModelUsageSummary`` or ``UsageSummary``
    (summed over its models). Unknown cache counts and costs are left out."""
    parts = _usage_parts(usage)
    if not parts:
        return {}
    attrs: dict[str, Any] = {
        INPUT_TOKENS: sum(int(getattr(p, "total_input_tokens", 0) or 0) for p in parts),
        OUTPUT_TOKENS: sum(int(getattr(p, "total_output_tokens", 0) or 0) for p in parts),
        CALLS: sum(int(getattr(p, "total_calls", 0) or 0) for p in parts),
    }
    for key, name in (
        (CACHE_READ_TOKENS, "cache_read_tokens"),
        (CACHE_WRITE_TOKENS, "cache_write_tokens"),
    ):
        known = [getattr(p, name, None) for p in parts]
        if any(v is not None for v in known):
            attrs[key] = sum(int(v or 0) for v in known)
    costs = [getattr(p, "total_cost", None) for p in parts]
    if any(c is not None for c in costs):
        attrs[COST] = float(sum(float(c or 0.0) for c in costs))
    return attrs


def usage_models(usage: Any) -> list[str]:
    """The model names a ``UsageSummary`` has usage for (the response models)."""
    summaries = getattr(usage, "model_usage_summaries", None)
    return [str(m) for m in summaries] if isinstance(summaries, dict) else []


def _usage_parts(usage: Any) -> list[Any]:
    if usage is None:
        return []
    summaries = getattr(usage, "model_usage_summaries", None)
    if isinstance(summaries, dict):
        return list(summaries.values())
    return [usage] if hasattr(usage, "total_input_tokens") else []


def chat_messages(messages: list[Any]) -> str:
    """``gen_ai.input.messages`` for a chat prompt (``[{"role", "content"}, ...]``)."""
    shaped = [
        {
            "role": str(m.get("role", "user")) if isinstance(m, dict) else "user",
            "parts": [{"type": "text", "content": _content(m)}],
        }
        for m in messages
    ]
    return json.dumps(shaped, ensure_ascii=False)


def _content(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else message
    return content if isinstance(content, str) else json.dumps(content, default=str)


def metric_attributes(
    operation: str, provider: str, model: str, response_model: str | None, error: object
) -> dict[str, Any]:
    """The attributes of one ``gen_ai.client.*`` measurement (low cardinality)."""
    attrs = {OPERATION: operation, PROVIDER: provider, REQUEST_MODEL: model}
    if response_model:
        attrs[RESPONSE_MODEL] = response_model
    if error:
        attrs[ERROR_TYPE] = error_type(error)
    return attrs


def text_messages(role: str, text: object) -> str:
    """``gen_ai.input.messages`` / ``gen_ai.output.messages`` for one text message, in the
    convention's JSON shape (``[{"role", "parts": [{"type": "text", "content"}]}]``). An
    output message must name a ``finish_reason``: the events do not carry the provider's,
    so a reply that arrived is reported as ``stop``."""
    message: dict[str, Any] = {"role": role, "parts": [{"type": "text", "content": str(text)}]}
    if role == "assistant":
        message["finish_reason"] = "stop"
    return json.dumps([message], ensure_ascii=False)


_EXC_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit))\b")


def cell_error_type(stderr: object) -> str | None:
    """The exception class a cell ended with (its traceback's last line), or None for a
    cell that ran to its end (its stderr may still hold warnings or prints)."""
    lines = [line.strip() for line in str(stderr or "").splitlines() if line.strip()]
    match = _EXC_LINE.match(lines[-1]) if lines else None
    return match.group(1).rsplit(".", 1)[-1] if match else None
