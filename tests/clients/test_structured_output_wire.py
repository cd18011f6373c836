"""``output_schema``'s last call on each provider's wire: the request carries the
provider's structured-output field, and the reply's JSON becomes ``.parsed``.

Each provider's real SDK talks to the loopback fake of its wire format
(``fake_providers``); an RLM with one iteration runs against it, so the final "answer
now" call is the structured one and the iteration call before it is not.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from fake_providers import (
    FakeProviderServer,
    Reply,
    anthropic_message,
    gemini_response,
    openai_chat,
)

from rlm import RLM
from rlm.base.json_schema import ResponseSchema

pytestmark = pytest.mark.filterwarnings(
    "ignore:Inheritance class AiohttpClientSession:DeprecationWarning"
)

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
    "additionalProperties": False,
}
ANSWER = {"city": "Lyon", "population": 522000}


def _anthropic_tool_reply(name: str, value: Any) -> dict[str, Any]:
    message = anthropic_message()
    message["content"] = [{"type": "tool_use", "id": "toolu_01", "name": name, "input": value}]
    message["stop_reason"] = "tool_use"
    return message


@dataclass(frozen=True)
class Wire:
    name: str
    module: str
    backend: str
    kwargs: Callable[[str], dict[str, Any]]
    plain: Callable[[str], dict[str, Any]]  # a reply with this text
    answer: Callable[[Any], dict[str, Any]]  # a structured reply carrying this value
    schema_of: Callable[[dict[str, Any]], Any]  # the schema the request carries, or None


def _openai_schema(body: dict[str, Any]) -> Any:
    fmt = body.get("response_format")
    if fmt is None:
        return None
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "city_facts"
    assert fmt["json_schema"]["strict"] is True  # SCHEMA meets strict mode's rules
    return fmt["json_schema"]["schema"]


def _anthropic_schema(body: dict[str, Any]) -> Any:
    if "tools" not in body:
        return None
    (tool,) = body["tools"]
    assert body["tool_choice"] == {"type": "tool", "name": tool["name"]}
    return tool["input_schema"]


def _gemini_schema(body: dict[str, Any]) -> Any:
    config = body.get("generationConfig") or {}
    if "responseJsonSchema" not in config:
        return None
    assert config["responseMimeType"] == "application/json"
    return config["responseJsonSchema"]


def _openai_wire(name: str, module: str, backend: str, kwargs: Callable[[str], dict]) -> Wire:
    return Wire(
        name,
        module,
        backend,
        kwargs,
        lambda text: openai_chat(text),
        lambda value: openai_chat(json.dumps(value)),
        _openai_schema,
    )


WIRES = [
    _openai_wire(
        "openai", "openai", "openai",
        lambda url: {"model_name": "gpt-4o-mini", "base_url": f"{url}/v1", "api_key": "sk-t"},
    ),
    _openai_wire(
        "azure_openai", "openai", "azure_openai",
        lambda url: {
            "model_name": "gpt-4o-mini", "azure_endpoint": url, "api_key": "az-t",
            "azure_deployment": "dep", "api_version": "2024-10-21",
        },
    ),
    _openai_wire(
        "portkey", "portkey_ai", "portkey",
        lambda url: {"model_name": "gpt-4o-mini", "base_url": f"{url}/v1", "api_key": "pk-t"},
    ),
    _openai_wire(
        "litellm", "litellm", "litellm",
        lambda url: {"model_name": "openai/xyz", "api_base": f"{url}/v1", "api_key": "ll-t"},
    ),
    Wire(
        "anthropic", "anthropic", "anthropic",
        lambda url: {"model_name": "claude-sonnet-4-6", "base_url": url, "api_key": "sk-ant"},
        lambda text: anthropic_message((text,)),
        lambda value: _anthropic_tool_reply("city_facts", value),
        _anthropic_schema,
    ),
    Wire(
        "gemini", "google.genai", "gemini",
        lambda url: {"model_name": "gemini-2.5-flash", "base_url": url, "api_key": "gm-t"},
        lambda text: gemini_response(text),
        lambda value: gemini_response(json.dumps(value)),
        _gemini_schema,
    ),
]  # fmt: skip


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


PARAMS = [
    pytest.param(w, id=w.name, marks=pytest.mark.skipif(not _installed(w.module), reason="no SDK"))
    for w in WIRES
]


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProviderServer]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for var in ("ANTHROPIC_BASE_URL", "ANTHROPIC_CUSTOM_HEADERS", "GOOGLE_GENAI_API_VERSION"):
        monkeypatch.delenv(var, raising=False)
    with FakeProviderServer() as fake:
        yield fake


@pytest.mark.parametrize("wire", PARAMS)
def test_the_final_call_asks_for_the_schema_on_the_wire(
    wire: Wire, server: FakeProviderServer
) -> None:
    server.enqueue(
        Reply(200, wire.plain("Let me think about it.")),  # iteration 1: no answer
        Reply(200, wire.answer(ANSWER)),  # the final, structured call
    )
    rlm = RLM(backend=wire.backend, backend_kwargs=wire.kwargs(server.url), max_iterations=1)
    try:
        result = rlm.completion(
            "Lyon has 522,000 people.",
            "Which city, how many people?",
            output_schema={**SCHEMA, "title": "city facts"},
        )
    finally:
        rlm.close()
    assert result.parsed == ANSWER
    assert json.loads(result.response) == ANSWER
    bodies = [r.body for r in server.requests]
    assert len(bodies) == 2
    assert wire.schema_of(bodies[0]) is None  # the iteration call is a plain one
    sent = wire.schema_of(bodies[1])
    assert sent is not None
    assert {k: v for k, v in sent.items() if k != "title"} == SCHEMA


@pytest.mark.skipif(not _installed("anthropic"), reason="no SDK")
def test_anthropic_wraps_a_schema_whose_root_is_not_an_object(
    server: FakeProviderServer,
) -> None:
    from rlm.clients.anthropic import AnthropicClient

    schema = ResponseSchema("numbers", {"type": "array", "items": {"type": "integer"}})
    server.enqueue(Reply(200, _anthropic_tool_reply("numbers_value", {"value": [1, 2, 3]})))
    client = AnthropicClient(model_name="claude-sonnet-4-6", base_url=server.url, api_key="k")
    try:
        result = client.complete_structured("Count to three", schema)
    finally:
        client.close()
    assert json.loads(result.text) == [1, 2, 3]
    (tool,) = server.last.body["tools"]
    assert tool["name"] == "numbers_value"
    assert tool["input_schema"]["properties"]["value"] == schema.schema
    assert tool["input_schema"]["type"] == "object"


@pytest.mark.skipif(not _installed("openai"), reason="no SDK")
def test_a_server_that_refuses_json_schema_is_asked_again_without_it(
    server: FakeProviderServer,
) -> None:
    from fake_providers import openai_error

    from rlm.clients.openai import OpenAIClient

    refusal = "Invalid parameter: 'response_format' of type 'json_schema' is not supported."
    server.enqueue(Reply(400, openai_error(400, refusal)), Reply(200, openai_chat('{"a": 1}')))
    client = OpenAIClient(model_name="m", base_url=f"{server.url}/v1", api_key="k")
    try:
        result = client.complete_structured("Say a", ResponseSchema("a", {"type": "object"}))
    finally:
        client.close()
    assert result.text == '{"a": 1}'
    first, second = (r.body for r in server.requests)
    assert first["response_format"]["type"] == "json_schema"
    assert "response_format" not in second
    assert client.get_usage_summary().total_calls == 1  # the refused request cost nothing


@pytest.mark.skipif(not _installed("openai"), reason="no SDK")
def test_schema_format_json_object_speaks_llama_cpp_pythons_dialect(
    server: FakeProviderServer,
) -> None:
    from rlm.base.errors import ConfigurationError
    from rlm.clients.openai import OpenAIClient

    server.enqueue(Reply(200, openai_chat('{"a": 1}')))
    schema = ResponseSchema("a", {"type": "object", "properties": {"a": {"type": "integer"}}})
    client = OpenAIClient(
        model_name="m", base_url=f"{server.url}/v1", api_key="k", schema_format="json_object"
    )
    try:
        client.complete_structured("Say a", schema)
        assert server.last.body["response_format"] == {
            "type": "json_object",
            "schema": schema.schema,
        }
        client.kwargs["schema_format"] = "yaml"
        with pytest.raises(ConfigurationError, match="schema_format"):
            client.complete_structured("Say a", schema)
    finally:
        client.close()
