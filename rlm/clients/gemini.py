"""Google Gemini client through ``google-genai`` (``pip install 'rlmx[gemini]'``).

System messages become ``system_instruction``; ``assistant`` turns become Gemini's
``model`` role. ``base_url`` (or ``http_options``) points the SDK at another endpoint,
such as a proxy or a test server.

The SDK does not retry by default; its errors are translated once, in ``_translated``,
and retried by ``rlm.clients.retry`` like every other backend.

As in ``rlms``, the module attributes ``genai`` and ``types`` are the SDK (imported on
first access, so ``patch("rlm.clients.gemini.genai.Client")`` works) and
``DEFAULT_GEMINI_API_KEY`` is the key read at import.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from rlm.base.errors import ConfigurationError, ProviderConnectionError, ProviderError
from rlm.base.json_schema import ResponseSchema
from rlm.base.types import ModelUsageSummary, Prompt
from rlm.clients.async_pool import SDKClient, SDKClients
from rlm.clients.base_lm import DEFAULT_TIMEOUT, LMResult, ProviderLM
from rlm.clients.compat import EnvDefaults, LazySDK, as_count, as_number, require_key
from rlm.clients.context_windows import Window
from rlm.clients.openai import to_messages
from rlm.clients.pricing import estimate_cost
from rlm.clients.retry import (
    RetryPolicy,
    empty_reply,
    http_error,
    parse_retry_after,
    unreadable_reply,
)
from rlm.clients.structured import gemini_config
from rlm.clients.vision import gemini_part

_SDK = LazySDK(
    globals(),
    {"genai": "google.genai", "types": "google.genai.types"},
    "The gemini backend",
    "gemini",
    "google-genai",
)


log = logging.getLogger(__name__)


def __getattr__(name: str) -> Any:  # ``genai`` and ``types``: the SDK, imported on first access
    return _SDK.resolve(name)


API_KEY_ENV = "GEMINI_API_KEY"
_FALLBACK_KEY_ENV = "GOOGLE_API_KEY"  # the SDK's own variable
DEFAULT_GEMINI_API_KEY: str | None = os.getenv(API_KEY_ENV)  # as rlms; see EnvDefaults
_DEFAULTS = EnvDefaults(globals(), {"DEFAULT_GEMINI_API_KEY": API_KEY_ENV})
DEFAULT_MODEL = "gemini-2.5-flash"
# OpenAI-style names users carry over from other backends.
_SAMPLING_ALIASES = {"max_tokens": "max_output_tokens", "stop": "stop_sequences"}
# Transport failures of httpx, httpx2 and aiohttp (the SDK uses any of them), by class name
# so that none of them must be importable here.
_CONNECTION_ERRORS = frozenset({"TransportError", "ClientConnectionError", "ServerTimeoutError"})


def _load_sdk() -> tuple[Any, Any, Any]:
    """(genai, types, errors), read through the module attributes."""
    genai, types = _SDK.get("genai"), _SDK.get("types")
    return genai, types, _SDK.original("genai").errors


def prepare_contents(prompt: Prompt, types: Any) -> tuple[list[Any], str | None]:
    """(contents, system_instruction) from a string or chat messages."""
    system_parts: list[str] = []
    contents: list[Any] = []
    for message in to_messages(prompt):
        role, text = message.get("role"), _text_of(message.get("content", ""))
        if role in ("system", "developer"):
            system_parts.append(text)
            continue
        role = "model" if role in ("assistant", "model") else "user"
        parts = [types.Part(text=text), *_image_parts(message.get("content"), types)]
        if contents and contents[-1].role == role:  # keep turns alternating
            contents[-1].parts.extend(parts)
        else:
            contents.append(types.Content(role=role, parts=parts))
    return contents, "\n\n".join(p for p in system_parts if p) or None


def _image_parts(content: Any, types: Any) -> list[Any]:
    """The images of OpenAI-style content blocks as Gemini parts (``inline_data`` or
    ``file_data``)."""
    if not isinstance(content, list):
        return []
    parts = (gemini_part(block, types) for block in content)
    return [part for part in parts if part is not None]


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI-style content blocks
        return "\n".join(
            str(b.get("text", "")) for b in content if isinstance(b, dict) and "text" in b
        )
    return "" if content is None else str(content)


def usage_of(metadata: Any, model: str) -> ModelUsageSummary:
    """One call's usage. Thinking tokens are billed as output, so they count as output."""
    if metadata is None:
        return ModelUsageSummary(total_calls=1)
    tokens_in = as_count(getattr(metadata, "prompt_token_count", None))
    tokens_out = as_count(getattr(metadata, "candidates_token_count", None))
    tokens_out += as_count(getattr(metadata, "thoughts_token_count", None))
    cached = as_number(getattr(metadata, "cached_content_token_count", None))
    return ModelUsageSummary(
        total_calls=1,
        total_input_tokens=tokens_in,
        total_output_tokens=tokens_out,
        total_cost=estimate_cost(model, tokens_in, tokens_out),
        cache_read_tokens=None if cached is None else int(cached),
    )


def parse_response(
    response: Any, model: str, where: str = "the Gemini API", secret: str | None = None
) -> LMResult:
    """Text of the first candidate (thought summaries left out) and usage.

    A body that is not a reply, or a reply without text, raises a ``ProviderError``
    (retryable, except a prompt Gemini blocked): an answer is never made up of nothing.
    A reply that is not the SDK's (a test's stand-in) is read through ``.text``, as
    ``rlms`` reads every reply.
    """
    if isinstance(response, str | bytes):
        raise unreadable_reply(where, response, secret=secret)
    candidates = getattr(response, "candidates", None)
    if isinstance(candidates, list | tuple) or (candidates is None and _is_sdk_reply(response)):
        content = getattr(candidates[0], "content", None) if candidates else None
        parts = getattr(content, "parts", None) or []
        texts = [
            p.text
            for p in parts
            if isinstance(p.text, str) and getattr(p, "thought", None) is not True
        ]
        if not texts:
            raise _no_text(response, candidates, where, secret)
        text = "".join(texts)
    else:
        reported = getattr(response, "text", None)
        text = reported if isinstance(reported, str) else ""
    usage = usage_of(getattr(response, "usage_metadata", None), model)
    return LMResult(text=text, model=model, usage=usage)


def _is_sdk_reply(response: Any) -> bool:
    return type(response).__module__.split(".")[0] == "google"


def _no_text(response: Any, candidates: Any, where: str, secret: str | None) -> ProviderError:
    """Why a reply holds no text: a blocked prompt (will not heal), or nothing at all."""
    feedback = getattr(response, "prompt_feedback", None)
    blocked = getattr(feedback, "block_reason", None)
    if not candidates and blocked is not None:
        reason = getattr(blocked, "value", blocked)
        return ProviderError(f"{where} blocked the prompt ({reason})", retryable=False)
    what = "no candidates"
    if candidates:
        finish = getattr(candidates[0], "finish_reason", None)
        finish = getattr(finish, "value", finish)
        what = "no text" + (f" (finish_reason: {finish})" if finish else "")
    return empty_reply(where, what, secret=secret)


def _status_error(exc: Any, secret: str | None = None) -> ProviderError:
    status = int(exc.code)
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    retry_after = parse_retry_after(headers.get("retry-after"))
    message = f"Gemini API returned HTTP {status}: {exc.message or exc}"
    return http_error(status, message, retry_after, secret)


def _is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    return any(cls.__name__ in _CONNECTION_ERRORS for cls in type(exc).__mro__)


@contextmanager
def _translated(errors: Any, where: str, secret: str | None) -> Iterator[None]:
    """The one place the SDK's exceptions become rlmx errors."""
    try:
        yield
    except errors.APIError as exc:
        raise _status_error(exc, secret) from exc
    except json.JSONDecodeError as exc:  # JSON promised, something else sent
        raise unreadable_reply(where, exc.doc, secret=secret) from exc
    except Exception as exc:
        if _is_connection_error(exc):
            raise ProviderConnectionError(f"Could not reach the Gemini API: {exc}") from exc
        raise


class GeminiClient(SDKClient, ProviderLM):
    """Gemini through the official ``google-genai`` SDK.

    As in ``rlms``, ``model_name=None`` builds a client whose calls must name a model
    (``completion(prompt, model=...)``); otherwise they raise ``ValueError``.
    """

    def __init__(
        self,
        api_key: str | None = None,
        model_name: str | None = DEFAULT_MODEL,
        base_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        sampling_args: dict[str, Any] | None = None,
        max_retries: int = 4,
        api_version: str | None = None,
        retry_policy: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        genai, types, errors = _load_sdk()
        api_key = require_key(
            api_key, _DEFAULTS, "gemini", "Gemini", API_KEY_ENV, _FALLBACK_KEY_ENV
        )
        super().__init__(
            model_name=model_name or "",
            timeout=timeout,
            sampling_args=sampling_args,
            **kwargs,
        )
        self.base_url = base_url
        self.retry_policy = retry_policy or RetryPolicy(max_retries=max_retries)
        self._types = types
        self._errors = errors
        self._generation = self._generation_args(self.sampling_args)
        http_options = types.HttpOptions(
            timeout=int(timeout * 1000), base_url=base_url, api_version=api_version
        )
        if hasattr(types, "HttpRetryOptions"):
            # One attempt, stated explicitly: without retry options the SDK's aiohttp path
            # silently re-tries refused connections after sleeping 1-10 s.
            http_options.retry_options = types.HttpRetryOptions(attempts=1)
        self._where = f"the Gemini API at {base_url}" if base_url else "the Gemini API"
        self._secret = api_key
        # One SDK client per process for these options (each event loop's async calls
        # get one of their own); a patched genai.Client is built now, as rlms does.
        self._sdk_clients = SDKClients(
            genai.Client,
            None,
            {"api_key": api_key, "http_options": http_options},
            "google",
        )

    def _generation_args(self, sampling_args: dict[str, Any]) -> dict[str, Any]:
        """Sampling args as ``GenerateContentConfig`` fields; typos fail here, not per call."""
        args = {_SAMPLING_ALIASES.get(k, k): v for k, v in sampling_args.items() if v is not None}
        known = self._types.GenerateContentConfig.model_fields
        unknown = sorted(k for k in args if k not in known or k == "system_instruction")
        if unknown:
            raise ConfigurationError(
                f"Unknown Gemini sampling_args {unknown}: use GenerateContentConfig fields "
                "such as temperature, top_p, top_k, max_output_tokens, stop_sequences."
            )
        return args

    def _prepare_contents(self, prompt: Prompt) -> tuple[list[Any] | str, str | None]:
        """``rlms``'s (contents, system_instruction): a string prompt is sent as it is."""
        if isinstance(prompt, str):
            return prompt, None
        return prepare_contents(prompt, self._types)

    def _request(self, prompt: Prompt, model: str) -> dict[str, Any]:
        if not model:
            raise ConfigurationError(
                "Model name is required for Gemini client: pass model_name in backend_kwargs "
                f"(for example {DEFAULT_MODEL!r}) or name one per call."
            )
        contents, system = self._prepare_contents(prompt)
        config = self._types.GenerateContentConfig(system_instruction=system, **self._generation)
        return {"model": model, "contents": contents, "config": config}

    structured_output = True  # response_mime_type JSON with response_json_schema

    def _with_schema(self, request: dict[str, Any], schema: ResponseSchema) -> dict[str, Any]:
        config = request["config"].model_copy(update=gemini_config(schema))
        return {**request, "config": config}

    def _send(self, request: dict[str, Any]) -> Any:
        return self.client.models.generate_content(**request)

    async def _asend(self, request: dict[str, Any]) -> Any:
        return await self._sdk_clients.for_loop().aio.models.generate_content(**request)

    def _translate_errors(self) -> AbstractContextManager[None]:
        return _translated(self._errors, self._where, self._secret)

    def _parse(self, response: Any, model: str) -> LMResult:
        return parse_response(response, model, self._where, self._secret)

    def provider_context_window(self) -> Window | None:
        """Gemini's own limits for the model (``models.get``: ``inputTokenLimit``, the
        prompt, and ``outputTokenLimit``, the reply), asked once per client."""
        if not self.model_name:
            return None
        try:
            with self._translate_errors():
                model = self.client.models.get(model=self.model_name)
        except Exception as exc:  # the table decides; the key never reaches the log
            log.debug("no context window from %s: %s", self._where, exc)
            return None
        limit = as_count(getattr(model, "input_token_limit", None))
        if not limit:
            return None
        output = as_count(getattr(model, "output_token_limit", None)) or None
        return Window(input=limit, total=None, output=output)

    def close(self) -> None:
        """Close this client's own SDK client; shared ones stay open for the others."""
        self._sdk_clients.close()
