"""LiteLLM client: any provider LiteLLM routes to (``pip install 'rlmx[litellm]'``).

``model_name`` is a LiteLLM model string such as ``"anthropic/claude-sonnet-4-6"`` or
``"openai/my-model"`` (with ``api_base`` for a self-hosted server). LiteLLM reads each
provider's key from that provider's own environment variable, so this client does not
demand one; a missing key surfaces as the provider's 401.

LiteLLM answers in the OpenAI wire format and raises subclasses of ``openai``'s
exceptions, so responses and errors go through the helpers of ``rlm.clients.openai``.
Its retries are off; ``rlm.clients.retry`` retries instead.

The module attribute ``litellm`` is the SDK, imported on first access, and the client
calls it through that attribute (``patch("rlm.clients.litellm.litellm")`` is used).

Note: importing ``litellm`` fetches its model price map from the network unless
``LITELLM_LOCAL_MODEL_COST_MAP=True`` is set; offline it falls back to a bundled copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any

from rlm.base.json_schema import ResponseSchema
from rlm.base.types import Prompt
from rlm.clients.base_lm import DEFAULT_TIMEOUT, LMResult, ProviderLM, require_model
from rlm.clients.compat import LazySDK
from rlm.clients.openai import parse_response, to_messages, translate_errors
from rlm.clients.retry import RetryPolicy
from rlm.clients.structured import openai_response_format

_SDK = LazySDK(
    globals(), {"litellm": "litellm", "openai": "openai"}, "The litellm backend", "litellm"
)


def __getattr__(name: str) -> Any:  # ``litellm``: the SDK, imported on first access
    return _SDK.resolve(name)


def _load_sdk() -> tuple[Any, Any]:
    """(litellm, openai): LiteLLM through the module attribute, and the errors it raises."""
    return _SDK.get("litellm"), _SDK.original("openai")


def _litellm_cost(litellm: Any, response: Any) -> float | None:
    """LiteLLM's own price for this response, when it knows the model."""
    hidden = getattr(response, "_hidden_params", None)
    cost = hidden.get("response_cost") if isinstance(hidden, Mapping) else None
    if cost is None:
        try:
            cost = litellm.completion_cost(completion_response=response)
        except Exception:  # unknown model: fall back to rlmx's price table
            return None
    try:
        return float(cost) if cost is not None else None
    except (TypeError, ValueError):
        return None


class LiteLLMClient(ProviderLM):
    """Chat completions through ``litellm.completion`` / ``litellm.acompletion``."""

    def __init__(
        self,
        model_name: str | None = None,
        api_key: str | None = None,
        api_base: str | None = None,
        base_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        sampling_args: dict[str, Any] | None = None,
        max_retries: int = 4,
        retry_policy: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        litellm, openai = _load_sdk()
        model_name = require_model(model_name, "LiteLLM", example="anthropic/claude-sonnet-4-6")
        super().__init__(
            model_name=model_name, timeout=timeout, sampling_args=sampling_args, **kwargs
        )
        self.api_base = api_base or base_url
        self.retry_policy = retry_policy or RetryPolicy(max_retries=max_retries)
        # LiteLLM prints a "Give Feedback / Get Help" banner on every error, retried ones
        # included; our errors already carry the provider's message.
        litellm.suppress_debug_info = True
        self._litellm = litellm
        self._errors = openai  # LiteLLM's exceptions subclass openai's
        self._where = f"LiteLLM ({self.api_base or model_name})"
        self._options: dict[str, Any] = {
            "timeout": timeout,
            "num_retries": 0,  # retried by rlm.clients.retry instead
            "max_retries": 0,
        }
        self._secret = api_key
        if api_key:
            self._options["api_key"] = api_key
        if self.api_base:
            self._options["api_base"] = self.api_base

    def _request(self, prompt: Prompt, model: str) -> dict[str, Any]:
        args = {k: v for k, v in self.sampling_args.items() if v is not None}
        return {**self._options, **args, "model": model, "messages": to_messages(prompt)}

    structured_output = True  # ``response_format``, as on OpenAI's wire

    def _with_schema(self, request: dict[str, Any], schema: ResponseSchema) -> dict[str, Any]:
        return {**request, "response_format": openai_response_format(schema)}

    def _send(self, request: dict[str, Any]) -> Any:
        return self._litellm.completion(**request)

    async def _asend(self, request: dict[str, Any]) -> Any:
        return await self._litellm.acompletion(**request)

    def _translate_errors(self) -> AbstractContextManager[None]:
        return translate_errors(self._errors, self._where, self.timeout, self._secret)

    def _parse(self, response: Any, model: str) -> LMResult:
        result = parse_response(response, model, self._where, self._secret)
        cost = _litellm_cost(self._litellm, response)
        if cost is not None:
            result.usage = replace(result.usage, total_cost=cost)
        return result
