"""OpenAI chat completions, and every server that speaks the same API.

One client serves OpenAI, vLLM, OpenRouter, Vercel AI Gateway, llama.cpp servers and
other compatible endpoints; the registry only changes ``base_url`` and ``api_key_env``.

The ``openai`` SDK is an optional extra, imported when a client is built, so this module
imports cleanly without it. The SDK's own retries are off (``max_retries=0``): its errors
are translated once, in ``translate_errors``, and retried by ``rlm.clients.retry`` so
every provider backs off the same way.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import urlparse

from rlm.clients.base_lm import DEFAULT_TIMEOUT, LMResult, TrackedLM
from rlm.clients.pricing import estimate_cost
from rlm.clients.retry import RetryPolicy, acall_with_retries, call_with_retries, parse_retry_after
from rlm.core.types import ModelUsageSummary, Prompt
from rlm.utils.exceptions import (
    ConfigurationError,
    MissingAPIKeyError,
    MissingExtraError,
    ProviderConnectionError,
    ProviderError,
    RateLimitError,
)

# Sent to servers that need no key (vLLM, llama.cpp...): the SDK refuses an empty one.
PLACEHOLDER_API_KEY = "not-needed"

# Hosted endpoints that always need a real key: host suffix -> (backend, its env var).
_HOSTED: dict[str, tuple[str, str]] = {
    "openai.com": ("openai", "OPENAI_API_KEY"),
    "openrouter.ai": ("openrouter", "OPENROUTER_API_KEY"),
    "vercel.sh": ("vercel", "AI_GATEWAY_API_KEY"),
}

# Statuses below 500 that are worth another try (timeout, conflict) besides 429.
_RETRYABLE_4XX = frozenset({408, 409})

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


def resolve_api_key(api_key: str | None, api_key_env: str | None, base_url: str | None) -> str:
    """The explicit key, else the environment's; a placeholder for self-hosted servers.

    A local server never receives a key from another provider's variable (no silent
    fallback to OPENAI_API_KEY), and a hosted API without a key fails here, not at the
    first call.
    """
    if api_key:
        return api_key
    if api_key_env and os.environ.get(api_key_env):
        return os.environ[api_key_env]
    hosted = _hosted_endpoint(base_url)
    if hosted is None:
        return PLACEHOLDER_API_KEY
    backend, default_env = hosted
    raise MissingAPIKeyError(backend, api_key_env or default_env)


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
    if status == 429:
        return RateLimitError(message, retry_after=retry_after)
    retryable = status >= 500 or status in _RETRYABLE_4XX
    return ProviderError(message, status=status, retry_after=retry_after, retryable=retryable)


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
    extra = getattr(usage, "model_extra", None) or {}
    cost = _field(usage, "cost")
    if cost is None:
        cost = extra.get("cost")
    if not cost:  # BYOK on OpenRouter reports 0 here and the real cost upstream
        details = _field(usage, "cost_details") or extra.get("cost_details")
        upstream = _field(details, "upstream_inference_cost") if details else None
        cost = upstream if upstream else cost
    try:
        return None if cost is None else float(cost)
    except (TypeError, ValueError):
        return None


def usage_of(usage: Any, model: str) -> ModelUsageSummary:
    """One call's usage from ``response.usage`` (missing fields count as 0)."""
    if usage is None:
        return ModelUsageSummary(total_calls=1)
    tokens_in = int(_field(usage, "prompt_tokens") or 0)
    tokens_out = int(_field(usage, "completion_tokens") or 0)
    details = _field(usage, "prompt_tokens_details")
    cached = _field(details, "cached_tokens") if details is not None else None
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


def _sleep(seconds: float) -> None:
    time.sleep(seconds)  # looked up per call so tests can patch time.sleep


async def _asleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


# ---------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------


class OpenAIClient(TrackedLM):
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
        try:
            sdk = importlib.import_module("openai")
        except ImportError:
            raise MissingExtraError("The openai backend", "openai", "openai") from None
        if not model_name:
            raise ConfigurationError(
                "The OpenAI client needs a model: pass model_name in backend_kwargs "
                "(for example backend_kwargs={'model_name': 'gpt-5-nano'})."
            )
        sdk_args = set(inspect.signature(sdk.OpenAI.__init__).parameters) - _OWN_SDK_ARGS
        passthrough = {k: kwargs.pop(k) for k in list(kwargs) if k in sdk_args and k[0] != "_"}
        super().__init__(
            model_name=model_name, timeout=timeout, sampling_args=sampling_args, **kwargs
        )
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.retry_policy = retry_policy or RetryPolicy(max_retries=max_retries)
        self._sdk = sdk
        self._official = base_url is None or _hosted_endpoint(base_url) == _HOSTED["openai.com"]
        self._where = base_url or "api.openai.com"
        self._sdk_kwargs: dict[str, Any] = {
            "api_key": resolve_api_key(api_key, api_key_env, base_url),
            "base_url": base_url,
            "timeout": timeout,
            "max_retries": 0,
            "default_headers": default_headers,
            **passthrough,
        }
        self.client = sdk.OpenAI(**self._sdk_kwargs)
        # One async client per event loop: pooled connections belong to the loop that
        # opened them, and callers may use several loops (asyncio.run per batch).
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self._create_params = frozenset(
            inspect.signature(self.client.chat.completions.create).parameters
        )

    # -- requests -----------------------------------------------------------------

    def _request(self, prompt: Prompt, model: str) -> dict[str, Any]:
        args = {k: v for k, v in self.sampling_args.items() if v is not None}
        # OpenAI's reasoning models reject max_tokens; other servers may only know it.
        if self._official and "max_tokens" in args and "max_completion_tokens" not in args:
            args["max_completion_tokens"] = args.pop("max_tokens")
        # Server-specific knobs (vLLM's top_k, min_p...) travel in the JSON body.
        extra_body = dict(args.pop("extra_body", None) or {})
        for key in [k for k in args if k not in self._create_params]:
            extra_body[key] = args.pop(key)
        if extra_body:
            args["extra_body"] = extra_body
        return {**args, "model": model, "messages": to_messages(prompt)}

    def _async_client(self) -> Any:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._async_clients.get(loop)
            if client is None:
                client = self._sdk.AsyncOpenAI(**self._sdk_kwargs)
                self._async_clients[loop] = client
            return client

    def _call(self, prompt: Prompt, model: str) -> LMResult:
        request = self._request(prompt, model)

        def attempt() -> Any:
            with translate_errors(self._sdk, self._where, self.timeout):
                return self.client.chat.completions.create(**request)

        return parse_response(call_with_retries(attempt, self.retry_policy, _sleep), model)

    async def _acall(self, prompt: Prompt, model: str) -> LMResult:
        request = self._request(prompt, model)
        client = self._async_client()

        async def attempt() -> Any:
            with translate_errors(self._sdk, self._where, self.timeout):
                return await client.chat.completions.create(**request)

        response = await acall_with_retries(attempt, self.retry_policy, _asleep)
        return parse_response(response, model)

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

    # -- lifecycle ------------------------------------------------------------------

    def close(self) -> None:
        """Close the sync client and every async client whose loop can still run it."""
        self.client.close()
        with self._lock:
            pending = list(self._async_clients.items())
            self._async_clients.clear()
        for loop, client in pending:
            # Best effort: an async client's connections die with its loop anyway.
            with suppress(Exception):
                _close_on_loop(loop, client)


_closing: set[Any] = set()  # keeps fire-and-forget close tasks alive until they finish


def _close_on_loop(loop: asyncio.AbstractEventLoop, client: Any) -> None:
    if loop.is_closed():
        return
    if not loop.is_running():
        loop.run_until_complete(client.close())
        return
    try:
        current = asyncio.get_running_loop()
    except RuntimeError:
        current = None
    if current is loop:
        task = loop.create_task(client.close())
        _closing.add(task)
        task.add_done_callback(_closing.discard)
    else:
        asyncio.run_coroutine_threadsafe(client.close(), loop)
