"""Portkey AI gateway client through ``portkey-ai`` (``pip install 'rlmx[portkey]'``).

Portkey speaks the OpenAI chat-completions wire (its SDK wraps a vendored ``openai``),
so prompts, responses and errors go through the helpers of ``rlm.clients.openai``.
"""

from __future__ import annotations

import importlib
from typing import Any

from rlm.clients.async_pool import PerLoop
from rlm.clients.base_lm import DEFAULT_TIMEOUT, require_api_key, require_model
from rlm.clients.openai import ChatCompletionsLM, to_messages
from rlm.clients.retry import RetryPolicy
from rlm.core.types import Prompt
from rlm.utils.exceptions import MissingExtraError

API_KEY_ENV = "PORTKEY_API_KEY"
DEFAULT_BASE_URL = "https://api.portkey.ai/v1"  # as rlms


def _load_sdk() -> Any:
    try:
        return importlib.import_module("portkey_ai")
    except ImportError:
        raise MissingExtraError("The portkey backend", "portkey", "portkey-ai") from None


def _without_sdk_retries(client: Any) -> Any:
    """Turn off the retry the SDK hard-codes in its vendored OpenAI client.

    ``rlm.clients.retry`` retries instead, so a 429 is not retried twice over. Best
    effort: if a later SDK moves the attribute, its own single retry is harmless.
    """
    completions: Any = getattr(getattr(client, "chat", None), "completions", None)
    inner = getattr(completions, "openai_client", None)
    if inner is not None and hasattr(inner, "with_options"):
        completions.openai_client = inner.with_options(max_retries=0)
    return client


class PortkeyClient(ChatCompletionsLM):
    """Chat completions through the Portkey gateway."""

    def __init__(
        self,
        api_key: str | None = None,
        model_name: str | None = None,
        base_url: str | None = DEFAULT_BASE_URL,
        timeout: float = DEFAULT_TIMEOUT,
        sampling_args: dict[str, Any] | None = None,
        max_retries: int = 4,
        virtual_key: str | None = None,
        config: str | dict[str, Any] | None = None,
        provider: str | None = None,
        retry_policy: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        sdk = _load_sdk()
        api_key = require_api_key(api_key, "portkey", API_KEY_ENV)
        model_name = require_model(model_name, "Portkey")
        super().__init__(
            model_name=model_name, timeout=timeout, sampling_args=sampling_args, **kwargs
        )
        self.base_url = base_url or DEFAULT_BASE_URL
        self.retry_policy = retry_policy or RetryPolicy(max_retries=max_retries)
        self._sdk = sdk
        self._errors = sdk.openai  # the vendored SDK whose exceptions chat calls raise
        self._where = f"Portkey at {self.base_url}"
        self._sdk_kwargs: dict[str, Any] = {"api_key": api_key, "base_url": self.base_url}
        for name, value in (
            ("virtual_key", virtual_key),
            ("config", config),
            ("provider", provider),
        ):
            if value is not None:
                self._sdk_kwargs[name] = value
        self.client = _without_sdk_retries(sdk.Portkey(**self._sdk_kwargs))
        self._async_clients = PerLoop()  # close() leaves them to die with their loops

    def _new_async_client(self) -> Any:
        return _without_sdk_retries(self._sdk.AsyncPortkey(**self._sdk_kwargs))

    def _request(self, prompt: Prompt, model: str) -> dict[str, Any]:
        # Portkey's create() forwards unknown keywords in the JSON body itself.
        args = {k: v for k, v in self.sampling_args.items() if v is not None}
        return {"timeout": self.timeout, **args, "model": model, "messages": to_messages(prompt)}

    def close(self) -> None:
        self._async_clients.close_all()  # the sync client is left open, as it always was
