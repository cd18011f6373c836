"""OpenAI chat completions, and every server that speaks the same API.

One client serves OpenAI, vLLM, OpenRouter, Vercel AI Gateway, llama.cpp servers and
other compatible endpoints; the registry only changes ``base_url`` and ``api_key_env``.

The ``openai`` SDK is an optional extra: the module attribute ``openai`` imports it on
first access (``rlm.clients.compat.LazySDK``), so this module imports cleanly without it,
and clients build their SDK clients through that attribute, so that
``patch("rlm.clients.openai.openai.OpenAI")`` works as it does with ``rlms``. The SDK's
own retries are off (``max_retries=0``): its errors are translated once, in
``translate_errors``, and retried by ``rlm.clients.retry`` so every provider backs off
the same way.

As in ``rlms``, a hosted endpoint gets its own key (``https://openrouter.ai/api/v1``
reads ``OPENROUTER_API_KEY``), and Prime Intellect's inference endpoint
(``DEFAULT_PRIME_INTELLECT_BASE_URL``) gets ``PRIME_API_KEY`` and is asked to report
usage (``extra_body={"usage": {"include": True}}``).
"""

from __future__ import annotations

import inspect
import os
from abc import abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any
from urllib.parse import urlparse

from rlm.base.errors import ConfigurationError, ProviderConnectionError, ProviderError
from rlm.base.types import ModelUsageSummary, Prompt
from rlm.clients.async_pool import PerLoop
from rlm.clients.base_lm import DEFAULT_TIMEOUT, LMResult, ProviderLM, require_model
from rlm.clients.compat import APIKeyRequiredError, EnvDefaults, LazySDK, as_count, as_number
from rlm.clients.pricing import estimate_cost
from rlm.clients.retry import RetryPolicy, http_error, parse_retry_after

_SDK = LazySDK(globals(), {"openai": "openai"}, "The openai backend", "openai")


def __getattr__(name: str) -> Any:  # ``openai``: the SDK, imported on first access
    return _SDK.resolve(name)


# The keys rlms reads at import; a reassigned constant wins over the environment.
DEFAULT_OPENAI_API_KEY: str | None = os.getenv("OPENAI_API_KEY")
DEFAULT_OPENROUTER_API_KEY: str | None = os.getenv("OPENROUTER_API_KEY")
DEFAULT_VERCEL_API_KEY: str | None = os.getenv("AI_GATEWAY_API_KEY")
DEFAULT_PRIME_API_KEY: str | None = os.getenv("PRIME_API_KEY")
DEFAULT_PRIME_INTELLECT_BASE_URL = "https://api.pinference.ai/api/v1/"
_DEFAULTS = EnvDefaults(
    globals(),
    {
        "DEFAULT_OPENAI_API_KEY": "OPENAI_API_KEY",
        "DEFAULT_OPENROUTER_API_KEY": "OPENROUTER_API_KEY",
        "DEFAULT_VERCEL_API_KEY": "AI_GATEWAY_API_KEY",
        "DEFAULT_PRIME_API_KEY": "PRIME_API_KEY",
    },
)
DEFAULT_KEY_ENV = "OPENAI_API_KEY"

# Sent to servers that need no key (vLLM, llama.cpp...): the SDK refuses an empty one.
PLACEHOLDER_API_KEY = "not-needed"

# Hosted endpoints that always need a real key: host suffix -> (backend, its env var).
_HOSTED: dict[str, tuple[str, str]] = {
    "openai.com": ("openai", "OPENAI_API_KEY"),
    "openrouter.ai": ("openrouter", "OPENROUTER_API_KEY"),
    "vercel.sh": ("vercel", "AI_GATEWAY_API_KEY"),
    "pinference.ai": ("prime", "PRIME_API_KEY"),  # Prime Intellect inference
}

# SDK constructor arguments the client sets itself; other SDK arguments pass through.
_OWN_SDK_ARGS = frozenset(
    {"self", "api_key", "base_url", "timeout", "max_retries", "default_headers", "http_client"}
)


def _hosted_endpoint(base_url: str | None) -> tuple[str, str] | None:
    """(backend, env var) when ``base_url`` is a hosted API, else ``None``."""
    if base_url is None:  # the SDK's default is api.openai.com
        return _HOSTED["openai.com"]
    host = (urlparse(base_url).hostname or "").lower()
    for suffix, info in _HOSTED.items():
        if host == suffix or host.endswith("." + suffix):
            return info
    return None


def key_env_for(api_key_env: str | None, base_url: str | None) -> str | None:
    """The variable holding the key: a hosted endpoint's own, unless another was named.

    Left at its default (``OPENAI_API_KEY``), ``api_key_env`` follows ``base_url`` as in
    ``rlms``: OpenRouter reads ``OPENROUTER_API_KEY``, Prime Intellect ``PRIME_API_KEY``.
    """
    hosted = _hosted_endpoint(base_url)
    if api_key_env == DEFAULT_KEY_ENV and hosted is not None:
        return hosted[1]
    return api_key_env


def resolve_api_key(api_key: str | None, api_key_env: str | None, base_url: str | None) -> str:
    """The explicit key, else the environment's; a placeholder for self-hosted servers.

    A local server never receives a key from another provider's variable (no silent
    fallback to OPENAI_API_KEY), and a hosted API without a key fails here, not at the
    first call. Variables mirrored by a ``DEFAULT_*_API_KEY`` constant are read through
    it (``EnvDefaults``).
    """
    if api_key:
        return api_key
    env_var = key_env_for(api_key_env, base_url)
    key = _DEFAULTS.for_env(env_var) if env_var else None
    if key:
        return key
    hosted = _hosted_endpoint(base_url)
    if hosted is None:
        return PLACEHOLDER_API_KEY
    backend, default_env = hosted
    raise APIKeyRequiredError(backend, env_var or default_env)


def to_messages(prompt: Prompt) -> list[dict[str, Any]]:
    """A string, one message or a message list, as a chat message list."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, dict) and "role" in prompt:
        return [dict(prompt)]
    if isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt):
        return list(prompt)
    raise ConfigurationError(
        f"Invalid prompt type {type(prompt).__name__}: expected a string, a message dict "
        "with a 'role', or a list of message dicts."
    )


# ---------------------------------------------------------------------------
# Error translation: the one place SDK exceptions become rlmx errors
# ---------------------------------------------------------------------------


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def _retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    if not headers:
        return None
    millis = headers.get("retry-after-ms")  # OpenAI's finer-grained hint wins
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    return parse_retry_after(headers.get("retry-after"))


def _provider_message(exc: Any) -> str:
    """The provider's own words (``{"error": {"message": ...}}`` and the usual variants)."""
    body = getattr(exc, "body", None)
    for _ in range(2):  # the SDK may or may not have unwrapped "error" already
        if isinstance(body, Mapping):
            inner = body.get("error", body.get("message", body.get("detail")))
            if inner is None:
                break
            body = inner
    if isinstance(body, str) and body:
        return body
    return str(getattr(exc, "message", None) or exc)


def _status_error(exc: Any, where: str) -> ProviderError:
    status = int(exc.status_code)
    response = getattr(exc, "response", None)
    retry_after = _retry_after_seconds(getattr(response, "headers", None))
    message = f"{where} returned HTTP {status}: {_provider_message(exc)}"
    return http_error(status, message, retry_after)


@contextmanager
def translate_errors(sdk: Any, where: str, timeout: float) -> Iterator[None]:
    """Re-raise the SDK's exceptions as the rlmx error tree (``where`` names the server)."""
    try:
        yield
    except sdk.APITimeoutError as exc:
        raise ProviderConnectionError(f"{where} did not answer within {timeout}s") from exc
    except sdk.APIConnectionError as exc:
        cause = exc.__cause__ or exc
        raise ProviderConnectionError(f"Could not reach {where}: {cause}") from exc
    except sdk.APIStatusError as exc:
        raise _status_error(exc, where) from exc
    except sdk.OpenAIError as exc:  # malformed responses and the like: retrying won't help
        raise ProviderError(f"{where}: {exc}", retryable=False) from exc


# ---------------------------------------------------------------------------
# Response parsing
# ---------------------------------------------------------------------------


def _reported_cost(usage: Any) -> float | None:
    """Cost in USD as reported by OpenRouter / LiteLLM-style servers, if any."""
    extra = getattr(usage, "model_extra", None)
    extra = extra if isinstance(extra, Mapping) else {}
    cost = as_number(_field(usage, "cost"))
    if cost is None:
        cost = as_number(extra.get("cost"))
    if not cost:  # BYOK on OpenRouter reports 0 here and the real cost upstream
        details = _field(usage, "cost_details") or extra.get("cost_details")
        upstream = as_number(_field(details, "upstream_inference_cost")) if details else None
        cost = upstream if upstream else cost
    return cost


def usage_of(usage: Any, model: str) -> ModelUsageSummary:
    """One call's usage from ``response.usage`` (missing fields count as 0)."""
    if usage is None:
        return ModelUsageSummary(total_calls=1)
    tokens_in = as_count(_field(usage, "prompt_tokens"))
    tokens_out = as_count(_field(usage, "completion_tokens"))
    details = _field(usage, "prompt_tokens_details")
    cached = as_number(_field(details, "cached_tokens")) if details is not None else None
    cost = _reported_cost(usage)
    if cost is None:
        cost = estimate_cost(model, tokens_in, tokens_out)
    return ModelUsageSummary(
        total_calls=1,
        total_input_tokens=tokens_in,
        total_output_tokens=tokens_out,
        total_cost=cost,
        cache_read_tokens=int(cached) if cached is not None else None,
    )


def parse_response(response: Any, model: str) -> LMResult:
    """Text and usage of a chat completion; no choices or no content gives ``""``."""
    choices = getattr(response, "choices", None) or []
    message = getattr(choices[0], "message", None) if choices else None
    text = getattr(message, "content", None) or ""
    return LMResult(
        text=text if isinstance(text, str) else str(text),
        model=model,
        usage=usage_of(getattr(response, "usage", None), model),
    )


def request_args(
    sampling_args: dict[str, Any], create_params: frozenset[str], *, official: bool = False
) -> dict[str, Any]:
    """Sampling args the SDK names as keywords; the rest (server knobs) in ``extra_body``.

    ``official``: the endpoint is OpenAI's own, whose reasoning models reject
    ``max_tokens`` (other servers may only know it), so it is sent under its new name.
    """
    args = {k: v for k, v in sampling_args.items() if v is not None}
    if official and "max_tokens" in args and "max_completion_tokens" not in args:
        args["max_completion_tokens"] = args.pop("max_tokens")
    # Server-specific knobs (vLLM's top_k, min_p...) travel in the JSON body.
    extra_body = dict(args.pop("extra_body", None) or {})
    for key in [k for k in args if k not in create_params]:
        extra_body[key] = args.pop(key)
    if extra_body:
        args["extra_body"] = extra_body
    return args


# ---------------------------------------------------------------------------
# The clients
# ---------------------------------------------------------------------------


class ChatCompletionsLM(ProviderLM):
    """Base of the clients whose SDK is OpenAI's or shaped like it (Azure, Portkey).

    Subclasses set ``client`` and ``async_client`` (the SDK clients, both built at init as
    in ``rlms``), ``_errors`` (the module whose exception classes the chat calls raise),
    ``_where`` (the server, for messages) and ``_async_clients`` (a ``PerLoop`` whose
    ``first`` is ``async_client``, so each later event loop gets a client of its own), and
    implement ``_request`` and ``_new_async_client``.
    """

    client: Any
    async_client: Any
    _errors: Any
    _where: str
    _async_clients: PerLoop[Any]

    @abstractmethod
    def _new_async_client(self) -> Any:
        """A fresh async SDK client (one is made per event loop)."""

    def _send(self, request: dict[str, Any]) -> Any:
        return self.client.chat.completions.create(**request)

    async def _asend(self, request: dict[str, Any]) -> Any:
        client = self._async_clients.get(self._new_async_client)
        return await client.chat.completions.create(**request)

    def _translate_errors(self) -> AbstractContextManager[None]:
        return translate_errors(self._errors, self._where, self.timeout)

    def _parse(self, response: Any, model: str) -> LMResult:
        return parse_response(response, model)

    def close(self) -> None:
        """Close the sync client and let go of the async ones (``PerLoop.close_all``)."""
        self.client.close()
        self._async_clients.close_all()


class OpenAIClient(ChatCompletionsLM):
    """Chat completions through the official ``openai`` SDK (``pip install 'rlmx[openai]'``)."""

    def __init__(
        self,
        api_key: str | None = None,
        model_name: str | None = None,
        base_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        sampling_args: dict[str, Any] | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        max_retries: int = 4,
        default_headers: dict[str, str] | None = None,
        retry_policy: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        sdk = _SDK.get("openai")  # the module attribute, so a patch of it is used
        model_name = require_model(model_name, "OpenAI", example="gpt-5-nano")
        try:
            sdk_args = set(inspect.signature(sdk.OpenAI).parameters) - _OWN_SDK_ARGS
        except (TypeError, ValueError):  # no signature to read (a stand-in class)
            sdk_args = set()
        passthrough = {k: kwargs.pop(k) for k in list(kwargs) if k in sdk_args and k[0] != "_"}
        super().__init__(
            model_name=model_name, timeout=timeout, sampling_args=sampling_args, **kwargs
        )
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.retry_policy = retry_policy or RetryPolicy(max_retries=max_retries)
        self._sdk = sdk
        self._errors = _SDK.original("openai")  # the SDK's own exception classes
        # Where requests really go: the SDK itself falls back to OPENAI_BASE_URL.
        endpoint = base_url or os.environ.get("OPENAI_BASE_URL") or None
        hosted = _hosted_endpoint(endpoint)
        self._official = hosted == _HOSTED["openai.com"]
        self._prime = hosted == _HOSTED["pinference.ai"]  # asked to report usage, as in rlms
        self.reports_cost = hosted == _HOSTED["openrouter.ai"]  # usage.cost on every reply
        self._where = endpoint or "api.openai.com"
        self._sdk_kwargs: dict[str, Any] = {
            "api_key": resolve_api_key(api_key, api_key_env, endpoint),
            "base_url": base_url,
            "timeout": timeout,
            "max_retries": 0,
            "default_headers": default_headers,
            **passthrough,
        }
        self.client = sdk.OpenAI(**self._sdk_kwargs)
        self.async_client = sdk.AsyncOpenAI(**self._sdk_kwargs)
        # Async clients whose loop still runs are closed on it by close().
        self._async_clients = PerLoop(
            aclose=lambda client: client.close(), first=lambda: self.async_client
        )
        self._create_params = frozenset(
            inspect.signature(self.client.chat.completions.create).parameters
        )

    def _new_async_client(self) -> Any:
        return self._sdk.AsyncOpenAI(**self._sdk_kwargs)

    def _request(self, prompt: Prompt, model: str) -> dict[str, Any]:
        args = request_args(self.sampling_args, self._create_params, official=self._official)
        if self._prime:  # the caller's own extra_body wins, as in rlms
            args["extra_body"] = {"usage": {"include": True}, **args.get("extra_body", {})}
        return {**args, "model": model, "messages": to_messages(prompt)}
