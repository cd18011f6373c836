"""Portkey AI gateway client through ``portkey-ai`` (``pip install 'rlmx[portkey]'``).

Portkey speaks the OpenAI chat-completions wire (its SDK wraps a vendored ``openai``),
so prompts, responses and errors go through the helpers of ``rlm.clients.openai``.

As in ``rlms``, the module attributes ``Portkey``, ``AsyncPortkey`` and ``ChatCompletions``
are the SDK's (imported on first access, so ``patch("rlm.clients.portkey.Portkey")``
works). The SDK clients are shared by every client of the process
(``rlm.clients.async_pool``); patched classes are built with the client, as in ``rlms``.
"""

from __future__ import annotations

from typing import Any

from rlm.base.types import Prompt
from rlm.clients.async_pool import SDKClients
from rlm.clients.base_lm import DEFAULT_TIMEOUT, require_model
from rlm.clients.compat import EnvDefaults, LazySDK, require_key
from rlm.clients.openai import ChatCompletionsLM, to_messages
from rlm.clients.retry import RetryPolicy

_SDK = LazySDK(
    globals(),
    {
        "portkey_ai": "portkey_ai",
        "Portkey": "portkey_ai:Portkey",
        "AsyncPortkey": "portkey_ai:AsyncPortkey",
        "ChatCompletions": "portkey_ai.api_resources.types.chat_complete_type:ChatCompletions",
    },
    "The portkey backend",
    "portkey",
    "portkey-ai",
)


def __getattr__(name: str) -> Any:  # the SDK's names, imported on first access
    return _SDK.resolve(name)


API_KEY_ENV = "PORTKEY_API_KEY"
DEFAULT_BASE_URL = "https://api.portkey.ai/v1"  # as rlms
_DEFAULTS = EnvDefaults(globals(), {})


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
        portkey, async_portkey = _SDK.get("Portkey"), _SDK.get("AsyncPortkey")
        api_key = require_key(api_key, _DEFAULTS, "portkey", "Portkey", API_KEY_ENV)
        model_name = require_model(model_name, "Portkey")
        super().__init__(
            model_name=model_name, timeout=timeout, sampling_args=sampling_args, **kwargs
        )
        self.base_url = base_url or DEFAULT_BASE_URL
        self.retry_policy = retry_policy or RetryPolicy(max_retries=max_retries)
        self._errors = _SDK.original("portkey_ai").openai  # the vendored SDK chat calls use
        self._where = f"Portkey at {self.base_url}"
        # ``timeout`` as rlms passes it (the SDK forwards it as a Portkey header); the HTTP
        # timeout itself is set per request, in ``_request``.
        self._sdk_kwargs: dict[str, Any] = {
            "api_key": api_key,
            "base_url": self.base_url,
            "timeout": timeout,
        }
        for name, value in (
            ("virtual_key", virtual_key),
            ("config", config),
            ("provider", provider),
        ):
            if value is not None:
                self._sdk_kwargs[name] = value
        self._secret = api_key
        # Shared by every client of the process (the async ones per event loop); the
        # sync client is never closed here (as it always was), async ones die with
        # their loops.
        self._sdk_clients = SDKClients(
            portkey,
            async_portkey,
            self._sdk_kwargs,
            "portkey_ai",
            finish=_without_sdk_retries,
            close_sync=False,
        )

    def _request(self, prompt: Prompt, model: str) -> dict[str, Any]:
        # Portkey's create() forwards unknown keywords in the JSON body itself.
        args = {k: v for k, v in self.sampling_args.items() if v is not None}
        return {"timeout": self.timeout, **args, "model": model, "messages": to_messages(prompt)}
