"""Portkey AI gateway client through ``portkey-ai`` (``pip install 'rlmx[portkey]'``).

Portkey speaks the OpenAI chat-completions wire (its SDK wraps a vendored ``openai``),
so prompts, responses and errors go through the helpers of ``rlm.clients.openai``.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import threading
import weakref
from typing import Any

from rlm.clients.base_lm import DEFAULT_TIMEOUT, LMResult, TrackedLM
from rlm.clients.openai import parse_response, to_messages, translate_errors
from rlm.clients.retry import RetryPolicy, acall_with_retries, call_with_retries
from rlm.core.types import Prompt
from rlm.utils.exceptions import ConfigurationError, MissingAPIKeyError, MissingExtraError

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


class PortkeyClient(TrackedLM):
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
        api_key = api_key or os.environ.get(API_KEY_ENV)
        if not api_key:
            raise MissingAPIKeyError("portkey", API_KEY_ENV)
        if not model_name:
            raise ConfigurationError(
                "The Portkey client needs a model: pass model_name in backend_kwargs."
            )
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
        # Pooled async connections belong to the loop that opened them: one client per loop.
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def _request(self, prompt: Prompt, model: str) -> dict[str, Any]:
        # Portkey's create() forwards unknown keywords in the JSON body itself.
        args = {k: v for k, v in self.sampling_args.items() if v is not None}
        return {"timeout": self.timeout, **args, "model": model, "messages": to_messages(prompt)}

    def _async_client(self) -> Any:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._async_clients.get(loop)
            if client is None:
                client = _without_sdk_retries(self._sdk.AsyncPortkey(**self._sdk_kwargs))
                self._async_clients[loop] = client
            return client

    def _call(self, prompt: Prompt, model: str) -> LMResult:
        request = self._request(prompt, model)

        def attempt() -> Any:
            with translate_errors(self._errors, self._where, self.timeout):
                return self.client.chat.completions.create(**request)

        return parse_response(call_with_retries(attempt, self.retry_policy), model)

    async def _acall(self, prompt: Prompt, model: str) -> LMResult:
        request = self._request(prompt, model)
        client = self._async_client()

        async def attempt() -> Any:
            with translate_errors(self._errors, self._where, self.timeout):
                return await client.chat.completions.create(**request)

        return parse_response(await acall_with_retries(attempt, self.retry_policy), model)

    def _complete(self, prompt: Prompt) -> LMResult:
        return self._call(prompt, self.model_name)

    async def _acomplete(self, prompt: Prompt) -> LMResult:
        return await self._acall(prompt, self.model_name)

    # ``rlms`` lets a call name another model; its usage is recorded under that name.
    def completion(self, prompt: Prompt, model: str | None = None) -> str:
        if not model or model == self.model_name:
            return super().completion(prompt)
        result = self._call(prompt, model)
        self._usage.record(result.model, result.usage)
        return result.text

    async def acompletion(self, prompt: Prompt, model: str | None = None) -> str:
        if not model or model == self.model_name:
            return await super().acompletion(prompt)
        result = await self._acall(prompt, model)
        self._usage.record(result.model, result.usage)
        return result.text

    def close(self) -> None:
        with self._lock:
            self._async_clients.clear()
