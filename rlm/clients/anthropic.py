"""Anthropic Messages API client (``pip install 'rlmx[anthropic]'``).

Anthropic has no system role: system messages travel in ``system``, and consecutive
same-role messages are merged because the API wants user and assistant to alternate.

With ``prompt_caching=True`` two ephemeral cache breakpoints mark the stable prefix: the
system prompt and the message just before the newest user turn. Each RLM iteration only
appends to the history, so the next call re-reads everything before its new turn from
the cache instead of paying full price for it again.

The SDK's own retries are off; errors are translated once, in ``_translated``, and
retried by ``rlm.clients.retry`` like every other backend.

As in ``rlms``, the module attribute ``anthropic`` is the SDK (imported on first access,
so ``patch("rlm.clients.anthropic.anthropic.Anthropic")`` works; patched classes are
built with the client, as in ``rlms``). The SDK's own clients are shared by every
client of the process, the async ones per event loop (``rlm.clients.async_pool``). A
200 that holds no text (an HTML page, no content) is a retryable ``ProviderError``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from rlm.base.errors import ProviderConnectionError, ProviderError
from rlm.base.json_schema import ResponseSchema
from rlm.base.types import ModelUsageSummary, Prompt
from rlm.clients.async_pool import SDKClientPair, SDKClients
from rlm.clients.base_lm import DEFAULT_TIMEOUT, LMResult, ProviderLM, require_model
from rlm.clients.compat import EnvDefaults, LazySDK, require_key
from rlm.clients.openai import HTTP_CLIENTS, to_messages
from rlm.clients.openai_wire import Raw, araw_reply, has_raw_replies, raw_reply
from rlm.clients.pricing import estimate_cost, price_of
from rlm.clients.retry import (
    RetryPolicy,
    empty_reply,
    http_error,
    parse_retry_after,
    unreadable_reply,
)
from rlm.clients.structured import anthropic_tool, anthropic_tool_answer
from rlm.clients.vision import anthropic_block

_SDK = LazySDK(globals(), {"anthropic": "anthropic"}, "The anthropic backend", "anthropic")


def __getattr__(name: str) -> Any:  # ``anthropic``: the SDK, imported on first access
    return _SDK.resolve(name)


API_KEY_ENV = "ANTHROPIC_API_KEY"
DEFAULT_ANTHROPIC_API_KEY: str | None = os.getenv(API_KEY_ENV)  # see EnvDefaults
_DEFAULTS = EnvDefaults(globals(), {"DEFAULT_ANTHROPIC_API_KEY": API_KEY_ENV})
_CACHE_CONTROL = {"type": "ephemeral"}
# Anthropic bills cache reads at 0.1x and (5-minute) cache writes at 1.25x the input price.
_CACHE_READ_RATE = 0.1
_CACHE_WRITE_RATE = 1.25
# Request options the SDK takes as keywords. Other sampling args go in the JSON body, whose
# shape is stable, while the SDK's keyword list changes between versions.
_REQUEST_OPTIONS = ("extra_headers", "extra_query", "timeout")


# ---------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------


def _blocks(content: Any) -> list[dict[str, Any]]:
    """Message content as a fresh list of content blocks (the caller's are never mutated)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [_block(b) for b in content]
    return [{"type": "text", "text": "" if content is None else str(content)}]


def _block(part: Any) -> dict[str, Any]:
    if not isinstance(part, dict):
        return {"type": "text", "text": str(part)}
    return anthropic_block(part) or dict(part)  # OpenAI-style image parts: Anthropic's


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(b.get("text", "") for b in _blocks(content) if b.get("type") == "text")


def prepare_messages(prompt: Prompt) -> tuple[list[dict[str, Any]], str | None]:
    """(messages, system): system text pulled out, same-role neighbours merged."""
    system_parts: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in to_messages(prompt):
        role, content = message.get("role"), message.get("content", "")
        if role in ("system", "developer"):
            system_parts.append(_text_of(content))
            continue
        role = "assistant" if role == "assistant" else "user"
        if turns and turns[-1]["role"] == role:
            previous = turns[-1]["content"]
            if isinstance(previous, str) and isinstance(content, str):
                turns[-1]["content"] = f"{previous}\n\n{content}"
            else:
                turns[-1]["content"] = _blocks(previous) + _blocks(content)
        else:
            turns.append(
                {"role": role, "content": content if isinstance(content, str) else _blocks(content)}
            )
    system = "\n\n".join(p for p in system_parts if p) or None
    if not turns:  # the API needs at least one message: a lone system prompt becomes it
        return [{"role": "user", "content": system or ""}], None
    return turns, system


def with_cache_breakpoints(
    messages: list[dict[str, Any]], system: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """Mark the system prompt and the message before the newest user turn as cacheable."""
    system_blocks = (
        [{"type": "text", "text": system, "cache_control": _CACHE_CONTROL}] if system else None
    )
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=0)
    if last_user == 0:  # nothing before the newest turn: the system prompt is the prefix
        return messages, system_blocks
    marked = list(messages)
    prefix = marked[last_user - 1]
    blocks = _blocks(prefix["content"])
    blocks[-1] = {**blocks[-1], "cache_control": _CACHE_CONTROL}
    marked[last_user - 1] = {**prefix, "content": blocks}
    return marked, system_blocks


# ---------------------------------------------------------------------------
# Responses and errors
# ---------------------------------------------------------------------------


def usage_of(usage: Any, model: str) -> ModelUsageSummary:
    """One call's usage. Input counts cached tokens too, so budgets see every token sent."""
    if usage is None:
        return ModelUsageSummary(total_calls=1)
    fresh = int(getattr(usage, "input_tokens", 0) or 0)
    output = int(getattr(usage, "output_tokens", 0) or 0)
    read = getattr(usage, "cache_read_input_tokens", None)
    write = getattr(usage, "cache_creation_input_tokens", None)
    cost = estimate_cost(model, fresh, output)
    price = price_of(model)
    if cost is not None and price is not None:
        cached = (read or 0) * _CACHE_READ_RATE + (write or 0) * _CACHE_WRITE_RATE
        cost += cached * price[0] / 1_000_000
    return ModelUsageSummary(
        total_calls=1,
        total_input_tokens=fresh + (read or 0) + (write or 0),
        total_output_tokens=output,
        total_cost=cost,
        cache_read_tokens=None if read is None else int(read),
        cache_write_tokens=None if write is None else int(write),
    )


def parse_message(
    message: Any, model: str, where: str = "the Anthropic API", secret: str | None = None
) -> LMResult:
    """Text (every text block, concatenated) and usage of a Messages API reply (or of a
    ``Raw`` one). A body that is not a reply, or a reply without text, raises a
    retryable ``ProviderError``: an answer is never made up of nothing."""
    http = None
    if isinstance(message, Raw):
        message, http = message
    if isinstance(message, str | bytes):  # the SDK's way of returning a non-JSON body
        headers = getattr(http, "headers", None)
        content_type = headers.get("content-type") if headers is not None else None
        raise unreadable_reply(where, message, content_type, secret)
    blocks = getattr(message, "content", None)
    texts = [b.text for b in blocks or () if getattr(b, "type", None) == "text"]
    answer = anthropic_tool_answer(blocks)  # a structured-output call answers in a tool
    if answer is not None:
        texts = [answer]
    if not texts:
        reason = getattr(message, "stop_reason", None)
        what = "no text content" + (f" (stop_reason: {reason})" if isinstance(reason, str) else "")
        body = getattr(http, "text", None) if blocks is None else None
        raise empty_reply(where, what, body if isinstance(body, str) else None, secret)
    usage = usage_of(getattr(message, "usage", None), model)
    return LMResult(text="".join(texts), model=model, usage=usage)


def _provider_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    error = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(error, Mapping) and error.get("message"):
        return str(error["message"])
    return str(getattr(exc, "message", None) or exc)


def _status_error(exc: Any, secret: str | None = None) -> ProviderError:
    status = int(exc.status_code)
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    retry_after = parse_retry_after(headers.get("retry-after"))
    message = f"Anthropic API returned HTTP {status}: {_provider_message(exc)}"
    return http_error(status, message, retry_after, secret)


@contextmanager
def _translated(sdk: Any, timeout: float, where: str, secret: str | None) -> Iterator[None]:
    """The one place the SDK's exceptions become rlmx errors."""
    try:
        yield
    except json.JSONDecodeError as exc:  # JSON promised, something else sent
        raise unreadable_reply(where, exc.doc, secret=secret) from exc
    except sdk.APITimeoutError as exc:
        raise ProviderConnectionError(f"Anthropic API did not answer within {timeout}s") from exc
    except sdk.APIConnectionError as exc:
        cause = exc.__cause__ or exc
        raise ProviderConnectionError(f"Could not reach the Anthropic API: {cause}") from exc
    except sdk.APIStatusError as exc:
        raise _status_error(exc, secret) from exc
    except sdk.AnthropicError as exc:  # malformed replies and the like: retrying won't help
        raise ProviderError(f"Anthropic API: {exc}", retryable=False) from exc


# ---------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------


class AnthropicClient(SDKClientPair, ProviderLM):
    """Claude through the official ``anthropic`` SDK."""

    def __init__(
        self,
        api_key: str | None = None,
        model_name: str | None = None,
        max_tokens: int = 32768,
        base_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        sampling_args: dict[str, Any] | None = None,
        max_retries: int = 4,
        prompt_caching: bool = False,
        retry_policy: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        sdk = _SDK.get("anthropic")  # the module attribute, so a patch of it is used
        api_key = require_key(api_key, _DEFAULTS, "anthropic", "Anthropic", API_KEY_ENV)
        model_name = require_model(model_name, "Anthropic", example="claude-sonnet-4-6")
        super().__init__(
            model_name=model_name, timeout=timeout, sampling_args=sampling_args, **kwargs
        )
        self.retry_policy = retry_policy or RetryPolicy(max_retries=max_retries)
        self.max_tokens = max_tokens
        self.base_url = base_url
        self.prompt_caching = prompt_caching
        self._sdk = sdk
        self._errors = _SDK.original("anthropic")  # the SDK's own exception classes
        self._sdk_kwargs: dict[str, Any] = {
            "api_key": api_key,
            "timeout": timeout,
            "max_retries": 0,
        }
        if base_url:
            self._sdk_kwargs["base_url"] = base_url
        self._where = f"the Anthropic API at {base_url}" if base_url else "the Anthropic API"
        # Shared by every client of the process (the async ones per event loop); patched
        # SDK classes are built now, as rlms does. Async clients die with their loops.
        self._sdk_clients = SDKClients(
            sdk.Anthropic, sdk.AsyncAnthropic, self._sdk_kwargs, "anthropic", http=HTTP_CLIENTS
        )

    def _request(self, prompt: Prompt, model: str) -> dict[str, Any]:
        messages, system = prepare_messages(prompt)
        system_param: str | list[dict[str, Any]] | None = system
        if self.prompt_caching:
            messages, system_param = with_cache_breakpoints(messages, system)
        args = {k: v for k, v in self.sampling_args.items() if v is not None}
        request: dict[str, Any] = {
            "model": model,
            "max_tokens": args.pop("max_tokens", self.max_tokens),
            "messages": messages,
        }
        if system_param:
            request["system"] = system_param
        for option in _REQUEST_OPTIONS:
            if option in args:
                request[option] = args.pop(option)
        extra_body = {**(args.pop("extra_body", None) or {}), **args}
        if extra_body:
            request["extra_body"] = extra_body
        return request

    structured_output = True  # a forced tool whose input_schema is the schema

    def _with_schema(self, request: dict[str, Any], schema: ResponseSchema) -> dict[str, Any]:
        tool, choice = anthropic_tool(schema)
        return {**request, "tools": [tool], "tool_choice": choice}

    def _send(self, request: dict[str, Any]) -> Any:
        messages = self.client.messages
        if has_raw_replies(messages):
            return raw_reply(messages.with_raw_response.create(**request))
        return messages.create(**request)

    async def _asend(self, request: dict[str, Any]) -> Any:
        messages = self._sdk_clients.for_loop().messages
        if has_raw_replies(messages):
            return await araw_reply(await messages.with_raw_response.create(**request))
        return await messages.create(**request)

    def _translate_errors(self) -> AbstractContextManager[None]:
        return _translated(self._errors, self.timeout, self._where, self._sdk_kwargs["api_key"])

    def _parse(self, response: Any, model: str) -> LMResult:
        return parse_message(response, model, self._where, self._sdk_kwargs["api_key"])

    def close(self) -> None:
        """Close this client's own SDK clients; shared ones stay open for the others."""
        self._sdk_clients.close()
