"""Gemini reports its models' limits (``models.get``: ``inputTokenLimit`` and
``outputTokenLimit``): the client asks once, the guard uses the prompt limit, and a
provider that does not say leaves the table to decide. Against a loopback server
that speaks Gemini's REST API (the real ``google-genai`` SDK on the client side)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import Any

import pytest
from fake_providers import FakeProviderServer, Reply

from rlm.base.errors import ContextWindowExceededError
from rlm.clients.context_windows import check_fits, window_of

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("google.genai") is None, reason="google-genai not installed"
)
MODEL_PATH = "/v1beta/models/gemini-2.5-flash"


@pytest.fixture
def server() -> Iterator[FakeProviderServer]:
    with FakeProviderServer() as running:
        yield running


def _client(url: str) -> Any:
    from rlm.clients.gemini import GeminiClient

    return GeminiClient(
        model_name="gemini-2.5-flash", base_url=url, api_key="gm-secret", api_version="v1beta"
    )


def test_the_window_comes_from_models_get_once(server: FakeProviderServer) -> None:
    server.enqueue(
        Reply(
            200,
            {
                "name": "models/gemini-2.5-flash",
                "inputTokenLimit": 2_000,
                "outputTokenLimit": 500,
            },
        )
    )
    client = _client(server.url)
    resolved = window_of(client)
    assert resolved is not None and resolved.source == "provider"
    assert (resolved.window.input, resolved.window.total, resolved.window.output) == (
        2_000,
        None,
        500,
    )
    assert window_of(client) is resolved  # asked once
    gets = [r for r in server.requests if r.method == "GET"]
    assert [r.path for r in gets] == [MODEL_PATH]
    assert gets[0].headers["x-goog-api-key"] == "gm-secret"
    # the guard: a prompt over the provider's limit is refused, nothing is sent
    with pytest.raises(ContextWindowExceededError, match=r"gemini-2\.5-flash takes 2,000"):
        check_fits(client, "word " * 4_000)
    check_fits(client, "word " * 100)
    assert not [r for r in server.requests if r.method == "POST"]
    client.close()


def test_a_provider_that_does_not_say_leaves_the_table(server: FakeProviderServer) -> None:
    server.enqueue(Reply(404, {"error": {"code": 404, "message": "nope", "status": "NOT_FOUND"}}))
    client = _client(server.url)
    resolved = window_of(client)
    assert resolved is not None and resolved.source == "table"
    assert resolved.window.input == 1_048_576
    client.close()
