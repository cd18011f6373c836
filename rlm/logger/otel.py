"""OpenTelemetry spans and metrics from the event stream (``rlmx[otel]``).

``OtelSubscriber`` is a subscriber of an RLM's ``EventBus``, like the JSONL logger: the
engine knows nothing of OpenTelemetry. It is attached only when tracing is on
(``otel_setup.attach_tracing``), so with tracing off the bus stays inactive and the loop
builds no event payloads. This module imports OpenTelemetry at its top: only
``otel_setup`` imports it, and only once tracing is on.

The span tree is rebuilt from the events' run ids, never from thread-local context:
child RLMs and ``llm_query`` calls run on other threads. Spans get the events' own times
(``Event.time``, less the reported durations), so they are right across threads. The
root span's parent is the OpenTelemetry context current where the run started (the
caller's span, if ``completion()`` was called inside one). The names of spans and
attributes are in ``otel_conventions``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import MeterProvider, get_meter_provider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider

from rlm.base.events import Event
from rlm.base.version import __version__
from rlm.logger import otel_conventions as sc

SCOPE = "rlmx"


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _fail(span: Span, error: object) -> None:
    """Mark ``span`` failed with ``error`` (an event's "Class: message"), if any."""
    if error:
        span.set_attribute(sc.ERROR_TYPE, sc.error_type(error))
        span.set_status(Status(StatusCode.ERROR, str(error)))


@dataclass
class _Run:
    """One run's (root or child) open spans and what its later spans need."""

    span: Span
    ctx: Context  # a context holding ``span``: the parent of the run's own spans
    provider: str
    model: str
    depth: int
    ended_by_parent: bool = False  # a child's span ends at its parent's subcall_finished
    iteration: int = 0
    call_started: float | None = None  # iteration_started without its model_reply yet
    cell: Span | None = None
    cell_ctx: Context | None = None
    started: float = 0.0
    reply: tuple[Span, int] | None = None  # with content: the call's span, until its prompt


class OtelSubscriber:
    """Turns one RLM's events (its whole call tree: children share the bus) into spans.

    ``providers`` maps a model name to its rlmx backend (the root's and
    ``other_backends``'); any other model is the root backend's, as the engine's client
    factory makes it. ``capture_content``: record prompts, replies, code and cell
    output (the GenAI convention's opt-in)."""

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        *,
        backend: str = "unknown",
        providers: dict[str, str] | None = None,
        capture_content: bool = False,
        environment: str | None = None,
    ) -> None:
        tp = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        mp = meter_provider if meter_provider is not None else get_meter_provider()
        self.tracer = tp.get_tracer(SCOPE, __version__)
        self.tokens, self.duration = sc.histograms(mp.get_meter(SCOPE, __version__))
        self.backend = backend
        self.providers = dict(providers or {})
        self.capture = capture_content
        self.environment = environment
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()

    # -- dispatch ------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        handler = getattr(self, "_on_" + event.type, None)
        if handler is not None:
            handler(event)

    def provider_of(self, model: str | None) -> str:
        backend = self.providers.get(model, self.backend) if model else self.backend
        return sc.provider_name(backend)

    def _run(self, run_id: str | None) -> _Run | None:
        if run_id is None:
            return None
        with self._lock:
            return self._runs.get(run_id)

    # -- runs ----------------------------------------------------------------------------

    def _agent_span(self, event: Event, model: str, parent: Context, at: float) -> _Run:
        provider = self.provider_of(model)
        attrs = sc.agent_attributes(
            provider, model, event.depth, event.turn, event.session_id, self.environment
        )
        span = self.tracer.start_span(
            sc.agent_span_name(),
            context=parent,
            kind=SpanKind.INTERNAL,
            attributes=attrs,
            start_time=_ns(at),
        )
        ctx = trace.set_span_in_context(span, parent)
        return _Run(span, ctx, provider, model, event.depth, started=at)

    def _on_run_started(self, event: Event) -> None:
        meta = event.data.get("metadata")
        model = str(getattr(meta, "root_model", None) or "unknown")
        run = self._run(event.run_id)
        if run is None:  # a root run (or a child nobody announced)
            parent_run = self._run(event.parent_id)
            if parent_run is not None:
                parent = parent_run.cell_ctx or parent_run.ctx
            else:  # the caller's context: its span, if completion() ran inside one
                parent = otel_context.get_current()
            run = self._agent_span(event, model, parent, event.time)
            with self._lock:
                self._runs[event.run_id] = run
        span = run.span
        span.set_attribute(sc.AGENT_ID, event.run_id)
        span.set_attribute(sc.RUN_ID, event.run_id)
        if event.parent_id is not None:
            span.set_attribute(sc.PARENT_RUN_ID, event.parent_id)
        if self.capture:
            text = event.data.get("root_prompt") or event.data.get("prompt_preview")
            if text:
                span.set_attribute(sc.INPUT_MESSAGES, sc.text_messages("user", text))

    def _on_final_answer(self, event: Event) -> None:
        run = self._run(event.run_id)
        if run is None:
            return
        run.span.set_attribute(sc.ITERATIONS, int(event.data.get("iterations") or 0))
        run.span.set_attribute(sc.ANSWER_SOURCE, str(event.data.get("source") or ""))

    def _on_run_finished(self, event: Event) -> None:
        run = self._run(event.run_id)
        if run is None:
            return
        error = event.data.get("error")
        if run.call_started is not None and error:  # the run's model call failed
            self._chat_span(
                run, run.ctx, run.model, None, run.call_started, event.time, error, root=True
            )
            run.call_started = None
        if run.cell is not None:  # a cell cut short by the failure
            self._end_cell(run, event.time, error)
        if run.reply is not None:  # its iteration never finished
            (reply, end), run.reply = run.reply, None
            reply.end(end_time=end)
        span = run.span
        span.set_attributes(sc.usage_attributes(event.data.get("usage")))
        response = event.data.get("response")
        if self.capture and response is not None:
            span.set_attribute(sc.OUTPUT_MESSAGES, sc.text_messages("assistant", response))
        _fail(span, error)
        if not run.ended_by_parent:
            self._end_run(event.run_id, run, event.time, error)

    def _end_run(self, run_id: str, run: _Run, at: float, error: object) -> None:
        with self._lock:
            self._runs.pop(run_id, None)
        run.span.end(end_time=_ns(at))
        attrs = sc.metric_attributes(sc.INVOKE_AGENT, run.provider, run.model, None, error)
        self.duration.record(max(0.0, at - run.started), attrs)

    def _on_limit_exceeded(self, event: Event) -> None:
        self._span_event(event, sc.EVENT_LIMIT, ("kind", "message"))

    def _on_call_retry(self, event: Event) -> None:
        self._span_event(event, sc.EVENT_RETRY, ("purpose", "model", "attempt", "error", "wait"))

    def _on_schema_repair(self, event: Event) -> None:
        self._span_event(event, sc.EVENT_SCHEMA_REPAIR, ("iteration", "repair", "repairs"))

    def _span_event(self, event: Event, name: str, keys: tuple[str, ...]) -> None:
        run = self._run(event.run_id)
        if run is None:
            return
        attrs = {
            f"rlm.{k}": v for k in keys if isinstance(v := event.data.get(k), str | int | float)
        }
        (run.cell or run.span).add_event(name, attrs, timestamp=_ns(event.time))

    # -- the run's own model calls ---------------------------------------------------------

    def _on_iteration_started(self, event: Event) -> None:
        run = self._run(event.run_id)
        if run is not None:
            run.iteration = int(event.data.get("iteration") or 0)
            run.call_started = event.time

    def _on_model_reply(self, event: Event) -> None:
        run = self._run(event.run_id)
        if run is None:
            return
        run.call_started = None
        duration = event.data.get("duration")
        took = float(duration) if isinstance(duration, int | float) else 0.0
        usage = event.data.get("usage")
        models = sc.usage_models(usage)
        extra: dict[str, Any] = {sc.CACHE_HIT: True} if event.data.get("cached") else {}
        if self.capture:
            text = event.data.get("response") or ""
            extra[sc.OUTPUT_MESSAGES] = sc.text_messages("assistant", text)
        span = self._chat_span(
            run,
            run.ctx,
            run.model,
            usage,
            event.time - took,
            event.time,
            None,
            root=True,
            response_model=models[0] if models else run.model,
            extra=extra,
            end_now=not self.capture,
        )
        if self.capture:  # its prompt comes with iteration_finished
            run.reply = (span, _ns(event.time))

    def _on_iteration_finished(self, event: Event) -> None:
        run = self._run(event.run_id)
        if run is None or run.reply is None:
            return
        (span, end), run.reply = run.reply, None
        prompt = getattr(event.data.get("iteration_obj"), "prompt", None)
        if isinstance(prompt, list):
            span.set_attribute(sc.INPUT_MESSAGES, sc.chat_messages(prompt))
        span.end(end_time=end)

    def _chat_span(
        self,
        run: _Run,
        parent: Context,
        model: str,
        usage: Any,
        start: float,
        end: float,
        error: object,
        *,
        root: bool,
        response_model: str | None = None,
        extra: dict[str, Any] | None = None,
        end_now: bool = True,
    ) -> Span:
        provider = self.provider_of(model) if not root else run.provider
        attrs: dict[str, Any] = {
            sc.OPERATION: sc.CHAT,
            sc.PROVIDER: provider,
            sc.REQUEST_MODEL: model,
            sc.DEPTH: run.depth,
            sc.ITERATION: run.iteration,
            **sc.usage_attributes(usage),
            **(extra or {}),
        }
        if response_model:
            attrs[sc.RESPONSE_MODEL] = response_model
        if error:
            attrs[sc.ERROR_TYPE] = sc.error_type(error)
        span = self.tracer.start_span(
            sc.chat_span_name(model),
            context=parent,
            kind=SpanKind.CLIENT,
            attributes=attrs,
            start_time=_ns(start),
        )
        if error:
            span.set_status(Status(StatusCode.ERROR, str(error)))
        if end_now:
            span.end(end_time=_ns(max(start, end)))
        metric = sc.metric_attributes(sc.CHAT, provider, model, response_model, error)
        self.duration.record(max(0.0, end - start), metric)
        if sc.INPUT_TOKENS in attrs:
            self.tokens.record(attrs[sc.INPUT_TOKENS], {**metric, sc.TOKEN_TYPE: "input"})
            self.tokens.record(attrs[sc.OUTPUT_TOKENS], {**metric, sc.TOKEN_TYPE: "output"})
        return span

    # -- cells -----------------------------------------------------------------------------

    def _on_code_cell_started(self, event: Event) -> None:
        run = self._run(event.run_id)
        if run is None:
            return
        iteration = int(event.data.get("iteration") or run.iteration)
        index = int(event.data.get("index") or 0)
        attrs = sc.tool_attributes(event.run_id, iteration, index, run.depth)
        if self.capture:
            attrs[sc.TOOL_ARGUMENTS] = str(event.data.get("code") or "")
        span = self.tracer.start_span(
            sc.tool_span_name(),
            context=run.ctx,
            kind=SpanKind.INTERNAL,
            attributes=attrs,
            start_time=_ns(event.time),
        )
        run.cell, run.cell_ctx = span, trace.set_span_in_context(span, run.ctx)

    def _on_code_cell_finished(self, event: Event) -> None:
        run = self._run(event.run_id)
        if run is None or run.cell is None:
            return
        result = event.data.get("result")
        stderr = getattr(result, "stderr", "") or ""
        span = run.cell
        span.set_attribute(sc.CELL_STDERR, bool(stderr))
        if self.capture:
            out = str(getattr(result, "stdout", "") or "")
            span.set_attribute(sc.TOOL_RESULT, out + (f"\n{stderr}" if stderr else ""))
        self._end_cell(run, event.time, sc.cell_error_type(stderr))

    def _end_cell(self, run: _Run, at: float, error: object) -> None:
        span = run.cell
        run.cell = run.cell_ctx = None
        if span is None:
            return
        _fail(span, error)
        span.end(end_time=_ns(at))

    # -- sub-calls from a cell -------------------------------------------------------------

    def _on_subcall_started(self, event: Event) -> None:
        if event.data.get("kind") != "rlm":
            return  # an llm_query's span is made whole at its subcall_finished
        child_id = event.data.get("child_run_id")
        parent_run = self._run(event.run_id)
        if not isinstance(child_id, str) or parent_run is None:
            return
        model = str(event.data.get("model") or parent_run.model)
        parent = parent_run.cell_ctx or parent_run.ctx
        child = Event(
            event.type,
            child_id,
            event.run_id,
            event.session_id,
            event.turn,
            int(event.data.get("child_depth") or event.depth + 1),
        )
        run = self._agent_span(child, model, parent, event.time)
        run.ended_by_parent = True
        with self._lock:
            self._runs[child_id] = run

    def _on_subcall_finished(self, event: Event) -> None:
        run = self._run(event.run_id)
        if event.data.get("kind") == "rlm":
            child_id = event.data.get("child_run_id")
            child = self._run(child_id if isinstance(child_id, str) else None)
            if child is not None and isinstance(child_id, str):
                error = event.data.get("error")
                _fail(child.span, error)
                self._end_run(child_id, child, event.time, error)
            return
        if run is None:
            return
        duration = event.data.get("duration")
        took = float(duration) if isinstance(duration, int | float) else 0.0
        usage = event.data.get("usage")
        models = sc.usage_models(usage)
        model = str(event.data.get("model") or (models[0] if models else run.model))
        extra: dict[str, Any] = {sc.SUBCALL: "llm_query"}
        calls = sc.usage_attributes(usage).get(sc.CALLS, 1)
        if calls > 1:  # an llm_query_batched: one span for the batch
            extra[sc.SUBCALL], extra[sc.BATCH_SIZE] = "llm_query_batched", calls
        self._chat_span(
            run,
            run.cell_ctx or run.ctx,
            model,
            usage,
            event.time - took,
            event.time,
            event.data.get("error"),
            root=False,
            response_model=models[0] if len(models) == 1 else None,
            extra=extra,
        )
