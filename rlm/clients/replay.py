"""Record and replay model calls (``docs/observability.md``, "Record and replay").

``RecordingLM`` wraps a real client: every call's request (the model, what the engine
made it for, the messages, the structured-output schema) and its response (text, model,
usage) or error, with its duration, go to a ``sink`` as one ``recorded_call`` entry.
Prompts are passed through ``redact_secrets`` first and images become summaries, so a
recording never holds a credential or an image's bytes.

``ReplayLM`` answers from a ``ReplayBook`` (the recorded calls) without a model or a
network. A request is matched by its content: the first unused recorded call with the
same fingerprint (model, purpose, messages, schema; compared after the same redaction).
Concurrent calls (a batch, children on threads) therefore find their own answers
whatever order they arrive in. A request with no exact match is a divergence:

- ``request_differs``: an unused recorded call of the same model and purpose holds the
  same conversation but its last one or two messages (a changed REPL output, an edited
  reply): it is answered with that call's recorded reply, so the run goes on;
- ``unrecorded_call``: nothing like it was recorded: ``ReplayMissError``.

The book keeps the divergences; ``unused()`` lists recorded calls never asked for.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from rlm.base.errors import ClientError, ProviderError
from rlm.base.images import loggable
from rlm.base.json_schema import ResponseSchema
from rlm.base.redact import redact_secrets, redact_text
from rlm.base.types import ModelUsageSummary, Prompt, UsageSummary
from rlm.clients.base_lm import BaseLM, CallPurpose, LMResult, TrackedLM
from rlm.clients.context_windows import Window

Entry = dict[str, Any]
Sink = Callable[[Entry], None]


class ReplayMissError(ClientError):
    """A replayed run asked for a model call that is not in the recording."""


def _plain(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples as lists, odd objects as text)."""
    return json.loads(json.dumps(value, default=str))


def schema_dict(schema: ResponseSchema | None) -> dict[str, Any] | None:
    if schema is None:
        return None
    return {"name": schema.name, "schema": _plain(schema.schema), "strict": schema.strict}


def request_of(
    model: str, purpose: CallPurpose | None, prompt: Prompt, schema: ResponseSchema | None
) -> dict[str, Any]:
    """A call's request as recorded: images as summaries, secrets redacted."""
    body = _plain(redact_secrets(loggable(prompt)))
    return {
        "model": model,
        "purpose": purpose.value if purpose is not None else None,
        ("prompt" if isinstance(body, str) else "messages"): body,
        "schema": schema_dict(schema),
    }


def fingerprint(request: dict[str, Any]) -> str:
    text = json.dumps(request, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _shapes(client: BaseLM) -> bool:  # as the pipeline decides (``lm_pipeline.shapes_calls``)
    return getattr(type(client), "complete_for", BaseLM.complete_for) is not BaseLM.complete_for


def _error_entry(exc: BaseException) -> dict[str, Any]:
    return {
        "type": type(exc).__name__,
        "message": redact_text(str(exc)),
        "status": getattr(exc, "status", None),
        "retryable": bool(getattr(exc, "retryable", False)),
    }


# -- recording -------------------------------------------------------------------------


class RecordingLM(BaseLM):
    """``inner`` with every call recorded into ``sink`` (see the module docstring).
    Use ``recording(inner, sink, backend)``: its class mirrors ``inner``'s
    structured-output mode, which the engine reads from the class."""

    def __init__(self, inner: BaseLM, sink: Sink, backend: str) -> None:
        self.inner = inner  # first: the forwarded attributes below read it
        super().__init__(
            model_name=inner.model_name, timeout=inner.timeout, context_window=inner.context_window
        )
        self.sink = sink
        self.sampling_args = inner.sampling_args
        self.kwargs = inner.kwargs
        sink(
            {
                "type": "recorded_client",
                "backend": backend,
                "model_name": inner.model_name,
                "structured_output": type(inner).structured_output is True,
                "reports_cost": inner.reports_cost is True,
                "context_window": inner.context_window,
            }
        )

    # what the engine reads from a client, forwarded
    @property
    def context_window(self) -> int | None:
        return self.inner.context_window

    @context_window.setter
    def context_window(self, value: int | None) -> None:
        self.inner.context_window = value

    @property
    def reports_cost(self) -> bool:
        return self.inner.reports_cost

    @reports_cost.setter
    def reports_cost(self, value: bool) -> None:
        self.inner.reports_cost = value

    @property
    def retry_policy(self) -> Any:
        return getattr(self.inner, "retry_policy", None)

    @retry_policy.setter
    def retry_policy(self, value: Any) -> None:
        self.inner.retry_policy = value  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:  # supports_images, reply_allowance, ...
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    # the calls
    def _entry(
        self, purpose: CallPurpose | None, prompt: Prompt, schema: ResponseSchema | None
    ) -> Entry:
        return {
            "type": "recorded_call",
            "request": request_of(self.inner.model_name, purpose, prompt, schema),
        }

    def _done(self, entry: Entry, started: float, result: LMResult) -> LMResult:
        entry["response"] = {
            "text": result.text,
            "model": result.model,
            "usage": result.usage.to_dict(),
        }
        entry["duration"] = time.perf_counter() - started
        self.sink(entry)
        return result

    def _failed(self, entry: Entry, started: float, exc: BaseException) -> None:
        if isinstance(exc, NotImplementedError):  # the pipeline falls back; not a call
            return
        entry["error"] = _error_entry(exc)
        entry["duration"] = time.perf_counter() - started
        self.sink(entry)

    def _call(self, entry: Entry, send: Callable[[], LMResult]) -> LMResult:
        started = time.perf_counter()
        try:
            result = send()
        except BaseException as exc:
            self._failed(entry, started, exc)
            raise
        return self._done(entry, started, result)

    async def _acall(self, entry: Entry, send: Callable[[], Awaitable[LMResult]]) -> LMResult:
        started = time.perf_counter()
        try:
            result = await send()
        except BaseException as exc:
            self._failed(entry, started, exc)
            raise
        return self._done(entry, started, result)

    def complete_for(self, prompt: Prompt, purpose: CallPurpose) -> LMResult:
        inner = self.inner
        send = (lambda: inner.complete_for(prompt, purpose)) if _shapes(inner) else None
        return self._call(
            self._entry(purpose, prompt, None), send or (lambda: inner.complete(prompt))
        )

    async def acomplete_for(self, prompt: Prompt, purpose: CallPurpose) -> LMResult:
        inner = self.inner
        entry = self._entry(purpose, prompt, None)
        if _shapes(inner):
            return await self._acall(entry, lambda: inner.acomplete_for(prompt, purpose))
        return await self._acall(entry, lambda: inner.acomplete(prompt))

    def complete(self, prompt: Prompt) -> LMResult:
        return self._call(self._entry(None, prompt, None), lambda: self.inner.complete(prompt))

    async def acomplete(self, prompt: Prompt) -> LMResult:
        entry = self._entry(None, prompt, None)
        return await self._acall(entry, lambda: self.inner.acomplete(prompt))

    def complete_structured(self, prompt: Prompt, schema: ResponseSchema) -> LMResult:
        entry = self._entry(None, prompt, schema)
        return self._call(entry, lambda: self.inner.complete_structured(prompt, schema))

    async def acomplete_structured(self, prompt: Prompt, schema: ResponseSchema) -> LMResult:
        entry = self._entry(None, prompt, schema)
        return await self._acall(entry, lambda: self.inner.acomplete_structured(prompt, schema))

    def completion(self, prompt: Prompt) -> str:
        return self.complete(prompt).text

    async def acompletion(self, prompt: Prompt) -> str:
        return (await self.acomplete(prompt)).text

    def get_usage_summary(self) -> UsageSummary:
        return self.inner.get_usage_summary()

    def get_last_usage(self) -> ModelUsageSummary:
        return self.inner.get_last_usage()

    def provider_context_window(self) -> int | Window | None:
        reported = self.inner.provider_context_window()
        shown = asdict(reported) if isinstance(reported, Window) else reported
        self.sink({"type": "recorded_window", "model_name": self.model_name, "window": shown})
        return reported

    def close(self) -> None:
        self.inner.close()


def recording(inner: BaseLM, sink: Sink, backend: str) -> RecordingLM:
    """A ``RecordingLM`` over ``inner`` whose class has ``inner``'s structured mode."""
    structured = type(inner).structured_output is True
    cls = _STRUCTURED_RECORDING if structured else RecordingLM
    return cls(inner, sink, backend)


class _StructuredRecordingLM(RecordingLM):
    structured_output = True


_STRUCTURED_RECORDING = _StructuredRecordingLM


# -- replay ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedCall:
    """One ``recorded_call`` entry: its position among the recorded calls, request,
    and the response (or error) the model gave."""

    index: int
    request: dict[str, Any]
    response: dict[str, Any] | None
    error: dict[str, Any] | None = None
    print: str = ""

    @property
    def purpose(self) -> str | None:
        value = self.request.get("purpose")
        return value if isinstance(value, str) else None

    @property
    def model(self) -> str:
        return str(self.request.get("model"))


@dataclass(frozen=True)
class CallDivergence:
    """A request the recording does not hold as it was made (see the module docstring);
    ``recorded`` is the call answered instead (``request_differs``) or never asked for
    (``unused_call``)."""

    kind: str  # request_differs | unrecorded_call | unused_call
    request: dict[str, Any] | None
    recorded: RecordedCall | None
    first_difference: int | None = None  # the first message that differs


def _prefix(a: list[Any], b: list[Any]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass
class ReplayBook:
    """The recorded calls of a run and what a replay has used of them (thread-safe)."""

    calls: list[RecordedCall]
    divergences: list[CallDivergence] = field(default_factory=list)
    answered: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._used: set[int] = set()
        self._by_print: dict[str, deque[RecordedCall]] = {}
        for call in self.calls:
            self._by_print.setdefault(call.print, deque()).append(call)

    @classmethod
    def of(cls, entries: list[Entry]) -> ReplayBook:
        calls = []
        for n, entry in enumerate(entries):
            request = entry["request"]
            calls.append(
                RecordedCall(
                    n, request, entry.get("response"), entry.get("error"), fingerprint(request)
                )
            )
        return cls(calls)

    def answer(self, request: dict[str, Any]) -> RecordedCall:
        """The recorded call that answers ``request``; raises ``ReplayMissError``."""
        with self._lock:
            queue = self._by_print.get(fingerprint(request))
            while queue:
                call = queue.popleft()
                if call.index not in self._used:
                    return self._use(call)
            near, at = self._nearest(request)
            if near is None:
                self.divergences.append(CallDivergence("unrecorded_call", request, None))
                raise ReplayMissError(
                    f"replay: no recorded {request.get('purpose') or 'model'} call to "
                    f"{request.get('model')!r} matches this request"
                )
            self.divergences.append(CallDivergence("request_differs", request, near, at))
            return self._use(near)

    def _use(self, call: RecordedCall) -> RecordedCall:
        self._used.add(call.index)
        self.answered += 1
        return call

    def _nearest(self, request: dict[str, Any]) -> tuple[RecordedCall | None, int | None]:
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            return None, None
        best: tuple[int, int] | None = None
        found: RecordedCall | None = None
        for call in self.calls:
            theirs = call.request.get("messages")
            if (
                call.index in self._used
                or not isinstance(theirs, list)
                or len(theirs) != len(messages)
                or call.purpose != request.get("purpose")
                or call.model != request.get("model")
            ):
                continue
            shared = _prefix(theirs, messages)
            if shared < max(1, len(messages) - 2):
                continue
            rank = (shared, -call.index)
            if best is None or rank > best:
                best, found = rank, call
        return found, (best[0] if best is not None else None)

    def unused(self) -> list[RecordedCall]:
        with self._lock:
            return [c for c in self.calls if c.index not in self._used]


class ReplayLM(TrackedLM):
    """A client that answers from ``book`` (see the module docstring). ``window`` is
    the context window the recorded provider reported (no request is made for it):
    tokens, or a ``Window``'s fields."""

    def __init__(
        self,
        book: ReplayBook,
        model_name: str,
        *,
        window: Any = None,
        reports_cost: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_name=model_name, **kwargs)
        self.book = book
        self.window = window
        self.reports_cost = reports_cost

    def _answer(
        self, purpose: CallPurpose | None, prompt: Prompt, schema: ResponseSchema | None
    ) -> LMResult:
        call = self.book.answer(request_of(self.model_name, purpose, prompt, schema))
        if call.response is None:
            error = call.error or {}
            message = f"{error.get('type', 'Error')}: {error.get('message', '')} (replayed)"
            status = error.get("status")
            raise ProviderError(
                message,
                status=status if isinstance(status, int) else None,
                retryable=bool(error.get("retryable")),
            )
        usage = call.response.get("usage")
        result = LMResult(
            text=str(call.response.get("text") or ""),
            model=str(call.response.get("model") or self.model_name),
            usage=ModelUsageSummary.from_dict(usage if isinstance(usage, dict) else {}),
        )
        self._usage.record(result.model, result.usage)
        return result

    def complete_for(self, prompt: Prompt, purpose: CallPurpose) -> LMResult:
        return self._answer(purpose, prompt, None)

    async def acomplete_for(self, prompt: Prompt, purpose: CallPurpose) -> LMResult:
        return self._answer(purpose, prompt, None)

    def _complete(self, prompt: Prompt) -> LMResult:
        return self._answer(None, prompt, None)

    async def _acomplete(self, prompt: Prompt) -> LMResult:
        return self._answer(None, prompt, None)

    def complete(self, prompt: Prompt) -> LMResult:  # usage recorded in _answer
        return self._answer(None, prompt, None)

    async def acomplete(self, prompt: Prompt) -> LMResult:
        return self._answer(None, prompt, None)

    def complete_structured(self, prompt: Prompt, schema: ResponseSchema) -> LMResult:
        return self._answer(None, prompt, schema)

    async def acomplete_structured(self, prompt: Prompt, schema: ResponseSchema) -> LMResult:
        return self._answer(None, prompt, schema)

    def provider_context_window(self) -> int | Window | None:
        window = self.window
        if isinstance(window, dict):
            try:
                return Window(**window)
            except TypeError:
                return None
        return window if isinstance(window, int) else None


class _StructuredReplayLM(ReplayLM):
    structured_output = True


def replay_client(
    book: ReplayBook, model_name: str, *, structured: bool = False, **kwargs: Any
) -> ReplayLM:
    """A ``ReplayLM`` whose class has the recorded client's structured-output mode."""
    cls = _StructuredReplayLM if structured else ReplayLM
    return cls(book, model_name, **kwargs)


__all__ = [
    "CallDivergence",
    "RecordedCall",
    "RecordingLM",
    "ReplayBook",
    "ReplayLM",
    "ReplayMissError",
    "fingerprint",
    "recording",
    "replay_client",
    "request_of",
]
