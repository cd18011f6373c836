"""Images on each provider's wire: the real SDKs against the loopback fakes of their
formats (``fake_providers``). A prompt with an inline PNG and an http(s) URL, as
``llm_query(images=...)`` builds it, must leave as OpenAI ``image_url`` parts, Anthropic
``image`` blocks (base64 and url sources) and Gemini ``inlineData``/``fileData`` parts.
A model without vision gets a clear error naming it, and no request is made.
"""

from __future__ import annotations

import base64
import importlib.util
import os
from collections.abc import Callable, Iterator
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

import rlm.clients.embedded_model as embedded_model
from rlm.base.errors import ImagesNotSupportedError
from rlm.base.images import loggable
from rlm.clients.base_lm import BaseLM
from rlm.clients.vision import accepts_images, check_images, table_vision
from rlm.core.lm_handler import LMHandler
from rlm.environments.local_repl import LocalREPL
from rlm.environments.worker.images import with_images

pytestmark = pytest.mark.filterwarnings(
    "ignore:Inheritance class AiohttpClientSession:DeprecationWarning"
)

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
PNG_B64 = base64.b64encode(PNG).decode()
URL = "https://example.com/pictures/cat.png"
PROMPT = with_images("What is in these pictures?", [PNG, URL])


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProviderServer]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for var in ("ANTHROPIC_BASE_URL", "ANTHROPIC_CUSTOM_HEADERS", "GOOGLE_GENAI_API_VERSION"):
        monkeypatch.delenv(var, raising=False)
    with FakeProviderServer() as fake:
        yield fake


def _complete(client: BaseLM, prompt: Any = PROMPT) -> str:
    try:
        return client.complete(prompt).text
    finally:
        client.close()


OPENAI_PARTS = [
    {"type": "text", "text": "What is in these pictures?"},
    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
    {"type": "image_url", "image_url": {"url": URL}},
]


def _openai(url: str, model: str = "gpt-4o-mini") -> BaseLM:
    from rlm.clients.openai import OpenAIClient

    return OpenAIClient(model_name=model, base_url=f"{url}/v1", api_key="sk-t")


def _azure(url: str) -> BaseLM:
    from rlm.clients.azure_openai import AzureOpenAIClient

    return AzureOpenAIClient(
        model_name="gpt-4o-mini",
        azure_endpoint=url,
        azure_deployment="dep",
        api_version="2024-10-21",
        api_key="az-t",
    )


def _portkey(url: str) -> BaseLM:
    from rlm.clients.portkey import PortkeyClient

    return PortkeyClient(model_name="gpt-4o-mini", base_url=f"{url}/v1", api_key="pk-t")


def _litellm(url: str) -> BaseLM:
    from rlm.clients.litellm import LiteLLMClient

    return LiteLLMClient(model_name="openai/xyz", api_base=f"{url}/v1", api_key="ll-t")


OPENAI_WIRE: list[tuple[str, str, Callable[[str], BaseLM]]] = [
    ("openai", "openai", _openai),
    ("azure_openai", "openai", _azure),
    ("portkey", "portkey_ai", _portkey),
    ("litellm", "litellm", _litellm),
]


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(make, id=name, marks=pytest.mark.skipif(not _installed(mod), reason="no SDK"))
        for name, mod, make in OPENAI_WIRE
    ],
)
def test_the_openai_wire_sends_image_url_parts(
    make: Callable[[str], BaseLM], server: FakeProviderServer
) -> None:
    server.enqueue(Reply(200, openai_chat("two pictures")))
    assert _complete(make(server.url)) == "two pictures"
    (message,) = server.last.body["messages"]
    assert message == {"role": "user", "content": OPENAI_PARTS}


@pytest.mark.skipif(not _installed("anthropic"), reason="no SDK")
def test_anthropic_gets_image_blocks_with_base64_and_url_sources(
    server: FakeProviderServer,
) -> None:
    from rlm.clients.anthropic import AnthropicClient

    server.enqueue(Reply(200, anthropic_message(("two pictures",))))
    client = AnthropicClient(model_name="claude-sonnet-4-6", base_url=server.url, api_key="k")
    prompt = [{"role": "system", "content": "Be terse."}, *PROMPT]
    assert _complete(client, prompt) == "two pictures"
    body = server.last.body
    assert body["system"] == "Be terse."
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in these pictures?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64},
                },
                {"type": "image", "source": {"type": "url", "url": URL}},
            ],
        }
    ]


@pytest.mark.skipif(not _installed("google.genai"), reason="no SDK")
def test_gemini_gets_inline_data_and_file_data_parts(server: FakeProviderServer) -> None:
    from rlm.clients.gemini import GeminiClient

    server.enqueue(Reply(200, gemini_response("two pictures")))
    client = GeminiClient(model_name="gemini-2.5-flash", base_url=server.url, api_key="k")
    assert _complete(client) == "two pictures"
    (content,) = server.last.body["contents"]
    assert content["role"] == "user"
    text, inline, fetched = content["parts"]
    assert text == {"text": "What is in these pictures?"}
    # The SDK's own JSON (field names inside a part as it spells them; the API reads both).
    blob, file = inline["inlineData"], fetched["fileData"]
    assert _field(blob, "mime_type") == "image/png"
    assert base64.urlsafe_b64decode(blob["data"]) == PNG
    assert _field(file, "file_uri") == URL
    assert _field(file, "mime_type") == "image/png"


def _field(obj: dict[str, Any], snake: str) -> Any:
    head, *rest = snake.split("_")
    camel = head + "".join(word.title() for word in rest)
    return obj[snake] if snake in obj else obj[camel]


@pytest.mark.skipif(not _installed("openai"), reason="no SDK")
def test_a_model_without_vision_is_refused_before_any_request(
    server: FakeProviderServer,
) -> None:
    handler = LMHandler(_openai(server.url, "gpt-3.5-turbo"))
    try:
        result = handler.route(1).llm_query(PROMPT)
        plain = handler.route(1).llm_query("no pictures")
    finally:
        handler.close()
    assert result.error is not None
    assert result.error.startswith("gpt-3.5-turbo does not take images (2 in the prompt)")
    assert plain.error is None  # the same model still answers text
    posts = [r for r in server.requests if r.method == "POST"]  # GETs: the window probe
    assert [r.body["messages"] for r in posts] == [[{"role": "user", "content": "no pictures"}]]
    assert PNG_B64 not in str(result.prompt)  # the failed completion keeps a summary


@pytest.mark.skipif(not _installed("openai"), reason="no SDK")
def test_vision_false_in_backend_kwargs_refuses_an_unknown_model(
    server: FakeProviderServer,
) -> None:
    from rlm.clients.openai import OpenAIClient

    unknown = OpenAIClient(model_name="my-local-model", base_url=f"{server.url}/v1", api_key="k")
    refusing = OpenAIClient(
        model_name="my-local-model", base_url=f"{server.url}/v1", api_key="k", vision=False
    )
    assert accepts_images(unknown) is None  # unknown: the provider decides
    check_images(unknown, PROMPT)
    with pytest.raises(ImagesNotSupportedError, match="my-local-model does not take images"):
        check_images(refusing, PROMPT)
    unknown.close()
    refusing.close()
    assert server.requests == []


def test_the_vision_table() -> None:
    assert table_vision("gpt-4o-mini-2024-07-18") is True
    assert table_vision("openai/gpt-5-mini") is True
    assert table_vision("o3-mini") is False
    assert table_vision("o3") is True
    assert table_vision("gpt-4") is False
    assert table_vision("us.anthropic.claude-sonnet-4-20250514-v1:0") is True
    assert table_vision("claude-2.1") is False
    assert table_vision("gemini-2.5-flash") is True
    assert table_vision("qwen2.5-coder:7b") is None


def test_loggable_replaces_only_the_image_parts() -> None:
    summary = loggable(PROMPT)
    (message,) = summary
    assert message["content"][0] == {"type": "text", "text": "What is in these pictures?"}
    assert message["content"][1]["type"] == "image_summary"
    assert message["content"][1]["image"].startswith("image/png, 70 bytes, sha256 ")
    assert message["content"][2] == {"type": "image_summary", "image": URL}
    assert PNG_B64 not in str(summary)
    plain = [{"role": "user", "content": "hi"}]
    assert loggable(plain) is plain  # nothing copied when there is no image


_GGUF = embedded_model.default_gguf_path()


@pytest.mark.llama
@pytest.mark.skipif(
    not _installed("llama_cpp") or not _GGUF or not os.path.isfile(_GGUF),
    reason="needs llama-cpp-python and the embedded GGUF model",
)
def test_the_embedded_model_refuses_images_naming_itself() -> None:
    from rlm.clients.llama_cpp import LlamaCppClient

    client = LlamaCppClient(sampling_args={"max_tokens": 4})
    handler = LMHandler(client)
    env = LocalREPL(lm_route=handler.route(1), context_payload=[PNG])
    try:
        out = env.execute_code("print(llm_query('describe', images=[context[0]]))").stdout
    finally:
        env.cleanup()
        handler.close()
    assert out.startswith(f"Error: {client.model_name} does not take images (1 in the prompt)")
    assert "the llama_cpp backend sends text only" in out
