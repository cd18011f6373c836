"""``OPENAI_BASE_URL`` (read by the openai SDK when no ``base_url`` is passed) also
drives rlmx's own decisions: which key is needed and what errors name."""

from __future__ import annotations

import socket

import pytest

pytest.importorskip("openai")

from rlm.base.errors import MissingAPIKeyError, ProviderConnectionError
from rlm.clients.openai import OpenAIClient


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_errors_name_the_endpoint_from_openai_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a local server needs no key
    client = OpenAIClient(model_name="local", max_retries=0)
    with pytest.raises(ProviderConnectionError) as err:
        client.completion("hi")
    assert "127.0.0.1" in str(err.value) and "api.openai.com" not in str(err.value)


def test_the_hosted_api_still_needs_its_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(MissingAPIKeyError, match="OPENAI_API_KEY"):
        OpenAIClient(model_name="gpt-5-nano")
