"""The OpenAI chat-completions wire, as replies come back: errors and answers.

``translate_errors`` is the one place the ``openai`` SDK's exceptions (and those of
SDKs built on it: Azure, Portkey's vendored copy, LiteLLM) become the rlmx error tree;
``parse_response`` turns a reply into an ``LMResult``. An HTTP 200 that holds no answer
(an HTML page from a proxy, broken or empty JSON, no choices, no message content) is a
retryable ``ProviderError``, never an empty answer. ``Raw`` carries the HTTP response
alongside the reply (the SDK's raw-response API), so such an error can name the body's
content type and size.
"""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NamedTuple

from rlm.base.errors import ProviderConnectionError, ProviderError
from rlm.base.types import ModelUsageSummary
from rlm.clients.base_lm import LMResult
from rlm.clients.compat import as_count, as_number
from rlm.clients.pricing import estimate_cost
from rlm.clients.retry import empty_reply, http_error, parse_retry_after, unreadable_reply

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


def _status_error(exc: Any, where: str, secret: str | None = None) -> ProviderError:
    status = int(exc.status_code)
    response = getattr(exc, "response", None)
    retry_after = _retry_after_seconds(getattr(response, "headers", None))
    message = f"{where} returned HTTP {status}: {_provider_message(exc)}"
    return http_error(status, message, retry_after, secret)


@contextmanager
def translate_errors(
    sdk: Any, where: str, timeout: float, secret: str | None = None
) -> Iterator[None]:
    """Re-raise the SDK's exceptions as the rlmx error tree (``where`` names the server).

    A body that is not JSON where JSON was promised (``json.JSONDecodeError``, as the
    SDK or a gateway SDK parsing it raises) is ``unreadable_reply``: retryable."""
    try:
        yield
    except json.JSONDecodeError as exc:
        raise unreadable_reply(where, exc.doc, secret=secret) from exc
    except sdk.APITimeoutError as exc:
        raise ProviderConnectionError(f"{where} did not answer within {timeout}s") from exc
    except sdk.APIConnectionError as exc:
        cause = exc.__cause__ or exc
        raise ProviderConnectionError(f"Could not reach {where}: {cause}") from exc
    except sdk.APIStatusError as exc:
        raise _status_error(exc, where, secret) from exc
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


class Raw(NamedTuple):
    """A reply sent through the SDK's raw-response API: what the SDK made of the body
    (the reply; the body's text when it was not JSON; its bytes when it was broken
    JSON) and the HTTP response, whose content type and size an error can then name."""

    parsed: Any
    http: Any


def raw_reply(raw: Any) -> Raw:
    """``Raw`` from the SDK's raw response (``with_raw_response.create(...)``)."""
    http = raw.http_response
    try:
        return Raw(raw.parse(), http)
    except ValueError:  # "application/json" that is not JSON (json.JSONDecodeError)
        return Raw(bytes(http.content), http)


async def araw_reply(raw: Any) -> Raw:
    """``raw_reply`` for an async raw response, whose ``parse()`` may be a coroutine."""
    http = raw.http_response
    try:
        parsed = raw.parse()
        return Raw(await parsed if inspect.isawaitable(parsed) else parsed, http)
    except ValueError:
        return Raw(bytes(http.content), http)


# What ``create()`` takes as request options rather than body fields, and their names in
# the SDK's ``RequestOptions``; ``extra_body`` is merged into the body.
_OPTIONS = {"extra_headers": "headers", "extra_query": "params", "timeout": "timeout"}
_PATH = "/chat/completions"


def post_args(request: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The JSON body and request options ``create(**request)`` would send, or ``None``
    when only ``create`` can send it (a streamed request)."""
    if request.get("stream"):
        return None
    body = {k: v for k, v in request.items() if k not in _OPTIONS and k != "extra_body"}
    body.update(request.get("extra_body") or {})
    options = {_OPTIONS[k]: request[k] for k in _OPTIONS if request.get(k) is not None}
    return body, options


def _response_class(client: Any) -> Any:
    """The SDK's HTTP library's ``Response`` class (``httpx`` or its successor), which
    makes ``client.post`` return the HTTP response unparsed; ``None`` if unknown."""
    for cls in type(getattr(client, "_client", None)).__mro__[:-1]:  # not object
        response = getattr(sys.modules.get(cls.__module__.partition(".")[0]), "Response", None)
        if isinstance(response, type):
            return response
    return None


def _decoded(http: Any) -> Raw:
    try:
        return Raw(json.loads(http.content), http)
    except ValueError:  # not JSON (an HTML page from a proxy) or broken JSON
        return Raw(bytes(http.content), http)


def post_route(client: Any, request: Mapping[str, Any]) -> tuple[Any, dict[str, Any]] | None:
    """``(response class, post keyword arguments)`` to send ``request`` through the
    SDK's documented ``client.post`` (its auth, headers, timeouts and HTTP errors, but
    not its per-call TypedDict transform and model building, most of a call's CPU), or
    ``None`` to call ``create`` instead."""
    args = post_args(request)
    cls = _response_class(client) if args is not None else None
    if args is None or cls is None or not callable(getattr(client, "post", None)):
        return None
    body, options = args
    return cls, {"cast_to": cls, "body": body, "options": options}


def post_reply(client: Any, request: Mapping[str, Any]) -> Raw | None:
    """Send a chat completion with ``client.post``: ``Raw`` holding the JSON reply as a
    dict (or the unreadable body's bytes), or ``None`` if it must go through ``create``."""
    route = post_route(client, request)
    if route is None:
        return None
    return _decoded(client.post(_PATH, **route[1]))


async def apost_reply(client: Any, request: Mapping[str, Any]) -> Raw | None:
    """``post_reply`` for an async SDK client."""
    route = post_route(client, request)
    if route is None:
        return None
    return _decoded(await client.post(_PATH, **route[1]))


def has_raw_replies(resource: Any) -> bool:
    """True for an SDK resource (``client.chat.completions``) whose class offers the
    raw-response API; a test's ``Mock`` or a stand-in does not, and is called plainly."""
    return hasattr(type(resource), "with_raw_response")


def _finish_reason(choice: Any) -> str:
    reason = _field(choice, "finish_reason")
    return f" (finish_reason: {reason})" if isinstance(reason, str) else ""


def parse_response(
    response: Any, model: str, where: str = "the provider", secret: str | None = None
) -> LMResult:
    """Text and usage of a chat completion (``Raw`` or the SDK's reply).

    A body that is not a reply raises ``unreadable_reply``, a reply with no choices or
    no message content ``empty_reply`` (both ``ProviderError``, retryable): an answer
    is never made up of nothing. ``""`` as the content is the model's own answer."""
    http = None
    if isinstance(response, Raw):
        response, http = response
    if isinstance(response, str | bytes):  # the SDK's way of returning a non-JSON body
        headers = getattr(http, "headers", None)
        content_type = headers.get("content-type") if headers is not None else None
        raise unreadable_reply(where, response, content_type, secret)
    choices = _field(response, "choices")
    if not choices or not isinstance(choices, list | tuple):
        body = getattr(http, "text", None)
        raise empty_reply(where, "no choices", body if isinstance(body, str) else None, secret)
    message = _field(choices[0], "message")
    text = _field(message, "content") if message is not None else None
    if text is None:
        what = "no message" if message is None else "no message content"
        raise empty_reply(where, what + _finish_reason(choices[0]), secret=secret)
    return LMResult(
        text=text if isinstance(text, str) else str(text),
        model=model,
        usage=usage_of(_field(response, "usage"), model),
    )


__all__ = [
    "Raw",
    "apost_reply",
    "araw_reply",
    "has_raw_replies",
    "parse_response",
    "post_args",
    "post_reply",
    "raw_reply",
    "translate_errors",
    "usage_of",
]
