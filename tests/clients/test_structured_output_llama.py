"""``output_schema`` against real llama.cpp: the embedded GGUF model (SmolLM2-135M) in
process, constrained by a grammar made from the schema, and llama-cpp-python's
OpenAI-compatible server, constrained by ``response_format`` (in that server's
``json_object`` form: ``schema_format="json_object"``). A model this small
answers badly, but its reply must parse and match the schema."""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Any

import pytest

import rlm.clients.embedded_model as embedded_model
from rlm.base.json_schema import ResponseSchema, validate

GGUF = embedded_model.default_gguf_path()
needs_model = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None or not GGUF or not os.path.isfile(GGUF),
    reason="needs llama-cpp-python and the embedded GGUF model",
)
SCHEMA = ResponseSchema(
    "capital",
    {
        "type": "object",
        "properties": {
            "country": {"type": "string", "maxLength": 20},
            "ok": {"type": "boolean"},
        },
        "required": ["country", "ok"],
        "additionalProperties": False,
    },
    strict=True,
)
PROMPT = [{"role": "user", "content": "Name a country as JSON."}]


@pytest.mark.llama
@needs_model
def test_the_embedded_model_replies_with_json_matching_the_schema() -> None:
    from rlm.clients.llama_cpp import LlamaCppClient

    client = LlamaCppClient(sampling_args={"max_tokens": 48}, n_ctx=1024)
    result = client.complete_structured(PROMPT, SCHEMA)
    value = json.loads(result.text)
    assert validate(value, SCHEMA.schema) == []
    assert result.usage.total_output_tokens > 0


@pytest.mark.llama
def test_the_llama_server_honours_response_format(llama_server: Any) -> None:
    from rlm.clients.openai import OpenAIClient

    client = OpenAIClient(  # llama-cpp-python's server takes its own json_object form
        model_name="local",
        base_url=llama_server.base_url,
        sampling_args={"max_tokens": 48},
        schema_format="json_object",
    )
    try:
        result = client.complete_structured(PROMPT, SCHEMA)
    finally:
        client.close()
    value = json.loads(result.text)
    assert validate(value, SCHEMA.schema) == []


@pytest.mark.llama
def test_a_typed_sub_call_against_the_llama_server(llama_server: Any) -> None:
    """``llm_query(prompt, schema=...)``'s engine side on a real server: the request
    carries the schema, and the value that comes back matches it."""
    from rlm.clients.openai import OpenAIClient
    from rlm.core.lm_handler import LMHandler
    from rlm.environments.worker.typed_query import TypedQuery

    client = OpenAIClient(
        model_name="local",
        base_url=llama_server.base_url,
        sampling_args={"max_tokens": 48},
        schema_format="json_object",
    )
    handler = LMHandler(client)
    wire = TypedQuery.of(SCHEMA.schema).wire
    try:
        result = handler.route(1).llm_query("Name a country.", None, schema=wire)
    finally:
        handler.close()
    assert result.error is None, result.error
    assert validate(result.parsed, SCHEMA.schema) == []
    assert json.loads(result.response) == result.parsed
