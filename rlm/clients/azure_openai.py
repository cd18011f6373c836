"""Azure OpenAI client through the ``openai`` SDK's ``AzureOpenAI`` (``rlmx[openai]``).

Azure speaks the OpenAI chat-completions wire, so prompts, responses and errors go
through the same helpers as ``rlm.clients.openai``; only the endpoint, the key header
and the deployment-based URL differ, and the SDK handles those.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import threading
import weakref
from typing import Any

from rlm.clients.base_lm import DEFAULT_TIMEOUT, LMResult, TrackedLM
from rlm.clients.openai import parse_response, to_messages, translate_errors
from rlm.clients.retry import RetryPolicy, acall_with_retries, call_with_retries
from rlm.core.types import Prompt
from rlm.utils.exceptions import ConfigurationError, MissingAPIKeyError, MissingExtraError

API_KEY_ENV = "AZURE_OPENAI_API_KEY"
ENDPOINT_ENV = "AZURE_OPENAI_ENDPOINT"
API_VERSION_ENV = "AZURE_OPENAI_API_VERSION"
DEPLOYMENT_ENV = "AZURE_OPENAI_DEPLOYMENT"
DEFAULT_API_VERSION = "2024-02-01"  # as rlms


def _load_sdk() -> Any:
    try:
        return importlib.import_module("openai")
    except ImportError:
        raise MissingExtraError("The azure_openai backend", "openai", "openai") from None


def request_args(sampling_args: dict[str, Any], create_params: frozenset[str]) -> dict[str, Any]:
    """Sampling args the SDK names as keywords; the rest (server knobs) in ``extra_body``."""
    args = {k: v for k, v in sampling_args.items() if v is not None}
    extra_body = dict(args.pop("extra_body", None) or {})
    for key in [k for k in args if k not in create_params]:
        extra_body[key] = args.pop(key)
    if extra_body:
        args["extra_body"] = extra_body
    return args


class AzureOpenAIClient(TrackedLM):
    """Chat completions on an Azure OpenAI deployment."""

    def __init__(
        self,
        api_key: str | None = None,
        model_name: str | None = None,
        azure_endpoint: str | None = None,
        api_version: str | None = None,
        azure_deployment: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        sampling_args: dict[str, Any] | None = None,
        max_retries: int = 4,
        azure_ad_token: str | None = None,
        azure_ad_token_provider: Any = None,
        default_headers: dict[str, str] | None = None,
        retry_policy: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        sdk = _load_sdk()
        api_key = api_key or os.environ.get(API_KEY_ENV)
        if not (api_key or azure_ad_token or azure_ad_token_provider):
            raise MissingAPIKeyError("azure_openai", API_KEY_ENV)
        azure_endpoint = azure_endpoint or os.environ.get(ENDPOINT_ENV)
        if not azure_endpoint:
            raise ConfigurationError(
                f"The 'azure_openai' backend needs an endpoint: set the {ENDPOINT_ENV} "
                "environment variable or pass azure_endpoint in backend_kwargs."
            )
        azure_deployment = azure_deployment or os.environ.get(DEPLOYMENT_ENV)
        model = model_name or azure_deployment
        if not model:
            raise ConfigurationError(
                "The 'azure_openai' backend needs model_name or azure_deployment "
                f"(or the {DEPLOYMENT_ENV} environment variable)."
            )
        super().__init__(model_name=model, timeout=timeout, sampling_args=sampling_args, **kwargs)
        self.azure_endpoint = azure_endpoint
        self.azure_deployment = azure_deployment
        self.api_version = api_version or os.environ.get(API_VERSION_ENV, DEFAULT_API_VERSION)
        self.retry_policy = retry_policy or RetryPolicy(max_retries=max_retries)
        self._sdk = sdk
        self._where = f"Azure OpenAI at {azure_endpoint}"
        self._sdk_kwargs: dict[str, Any] = {
            "api_key": api_key,
            "azure_endpoint": azure_endpoint,
            "azure_deployment": azure_deployment,
            "api_version": self.api_version,
            "azure_ad_token": azure_ad_token,
            "azure_ad_token_provider": azure_ad_token_provider,
            "default_headers": default_headers,
            "timeout": timeout,
            "max_retries": 0,  # retried by rlm.clients.retry instead
        }
        self.client = sdk.AzureOpenAI(**self._sdk_kwargs)
        # Pooled async connections belong to the loop that opened them: one client per loop.
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        create_params = inspect.signature(self.client.chat.completions.create).parameters
        self._args = request_args(self.sampling_args, frozenset(create_params))

    def _async_client(self) -> Any:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._async_clients.get(loop)
            if client is None:
                client = self._async_clients[loop] = self._sdk.AsyncAzureOpenAI(**self._sdk_kwargs)
            return client

    def _call(self, prompt: Prompt, model: str) -> LMResult:
        request = {**self._args, "model": model, "messages": to_messages(prompt)}

        def attempt() -> Any:
            with translate_errors(self._sdk, self._where, self.timeout):
                return self.client.chat.completions.create(**request)

        return parse_response(call_with_retries(attempt, self.retry_policy), model)

    async def _acall(self, prompt: Prompt, model: str) -> LMResult:
        request = {**self._args, "model": model, "messages": to_messages(prompt)}
        client = self._async_client()

        async def attempt() -> Any:
            with translate_errors(self._sdk, self._where, self.timeout):
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
        # Async clients die with their loops; only the sync pool is ours to close here.
        self.client.close()
        with self._lock:
            self._async_clients.clear()
