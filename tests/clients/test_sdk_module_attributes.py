"""The client modules' SDK attributes, ``DEFAULT_*`` constants and Prime Intellect routing.

Code written for ``rlms`` patches the SDK through the client module
(``patch("rlm.clients.openai.openai.OpenAI")``) and reads or patches its ``DEFAULT_*``
constants. rlmx names each SDK lazily (imported on first access), and its clients build
their SDK clients through that attribute. Requests go to a loopback fake of each wire.

Modules are taken from ``sys.modules`` (``importlib.import_module``), as string patches
resolve them: another test may have re-imported a client module, leaving the package
attribute ``rlm.clients.X`` on a different module object.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType, SimpleNamespace
from typing import Any
from unittest.mock import MagicMock, patch

import pytest
from fake_providers import FakeProviderServer

from rlm.base.errors import MissingAPIKeyError, MissingExtraError
from rlm.clients.scripted import ScriptedLM


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _needs(module: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not _installed(module), reason=f"{module} is not installed")


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProviderServer]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with FakeProviderServer() as fake:
        yield fake


# (client module, attribute, what it imports, extra, pip package)
SDK_NAMES = [
    ("openai", "openai", "openai", "openai", "openai"),
    ("azure_openai", "openai", "openai", "openai", "openai"),
    ("anthropic", "anthropic", "anthropic", "anthropic", "anthropic"),
    ("gemini", "genai", "google.genai", "gemini", "google-genai"),
    ("gemini", "types", "google.genai", "gemini", "google-genai"),
    ("portkey", "Portkey", "portkey_ai", "portkey", "portkey-ai"),
    ("portkey", "AsyncPortkey", "portkey_ai", "portkey", "portkey-ai"),
    ("portkey", "ChatCompletions", "portkey_ai", "portkey", "portkey-ai"),
    ("litellm", "litellm", "litellm", "litellm", "litellm"),
]
_IDS = [f"{m}.{a}" for m, a, *_ in SDK_NAMES]


# ---------------------------------------------------------------------------
# Lazy attributes
# ---------------------------------------------------------------------------


def test_importing_the_client_modules_imports_no_sdk() -> None:
    code = textwrap.dedent(
        f"""
        import importlib, json, sys
        names = {SDK_NAMES!r}
        for module, *_ in names:
            importlib.import_module("rlm.clients." + module)
        before = sorted({{sdk for *_, sdk, _, _ in names if sdk in sys.modules}})
        after = {{}}
        for module, attribute, sdk, _, _ in names:
            if importlib.util.find_spec(sdk.split(".")[0]) is None:
                continue
            value = getattr(sys.modules["rlm.clients." + module], attribute)
            after[module + "." + attribute] = sdk in sys.modules and value is not None
        print(json.dumps({{"before": before, "after": after}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["before"] == []
    assert all(report["after"].values()), report["after"]


@pytest.mark.parametrize(("module", "attribute", "sdk", "extra", "package"), SDK_NAMES, ids=_IDS)
def test_a_missing_sdk_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, attribute: str, sdk: str, extra: str, package: str
) -> None:
    monkeypatch.setitem(sys.modules, sdk, None)  # importing it now fails
    client_module = importlib.import_module(f"rlm.clients.{module}")

    with pytest.raises(MissingExtraError) as info:
        getattr(client_module, attribute)
    assert isinstance(info.value, ImportError)
    assert f"pip install 'rlmx[{extra}]'" in str(info.value)
    assert package in str(info.value)
    with pytest.raises(MissingExtraError):
        exec(f"from rlm.clients.{module} import {attribute}", {})


@pytest.mark.parametrize("module", sorted({m for m, *_ in SDK_NAMES}))
def test_unknown_attributes_are_still_attribute_errors(module: str) -> None:
    client_module = importlib.import_module(f"rlm.clients.{module}")
    assert not hasattr(client_module, "no_such_name")
    with pytest.raises(AttributeError, match="no_such_name"):
        client_module.no_such_name  # noqa: B018


# ---------------------------------------------------------------------------
# Patching the attribute is what the client uses
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Patched:
    module: str
    targets: tuple[str, ...]  # what is patched: the sync SDK client first
    sdk: str
    make: Callable[[ModuleType], Any]


PATCHED = [
    Patched(
        "openai", ("openai.OpenAI", "openai.AsyncOpenAI"), "openai",
        lambda m: m.OpenAIClient(api_key="k", model_name="gpt-5-nano", timeout=42.0),
    ),
    Patched(
        "azure_openai", ("openai.AzureOpenAI", "openai.AsyncAzureOpenAI"), "openai",
        lambda m: m.AzureOpenAIClient(
            api_key="k", model_name="gpt-4o", azure_endpoint="http://127.0.0.1:9", timeout=42.0
        ),
    ),
    Patched(
        "anthropic", ("anthropic.Anthropic", "anthropic.AsyncAnthropic"), "anthropic",
        lambda m: m.AnthropicClient(api_key="k", model_name="claude-sonnet-4-6", timeout=42.0),
    ),
    Patched(
        "portkey", ("Portkey", "AsyncPortkey"), "portkey_ai",
        lambda m: m.PortkeyClient(api_key="k", model_name="gpt-4o", timeout=42.0),
    ),
    Patched(
        "gemini", ("genai.Client",), "google.genai",
        lambda m: m.GeminiClient(api_key="k", timeout=42.0),
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, id=c.module, marks=_needs(c.sdk)) for c in PATCHED],
)
def test_patching_the_module_attribute_builds_the_client_with_the_mock(case: Patched) -> None:
    module = importlib.import_module(f"rlm.clients.{case.module}")
    with patch(f"rlm.clients.{case.module}.{case.targets[0]}") as sync_class:
        if len(case.targets) == 2:
            with patch(f"rlm.clients.{case.module}.{case.targets[1]}") as async_class:
                client = case.make(module)
            async_class.assert_called_once()
            assert async_class.call_args.kwargs["timeout"] == 42.0
            assert client.async_client is async_class.return_value  # rlms builds both
        else:
            client = case.make(module)

    sync_class.assert_called_once()
    kwargs = sync_class.call_args.kwargs
    if case.module == "gemini":
        assert kwargs["http_options"].timeout == 42_000  # milliseconds
    else:
        assert kwargs["timeout"] == 42.0
    assert client.client is sync_class.return_value


def test_an_assigned_stand_in_module_is_used_even_without_the_sdk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = importlib.import_module("rlm.clients.openai")

    made: list[dict[str, Any]] = []
    reply = SimpleNamespace(
        choices=[SimpleNamespace(message=SimpleNamespace(content="from the stand-in"))],
        usage=SimpleNamespace(prompt_tokens=3, completion_tokens=2),
    )

    class StandIn:
        def __init__(self, **kwargs: Any) -> None:
            made.append(kwargs)
            self.chat = SimpleNamespace(completions=SimpleNamespace(create=lambda **_: reply))

    fake_sdk = SimpleNamespace(OpenAI=StandIn, AsyncOpenAI=StandIn)
    monkeypatch.setattr(module, "openai", fake_sdk, raising=False)
    client = module.OpenAIClient(model_name="m", base_url="http://127.0.0.1:9/v1")

    assert client.completion("hi") == "from the stand-in"
    assert len(made) == 2 and made[0]["base_url"] == "http://127.0.0.1:9/v1"
    assert (client.model_call_counts["m"], client.model_input_tokens["m"]) == (1, 3)


@_needs("openai")
def test_the_async_client_built_at_init_serves_the_first_event_loop(
    server: FakeProviderServer,
) -> None:
    import openai

    from rlm.clients.openai import OpenAIClient

    with patch("rlm.clients.openai.openai.AsyncOpenAI", wraps=openai.AsyncOpenAI) as made:
        client = OpenAIClient(api_key="k", model_name="m", base_url=f"{server.url}/v1")
        assert made.call_count == 1
        assert asyncio.run(client.acompletion("one")) == "Hello from the OpenAI wire"
        assert made.call_count == 1  # the first loop used the client built at init
        asyncio.run(client.acompletion("two"))
        assert made.call_count == 2  # a later loop gets a client of its own
    client.close()
    assert len(server.requests) == 2


@_needs("openai")
def test_stand_in_replies_count_only_the_numbers_they_report() -> None:
    from rlm.clients.openai import OpenAIClient

    reply = MagicMock()
    reply.choices = [MagicMock()]
    reply.choices[0].message.content = "mocked"
    reply.usage.prompt_tokens = 7
    reply.usage.completion_tokens = 3
    with patch("rlm.clients.openai.openai.OpenAI") as sync_class:
        sync_class.return_value.chat.completions.create.return_value = reply
        client = OpenAIClient(api_key="k", model_name="unpriced-model")
        assert client.completion("hi") == "mocked"

    usage = client.get_usage_summary().model_usage_summaries["unpriced-model"]
    assert (usage.total_input_tokens, usage.total_output_tokens) == (7, 3)
    assert usage.total_cost is None  # the mock's auto-attributes are not a cost
    assert usage.cache_read_tokens is None


# ---------------------------------------------------------------------------
# DEFAULT_* constants
# ---------------------------------------------------------------------------


@_needs("google.genai")
def test_gemini_without_a_key_raises_rlms_value_error(monkeypatch: pytest.MonkeyPatch) -> None:
    module = importlib.import_module("rlm.clients.gemini")

    for var in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(module, "DEFAULT_GEMINI_API_KEY", None)

    with pytest.raises(ValueError, match="Gemini API key is required") as info:
        module.GeminiClient(api_key=None)
    assert isinstance(info.value, MissingAPIKeyError)
    assert info.value.env_var == "GEMINI_API_KEY"


@_needs("google.genai")
def test_a_reassigned_constant_wins_and_otherwise_the_environment_is_read_now(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = importlib.import_module("rlm.clients.gemini")

    monkeypatch.setenv("GEMINI_API_KEY", "from-env")  # set after import: still read
    with patch("rlm.clients.gemini.genai.Client") as genai_client:
        module.GeminiClient()
        assert genai_client.call_args.kwargs["api_key"] == "from-env"
        with patch("rlm.clients.gemini.DEFAULT_GEMINI_API_KEY", "from-constant"):
            module.GeminiClient()
        assert genai_client.call_args.kwargs["api_key"] == "from-constant"


@_needs("openai")
def test_hosted_base_urls_read_their_own_key_and_constant(monkeypatch: pytest.MonkeyPatch) -> None:
    module = importlib.import_module("rlm.clients.openai")

    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    monkeypatch.setenv("OPENROUTER_API_KEY", "or-env")
    url = "https://openrouter.ai/api/v1"
    assert module.OpenAIClient(model_name="m", base_url=url).client.api_key == "or-env"
    monkeypatch.setattr(module, "DEFAULT_OPENROUTER_API_KEY", "or-constant")
    assert module.OpenAIClient(model_name="m", base_url=url).client.api_key == "or-constant"


# ---------------------------------------------------------------------------
# Prime Intellect
# ---------------------------------------------------------------------------

PRIME_URLS = ["https://api.pinference.ai/api/v1/", "https://api.pinference.ai/api/v1"]


@_needs("openai")
@pytest.mark.parametrize("base_url", PRIME_URLS)
def test_prime_endpoint_sends_prime_api_key(monkeypatch: pytest.MonkeyPatch, base_url: str) -> None:
    module = importlib.import_module("rlm.clients.openai")

    assert base_url.rstrip("/") == module.DEFAULT_PRIME_INTELLECT_BASE_URL.rstrip("/")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")  # never sent to Prime
    monkeypatch.setenv("PRIME_API_KEY", "pk-prime")
    assert module.OpenAIClient(model_name="m", base_url=base_url).client.api_key == "pk-prime"

    monkeypatch.setattr(module, "DEFAULT_PRIME_API_KEY", "pk-constant")
    assert module.OpenAIClient(model_name="m", base_url=base_url).client.api_key == "pk-constant"
    explicit = module.OpenAIClient(api_key="pk-explicit", model_name="m", base_url=base_url)
    assert explicit.client.api_key == "pk-explicit"


@_needs("openai")
def test_prime_without_a_key_names_prime_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from rlm.clients.openai import DEFAULT_PRIME_INTELLECT_BASE_URL, OpenAIClient

    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    monkeypatch.delenv("PRIME_API_KEY", raising=False)
    with pytest.raises(MissingAPIKeyError, match="PRIME_API_KEY") as info:
        OpenAIClient(model_name="m", base_url=DEFAULT_PRIME_INTELLECT_BASE_URL)
    assert isinstance(info.value, ValueError)


def _prime_client_on_loopback(server: FakeProviderServer, **kwargs: Any) -> Any:
    """A client configured for Prime Intellect whose SDK clients talk to ``server``."""
    from rlm.clients.openai import DEFAULT_PRIME_INTELLECT_BASE_URL, OpenAIClient

    client = OpenAIClient(model_name="m", base_url=DEFAULT_PRIME_INTELLECT_BASE_URL, **kwargs)
    client.client = client.client.with_options(base_url=f"{server.url}/v1")
    client.async_client = client.async_client.with_options(base_url=f"{server.url}/v1")
    return client


@_needs("openai")
def test_prime_requests_ask_for_usage(
    server: FakeProviderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRIME_API_KEY", "pk-prime")
    client = _prime_client_on_loopback(server)

    assert client.completion("hi") == "Hello from the OpenAI wire"
    assert server.last.body["usage"] == {"include": True}
    assert server.last.headers["authorization"] == "Bearer pk-prime"
    asyncio.run(client.acompletion("hi"))
    assert server.last.body["usage"] == {"include": True}
    assert client.model_call_counts["m"] == 2
    client.close()


@_needs("openai")
def test_the_callers_extra_body_wins_over_prime_usage(server: FakeProviderServer) -> None:
    extra = {"usage": {"include": False}, "provider": {"order": ["a"]}}
    client = _prime_client_on_loopback(
        server, api_key="pk", sampling_args={"temperature": 0.5, "extra_body": extra}
    )
    client.completion("hi")
    client.close()

    body = server.last.body
    assert body["usage"] == {"include": False}
    assert body["provider"] == {"order": ["a"]}
    assert body["temperature"] == 0.5


@_needs("openai")
def test_other_endpoints_do_not_ask_for_usage(server: FakeProviderServer) -> None:
    from rlm.clients.openai import OpenAIClient

    client = OpenAIClient(api_key="k", model_name="m", base_url=f"{server.url}/v1")
    client.completion("hi")
    client.close()
    assert "usage" not in server.last.body


# ---------------------------------------------------------------------------
# rlms's usage attributes and Gemini's rlms-style calls
# ---------------------------------------------------------------------------


def test_rlms_usage_attributes_follow_the_accounting() -> None:
    client = ScriptedLM(model_name="s", responses=["four chars"])
    assert client.model_call_counts == {} and client.last_prompt_tokens == 0
    client.last_prompt_tokens = 100
    client.last_completion_tokens = 50
    last = client.get_last_usage()
    assert (last.total_calls, last.total_input_tokens, last.total_output_tokens) == (1, 100, 50)

    client.completion("a prompt of some length")
    client.completion("another")
    summary = client.get_usage_summary().model_usage_summaries["s"]
    assert client.model_call_counts == {"s": 2}
    assert client.model_input_tokens["s"] == summary.total_input_tokens
    assert client.model_total_tokens["s"] == summary.total_tokens
    assert client.model_call_counts["never-called"] == 0
    assert client.last_prompt_tokens == client.get_last_usage().total_input_tokens


@_needs("google.genai")
def test_gemini_without_a_model_fails_per_call_unless_the_call_names_one(
    server: FakeProviderServer,
) -> None:
    from rlm.clients.gemini import GeminiClient

    client = GeminiClient(api_key="k", model_name=None, base_url=server.url)
    with pytest.raises(ValueError, match="Model name is required"):
        client.completion("hi")
    assert not server.requests

    assert client.completion("hi", model="gemini-2.5-flash") == "Hello from Gemini"
    assert client.model_call_counts["gemini-2.5-flash"] == 1
    assert client._prepare_contents("plain") == ("plain", None)
    client.close()
