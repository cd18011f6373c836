"""OpenAI chat completions, and every server that speaks the same API.

One client serves OpenAI, vLLM, OpenRouter, Vercel AI Gateway, llama.cpp servers and
other compatible endpoints; the registry only changes ``base_url`` and ``api_key_env``.

The ``openai`` SDK is an optional extra: the module attribute ``openai`` imports it on
first access (``rlm.clients.compat.LazySDK``), so this module imports cleanly without it,
and clients build their SDK clients through that attribute, so that
``patch("rlm.clients.openai.openai.OpenAI")`` works as it does with ``rlms``. The SDK's
own SDK clients are shared by every client of the process, per (class, arguments: the
key only as a hash), the async ones per event loop and made on the first async call
(``rlm.clients.async_pool``): a new client costs a dictionary look-up, not two TLS
contexts. The SDK's own retries are off (``max_retries=0``): its errors are translated
once, in ``translate_errors`` (``rlm.clients.openai_wire``), and retried by
``rlm.clients.retry`` so every provider backs off the same way. A 200 that holds no
answer (an HTML page, no choices) is a retryable ``ProviderError``, never ``""``.

As in ``rlms``, a hosted endpoint gets its own key (``https://openrouter.ai/api/v1``
reads ``OPENROUTER_API_KEY``), and Prime Intellect's inference endpoint
(``DEFAULT_PRIME_INTELLECT_BASE_URL``) gets ``PRIME_API_KEY`` and is asked to report
usage (``extra_body={"usage": {"include": True}}``).
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any
from urllib.parse import urlparse

from rlm.base.errors import ConfigurationError
from rlm.base.json_schema import ResponseSchema
from rlm.base.types import Prompt
from rlm.clients.async_pool import SDKClientPair, SDKClients
from rlm.clients.base_lm import DEFAULT_TIMEOUT, LMResult, ProviderLM, require_model
from rlm.clients.compat import APIKeyRequiredError, EnvDefaults, LazySDK
from rlm.clients.openai_wire import Raw as Raw  # re-exported: the wire's names
from rlm.clients.openai_wire import (
    apost_reply,
    araw_reply,
    has_raw_replies,
    post_reply,
    raw_reply,
)
from rlm.clients.openai_wire import parse_response as parse_response
from rlm.clients.openai_wire import translate_errors as translate_errors
from rlm.clients.openai_wire import usage_of as usage_of
from rlm.clients.retry import RetryPolicy
from rlm.clients.structured import openai_response_format
from rlm.clients.window_probe import PROBE_TIMEOUT, probe_window

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

# The SDK's HTTP client classes, built over one shared TLS context (``async_pool``).
HTTP_CLIENTS = ("DefaultHttpxClient", "DefaultAsyncHttpxClient")

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


@functools.lru_cache(maxsize=64)
def _parameters(function: Callable[..., Any]) -> frozenset[str]:
    return frozenset(inspect.signature(function).parameters)


def create_params(completions: Any) -> frozenset[str]:
    """The keyword arguments ``completions.create`` takes (read once per SDK class)."""
    create = getattr(type(completions), "create", None)
    if inspect.isfunction(create):
        return _parameters(create) - {"self"}
    return frozenset(inspect.signature(completions.create).parameters)


def sdk_parameters(cls: Any) -> frozenset[str]:
    """The SDK client constructor's parameters (none for a class without a signature)."""
    try:
        if isinstance(cls, type):
            return _parameters(cls)
        return frozenset(inspect.signature(cls).parameters)  # a Mock: read, not cached
    except (TypeError, ValueError):  # no signature to read (a stand-in class)
        return frozenset()


class ChatCompletionsLM(SDKClientPair, ProviderLM):
    """Base of the clients whose SDK is OpenAI's or shaped like it (Azure, Portkey).

    Subclasses set ``_sdk_clients`` (``rlm.clients.async_pool.SDKClients``: the sync SDK
    client, ``client``, and one async SDK client per event loop, shared by every client
    of the process when they are the SDK's own), ``_errors`` (the module whose exception
    classes the chat calls raise), ``_where`` (the server, for messages), ``_secret``
    (its API key, masked in messages) and ``_raw_replies`` (the SDK's raw-response API
    says what an unreadable body was), and implement ``_request``.
    """

    _sdk_clients: SDKClients
    _errors: Any
    _where: str
    _secret: str | None = None
    _raw_replies: bool = False
    structured_output = True  # ``response_format`` with a JSON Schema

    def _with_schema(self, request: dict[str, Any], schema: ResponseSchema) -> dict[str, Any]:
        """``schema_format`` (a backend kwarg) picks the server's dialect: ``json_schema``
        (OpenAI, vLLM, llama.cpp's llama-server; the default) or ``json_object``
        (llama-cpp-python's server: ``{"type": "json_object", "schema": ...}``)."""
        style = self.kwargs.get("schema_format", "json_schema")
        return {**request, "response_format": openai_response_format(schema, style)}

    # The SDK's own clients go through ``client.post`` (``openai_wire.post_reply``); a
    # stand-in (a test's Mock, a patched class) through ``chat.completions.create``.
    def _send(self, request: dict[str, Any]) -> Any:
        client = self.client
        completions = client.chat.completions
        if self._raw_replies and has_raw_replies(completions):
            reply = post_reply(client, request)
            if reply is not None:
                return reply
            return raw_reply(completions.with_raw_response.create(**request))
        return completions.create(**request)

    async def _asend(self, request: dict[str, Any]) -> Any:
        client = self._sdk_clients.for_loop()
        completions = client.chat.completions
        if self._raw_replies and has_raw_replies(completions):
            reply = await apost_reply(client, request)
            if reply is not None:
                return reply
            return await araw_reply(await completions.with_raw_response.create(**request))
        return await completions.create(**request)

    def _translate_errors(self) -> AbstractContextManager[None]:
        return translate_errors(self._errors, self._where, self.timeout, self._secret)

    def _parse(self, response: Any, model: str) -> LMResult:
        return parse_response(response, model, self._where, self._secret)

    def close(self) -> None:
        """Close this client's own SDK clients; shared ones stay open for the others."""
        self._sdk_clients.close()


class OpenAIClient(ChatCompletionsLM):
    """Chat completions through the official ``openai`` SDK (``pip install 'rlmx[openai]'``)."""

    _raw_replies = True

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
        sdk_args = sdk_parameters(sdk.OpenAI) - _OWN_SDK_ARGS
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
        self._secret = resolve_api_key(api_key, api_key_env, endpoint)
        self._sdk_kwargs: dict[str, Any] = {
            "api_key": self._secret,
            "base_url": base_url,
            "timeout": timeout,
            "max_retries": 0,
            "default_headers": default_headers,
            **passthrough,
        }
        # Shared by every client of the process (the async ones per event loop); when
        # the SDK classes are patched, both are built now, as rlms does, and close()
        # closes the async ones on their loops.
        self._sdk_clients = SDKClients(
            sdk.OpenAI,
            sdk.AsyncOpenAI,
            self._sdk_kwargs,
            "openai",
            http=HTTP_CLIENTS,
            aclose=lambda client: client.close(),
        )
        self._create_params = create_params(self.client.chat.completions)

    def provider_context_window(self) -> int | None:
        """The window the server lists for the model (``rlm.clients.window_probe``);
        OpenAI's own API lists none, so it is not asked."""
        if self._official or self._where == "api.openai.com":
            return None
        timeout = min(self.timeout, PROBE_TIMEOUT)
        return probe_window(self._where, self.model_name, self._secret, timeout)

    def _request(self, prompt: Prompt, model: str) -> dict[str, Any]:
        args = request_args(self.sampling_args, self._create_params, official=self._official)
        if self._prime:  # the caller's own extra_body wins, as in rlms
            args["extra_body"] = {"usage": {"include": True}, **args.get("extra_body", {})}
        return {**args, "model": model, "messages": to_messages(prompt)}
