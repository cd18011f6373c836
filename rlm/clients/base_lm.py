"""The client contract every model backend implements.

``BaseLM`` keeps the ``rlms`` abstract methods (``completion``, ``acompletion``,
``get_usage_summary``, ``get_last_usage``). The engine itself calls ``complete`` /
``acomplete``, which return the text *and that call's own usage*; clients written for
``rlms`` get a default that reads ``get_last_usage()`` right after the call.

New clients should subclass ``TrackedLM`` and implement only ``_complete`` and
``_acomplete``: usage accounting, ``completion``/``acompletion`` and the usage getters
come for free and are safe under concurrency. Clients of a remote provider subclass
``ProviderLM`` instead and describe only their wire format.

The engine says what each call is for (``CallPurpose``) through ``complete_for`` /
``acomplete_for``; by default those are ``complete`` / ``acomplete``, so a client that
does not care pays nothing. A client that shapes replies (``llama_cpp``'s
``code_prefill``) overrides them.
"""

from __future__ import annotations

import asyncio
import enum
import os
import time
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rlm.base.errors import ConfigurationError, MissingAPIKeyError, ProviderError
from rlm.base.json_schema import ResponseSchema
from rlm.base.types import ModelUsageSummary, Prompt, UsageSummary
from rlm.clients.compat import RlmsUsageAttributes
from rlm.clients.retry import RetryPolicy, acall_with_retries, call_with_retries
from rlm.clients.structured import refused_schema
from rlm.clients.usage import UsageTracker

if TYPE_CHECKING:
    from rlm.clients.context_windows import Window

DEFAULT_TIMEOUT: float = 300.0


def reply_text(client: Any, text: Any) -> str:
    """``text`` if it is a ``str``; else a ``TypeError`` naming the client."""
    if isinstance(text, str):
        return text
    raise TypeError(
        f"{type(client).__name__}.completion() returned {type(text).__name__}, expected str "
        "(a model client must return the reply's text)"
    )


def usage_of(value: Any) -> ModelUsageSummary:
    """One call's usage from what an rlms-era ``get_last_usage()`` returned.

    A ``UsageSummary`` is summed over its models; anything that is not a usage object
    counts as one call with unknown (zero) tokens, never as an error.
    """
    if isinstance(value, ModelUsageSummary):
        return value.copy()
    if isinstance(value, UsageSummary):
        total = ModelUsageSummary()
        for usage in value.model_usage_summaries.values():
            total.add(usage)
        return total
    return ModelUsageSummary(1, 0, 0)


class CallPurpose(enum.Enum):
    """What the engine makes a model call for; passed to ``BaseLM.complete_for``.

    * ``ITERATION``: the root model's turn in the RLM loop; a reply with REPL code is
      wanted (the only purpose for which ``wants_code`` is true);
    * ``FINAL_ANSWER``: the iterations ran out; the model is asked for its answer in words;
    * ``COMPACTION``: the model is asked to summarise the history so far;
    * ``SUBCALL``: a plain question: ``llm_query``/``llm_query_batched``, ``rlm_query`` at
      the depth limit, an RLM used at ``depth >= max_depth``, and any call Python code
      makes through the handler.
    """

    ITERATION = "iteration"
    FINAL_ANSWER = "final_answer"
    COMPACTION = "compaction"
    SUBCALL = "subcall"

    @property
    def wants_code(self) -> bool:
        """True when the reply should be REPL code (the root's iteration calls)."""
        return self is CallPurpose.ITERATION


@dataclass
class LMResult:
    """One completion: its text, the model that produced it and its own usage."""

    text: str
    model: str
    usage: ModelUsageSummary = field(default_factory=lambda: ModelUsageSummary(1, 0, 0))


class BaseLM(ABC):
    """Base class of every language-model client."""

    # True if every call's usage carries its real cost (``total_cost``, 0.0 when free).
    # Under ``max_budget`` a call to a model with no known price is refused unless its
    # client says so (``rlm.core.reservation``); set it in clients that report cost.
    reports_cost: bool = False
    # ``context_window=`` (backend kwarg): the model's window in tokens; None: ask the
    # provider, else the table (``rlm.clients.context_windows``).
    context_window: int | None = None

    def __init__(
        self,
        model_name: str = "unknown",
        timeout: float = DEFAULT_TIMEOUT,
        sampling_args: dict[str, Any] | None = None,
        context_window: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.model_name = model_name
        self.timeout = timeout
        self.sampling_args: dict[str, Any] = dict(sampling_args or {})
        if context_window is not None and (
            isinstance(context_window, bool) or not isinstance(context_window, int)
            or context_window < 1
        ):  # fmt: skip
            raise ConfigurationError(
                f"context_window must be a positive number of tokens, not {context_window!r}"
            )
        # The model's whole window in tokens, prompt and reply, when the caller says so;
        # otherwise the provider's report or the table (``rlm.clients.context_windows``).
        self.context_window = context_window
        self.kwargs = kwargs

    @abstractmethod
    def completion(self, prompt: Prompt) -> str:
        """Return the model's reply to a string or a list of chat messages."""

    @abstractmethod
    async def acompletion(self, prompt: Prompt) -> str:
        """Async form of ``completion``."""

    @abstractmethod
    def get_usage_summary(self) -> UsageSummary:
        """Totals for every call this client made, per model."""

    @abstractmethod
    def get_last_usage(self) -> ModelUsageSummary:
        """Usage of the last call (prefer ``complete``, which returns it with the text)."""

    # -- what the engine calls -------------------------------------------------------

    def complete(self, prompt: Prompt) -> LMResult:
        """One call with its own usage. The default suits clients written for ``rlms``:
        the reply must be a ``str``; ``get_last_usage()`` may be a ``UsageSummary``."""
        text = reply_text(self, self.completion(prompt))
        return LMResult(text=text, model=self.model_name, usage=usage_of(self.get_last_usage()))

    async def acomplete(self, prompt: Prompt) -> LMResult:
        """Async form of ``complete``."""
        text = reply_text(self, await self.acompletion(prompt))
        return LMResult(text=text, model=self.model_name, usage=usage_of(self.get_last_usage()))

    def complete_for(self, prompt: Prompt, purpose: CallPurpose) -> LMResult:
        """One call made for ``purpose``: what the engine calls. The default ignores the
        purpose (``complete``); override it to shape the call by purpose."""
        return self.complete(prompt)

    async def acomplete_for(self, prompt: Prompt, purpose: CallPurpose) -> LMResult:
        """Async form of ``complete_for`` (the default is ``acomplete``)."""
        return await self.acomplete(prompt)

    # -- structured output (``output_schema``) ----------------------------------------

    # True in clients whose ``complete_structured`` asks the provider to enforce a JSON
    # Schema (OpenAI's ``response_format``, Anthropic's tool use, Gemini's
    # ``response_json_schema``, a llama.cpp grammar); the engine only calls it then.
    structured_output: bool = False

    def complete_structured(self, prompt: Prompt, schema: ResponseSchema) -> LMResult:
        """One call whose reply is JSON matching ``schema`` (its text is that JSON). The
        default is a plain final-answer call: the engine validates the reply anyway."""
        return self.complete_for(prompt, CallPurpose.FINAL_ANSWER)

    async def acomplete_structured(self, prompt: Prompt, schema: ResponseSchema) -> LMResult:
        """Async form of ``complete_structured``."""
        return await self.acomplete_for(prompt, CallPurpose.FINAL_ANSWER)

    def close(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release connections. Called when the session that owns the client closes."""

    def provider_context_window(self) -> int | Window | None:
        """The context window (tokens) the provider reports for ``model_name`` (a
        ``Window`` when it gives prompt and reply limits apart), or ``None`` when it
        does not say. May make a request: the engine asks once per client
        (``rlm.clients.context_windows.window_of``), never per call."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_name={self.model_name!r})"


class TrackedLM(RlmsUsageAttributes, BaseLM):
    """A client whose subclasses return ``LMResult`` and get accounting for free.

    It also has ``rlms``'s usage attributes (``model_call_counts``, ``last_prompt_tokens``
    and the rest), read from the same accounting.
    """

    def __init__(self, model_name: str = "unknown", **kwargs: Any) -> None:
        super().__init__(model_name=model_name, **kwargs)
        self._usage = UsageTracker()

    @abstractmethod
    def _complete(self, prompt: Prompt) -> LMResult:
        """Make one call and return its text and usage."""

    @abstractmethod
    async def _acomplete(self, prompt: Prompt) -> LMResult:
        """Async form of ``_complete``."""

    def complete(self, prompt: Prompt) -> LMResult:
        result = self._complete(prompt)
        self._usage.record(result.model, result.usage)
        return result

    async def acomplete(self, prompt: Prompt) -> LMResult:
        result = await self._acomplete(prompt)
        self._usage.record(result.model, result.usage)
        return result

    def completion(self, prompt: Prompt) -> str:
        return self.complete(prompt).text

    async def acompletion(self, prompt: Prompt) -> str:
        return (await self.acomplete(prompt)).text

    def get_usage_summary(self) -> UsageSummary:
        return self._usage.summary()

    def get_last_usage(self) -> ModelUsageSummary:
        return self._usage.last()


def require_api_key(api_key: str | None, backend: str, env_var: str, *fallbacks: str) -> str:
    """The explicit key, else the first of ``env_var`` and ``fallbacks`` that is set.

    Raises ``MissingAPIKeyError`` naming ``env_var`` when there is none.
    """
    for name in (env_var, *fallbacks):
        api_key = api_key or os.environ.get(name)
    if not api_key:
        raise MissingAPIKeyError(backend, env_var)
    return api_key


def require_model(model_name: str | None, client: str, example: str | None = None) -> str:
    """``model_name``, or a ``ConfigurationError`` saying how to pass one."""
    if not model_name:
        hint = f" (for example backend_kwargs={{'model_name': {example!r}}})" if example else ""
        raise ConfigurationError(
            f"The {client} client needs a model: pass model_name in backend_kwargs{hint}."
        )
    return model_name


def _sleep(seconds: float) -> None:
    time.sleep(seconds)  # looked up per call so tests can patch time.sleep


async def _asleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


class ProviderLM(TrackedLM):
    """A remote provider's client: one request, sent with retries, parsed into a result.

    Subclasses describe their wire format only: ``_request`` (prompt and model as the
    SDK's keyword arguments), ``_send`` / ``_asend`` (one attempt), ``_translate_errors``
    (the SDK's exceptions as the rlmx error tree) and ``_parse`` (the reply as an
    ``LMResult``). The request is built once, outside the retries, so a bad prompt fails
    before anything is sent; only translated, retryable errors are retried, under
    ``retry_policy`` (which the engine's governor reads too).

    As in ``rlms``, a call may name another model (``completion(prompt, model=...)``);
    its usage is recorded under the model it names.
    """

    retry_policy: RetryPolicy = RetryPolicy()  # subclasses set their own in __init__

    # -- the wire format -------------------------------------------------------------

    @abstractmethod
    def _request(self, prompt: Prompt, model: str) -> dict[str, Any]:
        """The SDK call's keyword arguments."""

    @abstractmethod
    def _send(self, request: dict[str, Any]) -> Any:
        """One attempt: the SDK's raw reply."""

    @abstractmethod
    async def _asend(self, request: dict[str, Any]) -> Any:
        """Async form of ``_send``."""

    @abstractmethod
    def _translate_errors(self) -> AbstractContextManager[None]:
        """A context in which the SDK's exceptions are re-raised as rlmx errors."""

    @abstractmethod
    def _parse(self, response: Any, model: str) -> LMResult:
        """Text and usage of the SDK's reply; a reply that holds no answer raises a
        (retryable) ``ProviderError``, never gives ``""``. Runs inside the retries."""

    def _with_schema(self, request: dict[str, Any], schema: ResponseSchema) -> dict[str, Any]:
        """``request`` asking the provider for JSON matching ``schema``. Providers with a
        structured-output mode override it and set ``structured_output = True``."""
        raise NotImplementedError(f"{type(self).__name__} has no structured-output mode")

    # -- one call, retried -----------------------------------------------------------

    def _call(self, prompt: Prompt, model: str, schema: ResponseSchema | None = None) -> LMResult:
        request = self._request(prompt, model)
        if schema is not None:
            request = self._with_schema(request, schema)

        def attempt() -> LMResult:
            with self._translate_errors():
                response = self._send(request)
            return self._parse(response, model)  # a reply that is no answer is retried too

        return call_with_retries(attempt, self.retry_policy, _sleep)

    async def _acall(
        self, prompt: Prompt, model: str, schema: ResponseSchema | None = None
    ) -> LMResult:
        request = self._request(prompt, model)
        if schema is not None:
            request = self._with_schema(request, schema)

        async def attempt() -> LMResult:
            with self._translate_errors():
                response = await self._asend(request)
            return self._parse(response, model)

        return await acall_with_retries(attempt, self.retry_policy, _asleep)

    def _complete(self, prompt: Prompt) -> LMResult:
        return self._call(prompt, self.model_name)

    async def _acomplete(self, prompt: Prompt) -> LMResult:
        return await self._acall(prompt, self.model_name)

    def complete_structured(self, prompt: Prompt, schema: ResponseSchema) -> LMResult:
        """The call with the provider's structured-output request; a provider that
        refuses the request itself (``refused_schema``) is asked again without it."""
        if not self.structured_output:
            return super().complete_structured(prompt, schema)
        try:
            result = self._call(prompt, self.model_name, schema)
        except ProviderError as exc:
            if not refused_schema(exc):
                raise
            result = self._call(prompt, self.model_name)
        self._usage.record(result.model, result.usage)
        return result

    async def acomplete_structured(self, prompt: Prompt, schema: ResponseSchema) -> LMResult:
        if not self.structured_output:
            return await super().acomplete_structured(prompt, schema)
        try:
            result = await self._acall(prompt, self.model_name, schema)
        except ProviderError as exc:
            if not refused_schema(exc):
                raise
            result = await self._acall(prompt, self.model_name)
        self._usage.record(result.model, result.usage)
        return result

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
