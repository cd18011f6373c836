"""Azure OpenAI client through the ``openai`` SDK's ``AzureOpenAI`` (``rlmx[openai]``).

Azure speaks the OpenAI chat-completions wire, so prompts, responses and errors go
through the same helpers as ``rlm.clients.openai``; only the endpoint, the key header
and the deployment-based URL differ, and the SDK handles those.

As in ``rlms``, the module attribute ``openai`` is the SDK (imported on first access, so
``patch("rlm.clients.azure_openai.openai.AzureOpenAI")`` works) and
``DEFAULT_AZURE_OPENAI_API_KEY`` is the key read at import.
"""

from __future__ import annotations

import os
from typing import Any

from rlm.base.errors import ConfigurationError
from rlm.base.types import Prompt
from rlm.clients.async_pool import SDKClients
from rlm.clients.base_lm import DEFAULT_TIMEOUT
from rlm.clients.compat import APIKeyRequiredError, EnvDefaults, LazySDK
from rlm.clients.openai import (
    HTTP_CLIENTS,
    ChatCompletionsLM,
    create_params,
    request_args,
    to_messages,
)
from rlm.clients.retry import RetryPolicy

_SDK = LazySDK(globals(), {"openai": "openai"}, "The azure_openai backend", "openai")


def __getattr__(name: str) -> Any:  # ``openai``: the SDK, imported on first access
    return _SDK.resolve(name)


API_KEY_ENV = "AZURE_OPENAI_API_KEY"
DEFAULT_AZURE_OPENAI_API_KEY: str | None = os.getenv(API_KEY_ENV)  # see EnvDefaults
_DEFAULTS = EnvDefaults(globals(), {"DEFAULT_AZURE_OPENAI_API_KEY": API_KEY_ENV})
ENDPOINT_ENV = "AZURE_OPENAI_ENDPOINT"
API_VERSION_ENV = "AZURE_OPENAI_API_VERSION"
DEPLOYMENT_ENV = "AZURE_OPENAI_DEPLOYMENT"
DEFAULT_API_VERSION = "2024-02-01"  # as rlms


class AzureOpenAIClient(ChatCompletionsLM):
    """Chat completions on an Azure OpenAI deployment."""

    _raw_replies = True

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
        sdk = _SDK.get("openai")  # the module attribute, so a patch of it is used
        api_key = api_key or _DEFAULTS.value("DEFAULT_AZURE_OPENAI_API_KEY")
        if not (api_key or azure_ad_token or azure_ad_token_provider):
            raise APIKeyRequiredError("azure_openai", API_KEY_ENV, "Azure OpenAI")
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
        self._errors = _SDK.original("openai")  # the SDK's own exception classes
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
        self._secret = api_key
        # Shared by every client of the process (the async ones per event loop); close()
        # leaves async clients built for this client to die with their loops.
        self._sdk_clients = SDKClients(
            sdk.AzureOpenAI, sdk.AsyncAzureOpenAI, self._sdk_kwargs, "openai", http=HTTP_CLIENTS
        )
        self._args = request_args(self.sampling_args, create_params(self.client.chat.completions))

    def _request(self, prompt: Prompt, model: str) -> dict[str, Any]:
        return {**self._args, "model": model, "messages": to_messages(prompt)}
