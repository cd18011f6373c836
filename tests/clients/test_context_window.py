"""Every client knows its model's context window: override > provider > table.

The provider is a loopback server speaking the OpenAI wire (``window_server``): its
``/v1/models`` (vLLM's ``max_model_len``, OpenRouter's ``context_length``) or the
llama.cpp server's ``/props`` ``n_ctx``; the real embedded llama.cpp model reports its
``n_ctx()``. The guard (``check_fits``) refuses a prompt that cannot fit, naming the
sizes, before anything is sent.
"""

from __future__ import annotations

import importlib.util
import os
import socket

import pytest
from window_server import WindowServer, client_kwargs

import rlm.clients.embedded_model as embedded_model
from rlm.base.errors import ConfigurationError, ContextWindowExceededError
from rlm.clients import get_client
from rlm.clients.context_windows import (
    check_fits,
    input_window,
    table_window,
    window_of,
)
from rlm.clients.scripted import ScriptedLM
from rlm.clients.window_probe import window_from_models, window_from_props

needs_openai = pytest.mark.skipif(
    importlib.util.find_spec("openai") is None, reason="needs the openai package"
)

# -- the table ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "tokens"),
    [
        ("gpt-5-mini", 272_000),  # input limit of the 400K window
        ("openai/gpt-4o-mini-2024-07-18", 128_000),
        ("gpt-4", 8_192),
        ("gpt-4-0613", 8_192),
        ("gpt-4.1-nano", 1_047_576),
        ("o1-mini", 128_000),
        ("o3-mini", 200_000),
        ("us.anthropic.claude-3-5-sonnet-20240620-v1:0", 200_000),  # Bedrock
        ("claude-sonnet-4-5", 200_000),
        ("gemini-1.5-pro-002", 2_097_152),
        ("models/gemini-2.5-flash", 1_048_576),
        ("meta-llama/Meta-Llama-3.1-8B-Instruct", 131_072),
        ("qwen2.5:7b", 131_072),  # an Ollama tag
    ],
)
def test_table_matches_exact_names_then_families(model: str, tokens: int) -> None:
    window = table_window(model)
    assert window is not None and window.input == tokens


def test_table_knows_shared_and_separate_windows() -> None:
    gpt5 = table_window("gpt-5")
    assert gpt5 is not None and (gpt5.input, gpt5.total) == (272_000, 400_000)
    gemini = table_window("gemini-2.5-pro")
    assert gemini is not None and gemini.total is None  # the reply has its own allowance
    assert table_window("my-finetune") is None
    assert table_window(None) is None


# -- the override, and the guard without a provider -----------------------------------------


def test_override_beats_the_table_and_is_validated() -> None:
    client = ScriptedLM(model_name="gpt-4o", responses=["x"], context_window=1_000)
    resolved = window_of(client)
    assert resolved is not None and (resolved.source, resolved.window.input) == ("override", 1_000)
    with pytest.raises(ConfigurationError, match="context_window must be a positive"):
        ScriptedLM(responses=["x"], context_window=0)
    with pytest.raises(ConfigurationError, match="context_window"):
        ScriptedLM(responses=["x"], context_window="big")  # type: ignore[arg-type]


def test_guard_names_the_sizes_and_says_it_estimated() -> None:
    client = ScriptedLM(model_name="gpt-5-mini", responses=["x"])
    with pytest.raises(ContextWindowExceededError) as info:
        check_fits(client, "word " * 400_000)  # 2,000,000 characters
    message = str(info.value)
    assert message.startswith("prompt is 500,000 tokens")
    assert "gpt-5-mini takes 272,000" in message and "split it" in message
    assert "(estimated)" in message  # characters / 4: no tokenizer for this model here
    assert info.value.prompt_tokens == 500_000 and info.value.limit == 272_000
    check_fits(client, "word " * 200_000)  # 250,000 tokens fit


def test_guard_keeps_room_for_the_reply() -> None:
    client = ScriptedLM(model_name="gpt-4o", responses=["x"], sampling_args={"max_tokens": 8_000})
    prompt = "a" * (4 * 125_000)  # fits 128,000, but not with 8,000 kept for the reply
    with pytest.raises(ContextWindowExceededError, match=r"128,000 less 8,000 kept"):
        check_fits(client, prompt)
    check_fits(ScriptedLM(model_name="gpt-4o", responses=["x"]), prompt)  # no max_tokens


def test_unknown_window_is_not_checked() -> None:
    client = ScriptedLM(model_name="my-finetune", responses=["x"])
    assert window_of(client) is None and input_window(client) is None
    check_fits(client, "a" * 10_000_000)


# -- what the window probe reads -----------------------------------------------------------


def test_probe_reads_each_servers_field() -> None:
    vllm = {"data": [{"id": "Qwen/Qwen2.5-7B", "max_model_len": 32_768}]}
    assert window_from_models(vllm, "Qwen/Qwen2.5-7B") == 32_768
    assert window_from_models(vllm, "served-as-another-name") == 32_768  # the only model
    openrouter = {
        "data": [
            {"id": "openai/gpt-4o", "context_length": 128_000},
            {"id": "anthropic/claude-3.7-sonnet", "context_length": 200_000},
        ]
    }
    assert window_from_models(openrouter, "anthropic/claude-3.7-sonnet") == 200_000
    assert window_from_models(openrouter, "not/listed") is None
    llama = {"data": [{"id": "m.gguf", "meta": {"n_ctx_train": 8192}}]}
    assert window_from_models(llama, "m.gguf") is None  # the training window is not served
    assert window_from_props({"default_generation_settings": {"n_ctx": 4096}}) == 4096
    assert window_from_props({"n_ctx": 2048}) == 2048
    assert window_from_props({"n_ctx": "many"}) is None


# -- a loopback provider -----------------------------------------------------------------------


@needs_openai
def test_props_beats_the_table_and_is_asked_once() -> None:
    llama_like = {"data": [{"id": "gpt-4o", "object": "model", "meta": {"n_ctx_train": 131072}}]}
    props = {"default_generation_settings": {"n_ctx": 4096}, "total_slots": 1}
    with WindowServer(models=llama_like, props=props) as server:
        client = get_client("openai", client_kwargs(server))
        assert server.gets == 0  # nothing is asked when the client is made
        resolved = window_of(client)
        assert resolved is not None and (resolved.source, resolved.window.input) == (
            "provider",
            4096,
        )
        assert dict(server.hits) == {"GET /v1/models": 1, "GET /props": 1}
        assert server.auth == ["Bearer sk-test-key"] * 2
        with pytest.raises(ContextWindowExceededError, match="gpt-4o takes 4,096"):
            check_fits(client, "b" * 20_000)
        check_fits(client, "b" * 4_000)
        assert server.gets == 2 and server.posts == 0  # resolved once, kept on the client


@needs_openai
def test_models_list_window_vllm_style() -> None:
    vllm = {"object": "list", "data": [{"id": "served-model", "max_model_len": 16_384}]}
    with WindowServer(models=vllm) as server:
        client = get_client("vllm", client_kwargs(server, model="served-model"))
        resolved = window_of(client)
        assert resolved is not None and resolved.source == "provider"
        assert resolved.window.input == 16_384
        assert dict(server.hits) == {"GET /v1/models": 1}  # no need for /props


@needs_openai
def test_override_beats_the_provider_without_asking_it() -> None:
    props = {"default_generation_settings": {"n_ctx": 4096}}
    with WindowServer(models={"data": []}, props=props) as server:
        client = get_client("openai", client_kwargs(server, context_window=32_000))
        resolved = window_of(client)
        assert resolved is not None and (resolved.source, resolved.window.input) == (
            "override",
            32_000,
        )
        assert server.gets == 0


@needs_openai
def test_a_provider_that_does_not_say_falls_back_to_the_table() -> None:
    with WindowServer() as server:  # /v1/models and /props: 404
        client = get_client("openai", client_kwargs(server, model="gpt-4o-mini"))
        resolved = window_of(client)
        assert resolved is not None and (resolved.source, resolved.window.input) == (
            "table",
            128_000,
        )
        assert server.gets == 2
    with socket.socket() as sock:  # a port nobody listens on: refused at once
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = get_client(
        "openai",
        {"model_name": "gpt-4o", "base_url": f"http://127.0.0.1:{port}/v1", "api_key": "k"},
    )
    resolved = window_of(down)
    assert resolved is not None and resolved.source == "table"


@needs_openai
def test_official_openai_is_not_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    client = get_client("openai", {"model_name": "gpt-5-mini", "api_key": "sk-x"})
    assert client.provider_context_window() is None  # no request to api.openai.com
    resolved = window_of(client)
    assert resolved is not None and resolved.source == "table"


# -- the embedded llama.cpp model --------------------------------------------------------------

GGUF = embedded_model.default_gguf_path()


@pytest.mark.llama
@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None or not GGUF or not os.path.isfile(GGUF),
    reason="needs llama-cpp-python and the embedded GGUF model",
)
def test_embedded_model_reports_its_n_ctx_and_counts_exactly() -> None:
    from rlm.clients.llama_cpp import LlamaCppClient

    # The default n_ctx (8192): the process's one loaded copy, shared with other tests.
    client = LlamaCppClient(sampling_args={"max_tokens": 8})
    resolved = window_of(client)
    assert resolved is not None and (resolved.source, resolved.window.input) == ("provider", 8192)
    assert client.llama.n_ctx() == 8192
    with pytest.raises(ContextWindowExceededError) as info:
        check_fits(client, "hello world " * 5000)
    message = str(info.value)
    assert "takes 8,184 (8,192 less 8 kept for the reply)" in message
    assert "(estimated)" not in message  # the model's own tokenizer counted it
    assert info.value.prompt_tokens > 8184
    check_fits(client, "hello world " * 200)
    overridden = LlamaCppClient(context_window=1024)
    resolved = window_of(overridden)
    assert resolved is not None and (resolved.source, resolved.window.input) == ("override", 1024)
