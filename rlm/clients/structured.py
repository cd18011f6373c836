"""Each provider's way of asking for JSON that matches a schema (``output_schema``).

* OpenAI's wire (OpenAI, Azure, Portkey, LiteLLM, vLLM, llama.cpp's server):
  ``response_format={"type": "json_schema", "json_schema": {name, schema, strict}}``;
* Anthropic: one tool whose ``input_schema`` is the schema, forced by ``tool_choice``;
  the reply's ``tool_use`` input is the answer (a schema whose root is not an object is
  wrapped as ``{"value": ...}`` and unwrapped again);
* Gemini: ``response_mime_type="application/json"`` and ``response_json_schema``;
* llama-cpp-python in process: a grammar made from the schema
  (``LlamaGrammar.from_json_schema``).
"""

from __future__ import annotations

import json
from typing import Any

from rlm.base.errors import ConfigurationError, ProviderError
from rlm.base.json_schema import ResponseSchema

WRAPPED_SUFFIX = "_value"  # an Anthropic tool whose input wraps a non-object answer


def openai_response_format(schema: ResponseSchema, style: str = "json_schema") -> dict[str, Any]:
    """The chat completions ``response_format`` for ``schema``; ``style="json_object"``:
    llama-cpp-python's server's form, ``{"type": "json_object", "schema": ...}``."""
    if style == "json_object":
        return {"type": "json_object", "schema": schema.schema}
    if style != "json_schema":
        raise ConfigurationError(
            f"schema_format must be 'json_schema' or 'json_object', got {style!r}"
        )
    spec: dict[str, Any] = {"name": schema.name, "schema": schema.schema, "strict": schema.strict}
    if schema.description:
        spec["description"] = schema.description
    return {"type": "json_schema", "json_schema": spec}


def _is_object_schema(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    return kind == "object" or (kind is None and "properties" in schema)


def anthropic_tool(schema: ResponseSchema) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(tool, tool_choice)`` that make Claude answer through a tool call whose input
    matches ``schema``."""
    body = schema.schema
    name = schema.name
    if not _is_object_schema(body):
        defs: dict[str, Any] = {k: body[k] for k in ("$defs", "definitions") if k in body}
        inner = {k: v for k, v in body.items() if k not in defs}
        body = {"type": "object", "properties": {"value": inner}, "required": ["value"], **defs}
        name = f"{name[: 64 - len(WRAPPED_SUFFIX)]}{WRAPPED_SUFFIX}"
    tool = {
        "name": name,
        "description": schema.description or "Submit the final answer.",
        "input_schema": body,
    }
    return tool, {"type": "tool", "name": name}


def anthropic_tool_answer(blocks: Any) -> str | None:
    """The JSON text of the first ``tool_use`` block's input (unwrapped), or ``None``."""
    for block in blocks or ():
        if getattr(block, "type", None) != "tool_use":
            continue
        value = getattr(block, "input", None)
        if str(getattr(block, "name", "")).endswith(WRAPPED_SUFFIX) and isinstance(value, dict):
            value = value.get("value")
        return json.dumps(value, ensure_ascii=False)
    return None


def gemini_config(schema: ResponseSchema) -> dict[str, Any]:
    """``GenerateContentConfig`` fields that make Gemini reply with JSON for ``schema``."""
    return {"response_mime_type": "application/json", "response_json_schema": schema.schema}


def llama_grammar(llama_cpp: Any, schema: ResponseSchema) -> Any:
    """A llama.cpp grammar that only admits JSON matching ``schema``."""
    return llama_cpp.LlamaGrammar.from_json_schema(json.dumps(schema.schema), verbose=False)


# Words of a provider's error that says it does not take the structured-output request.
_REFUSAL_WORDS = ("response_format", "json_schema", "responsejsonschema", "response_json_schema")


def refused_schema(exc: BaseException) -> bool:
    """True for a provider error about the structured-output request itself (a server
    that does not know ``json_schema``): the call is then made again without it, and the
    engine validates the plain reply."""
    text = str(exc).lower()
    return isinstance(exc, ProviderError) and any(w in text for w in _REFUSAL_WORDS)


__all__ = [
    "anthropic_tool",
    "anthropic_tool_answer",
    "gemini_config",
    "llama_grammar",
    "openai_response_format",
    "refused_schema",
]
