"""OpenTelemetry spans and metrics from a real run (scripted backend, local REPL), read
back from the SDK's in-memory exporter and metric reader."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="rlmx[otel] (in the dev extras)")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from otel_support import ANSWER, ROOT, block, rlm_kwargs

from rlm import RLM
from rlm.base.errors import ConfigurationError
from rlm.base.types import RLMChatCompletion
from rlm.logger import otel_conventions as sc
from rlm.logger.otel_setup import Tracing, resolve

CONTENT_KEYS = (sc.INPUT_MESSAGES, sc.OUTPUT_MESSAGES, sc.TOOL_ARGUMENTS, sc.TOOL_RESULT)


class Traced:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meters = MeterProvider([self.reader])

    def tracing(self, capture: bool | None = None) -> Tracing:
        return Tracing(self.provider, self.meters, capture)

    @property
    def spans(self) -> Sequence[ReadableSpan]:
        return self.exporter.get_finished_spans()


@pytest.fixture
def traced() -> Iterator[Traced]:
    t = Traced()
    yield t
    t.provider.shutdown()
    t.meters.shutdown()


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def children(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    own = [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]
    return sorted(own, key=lambda s: s.start_time or 0)


def tree(spans: Sequence[ReadableSpan], span: ReadableSpan) -> tuple[Any, ...]:
    return (span.name, tuple(tree(spans, c) for c in children(spans, span)))


def roots(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is None]


EXPECTED_TREE = (
    "invoke_agent rlm",
    (
        ("chat m1", ()),
        (
            "execute_tool python_repl",
            (
                ("chat m1", ()),  # the batch of three
                (
                    "invoke_agent rlm",
                    (
                        ("chat m1", ()),
                        ("execute_tool python_repl", (("chat m1", ()),)),
                    ),
                ),
            ),
        ),
    ),
)


def check_tree(spans: Sequence[ReadableSpan], result: RLMChatCompletion, session: str) -> None:
    (root,) = roots(spans)
    assert tree(spans, root) == EXPECTED_TREE
    assert len({s.context.trace_id for s in spans}) == 1
    a = attrs(root)
    assert a[sc.OPERATION] == "invoke_agent"
    assert a[sc.CONVERSATION_ID] == session
    assert a[sc.PROVIDER] == "scripted"
    assert a[sc.REQUEST_MODEL] == "m1"
    assert a[sc.DEPTH] == 0
    chats = [s for s in spans if s.name.startswith("chat")]
    for chat in chats:
        c = attrs(chat)
        assert c[sc.OPERATION] == "chat"
        assert c[sc.PROVIDER] == "scripted"
        assert c[sc.REQUEST_MODEL] == c[sc.RESPONSE_MODEL] == "m1"
        assert c[sc.ITERATION] == 1
        assert chat.start_time is not None and chat.end_time is not None
        assert chat.start_time <= chat.end_time
    # Every model call of the tree is one chat span (the batch one of them): together
    # they are the completion's usage, to the token.
    usage = result.usage_summary
    assert sum(attrs(c)[sc.INPUT_TOKENS] for c in chats) == usage.total_input_tokens
    assert sum(attrs(c)[sc.OUTPUT_TOKENS] for c in chats) == usage.total_output_tokens
    assert sum(attrs(c)[sc.CALLS] for c in chats) == usage.total_calls == 6
    assert a[sc.INPUT_TOKENS] == usage.total_input_tokens  # the run's span: its tree's
    # The cell, the batch, the child and its spans
    cell = children(spans, root)[1]
    assert attrs(cell)[sc.TOOL_NAME] == "python_repl"
    assert attrs(cell)[sc.OPERATION] == "execute_tool"
    batch, child = children(spans, cell)
    assert attrs(batch)[sc.BATCH_SIZE] == 3
    assert attrs(batch)[sc.SUBCALL] == "llm_query_batched"
    ca = attrs(child)
    assert ca[sc.OPERATION] == "invoke_agent" and ca[sc.DEPTH] == 1
    assert ca[sc.PARENT_RUN_ID] == a[sc.RUN_ID] != ca[sc.RUN_ID]
    assert ca[sc.CONVERSATION_ID] == session
    leaf = children(spans, children(spans, child)[1])[0]
    assert attrs(leaf)[sc.SUBCALL] == "llm_query" and attrs(leaf)[sc.DEPTH] == 1
    # Spans nest in time as in the tree
    assert root.start_time is not None and root.end_time is not None
    for span in spans:
        assert span.start_time is not None and span.end_time is not None
        assert root.start_time <= span.start_time <= span.end_time <= root.end_time
    # Content is off by default
    for span in spans:
        assert not set(CONTENT_KEYS) & set(attrs(span)), span.name


def test_span_tree_of_a_depth_2_run_with_a_batch(traced: Traced) -> None:
    with RLM(**rlm_kwargs(tracing=traced.tracing(), session_id="s-42")) as r:
        assert r.events.active
        result = r.completion("ctx", root_prompt=ROOT)
    assert result.response == ANSWER
    check_tree(traced.spans, result, "s-42")


def test_async_run_has_the_same_tree_inside_the_callers_span(traced: Traced) -> None:
    tracer = traced.provider.get_tracer("test")

    async def main() -> RLMChatCompletion:
        with (
            tracer.start_as_current_span("caller"),
            RLM(**rlm_kwargs(tracing=traced.tracing(), session_id="a-1")) as r,
        ):
            return await r.acompletion("ctx", root_prompt=ROOT)

    result = asyncio.run(main())
    assert result.response == ANSWER
    caller = next(s for s in traced.spans if s.name == "caller")
    (root,) = children(traced.spans, caller)
    assert caller.parent is None
    rest = [s for s in traced.spans if s is not caller]
    check_tree([s for s in rest if s is not root] + [_unparented(root)], result, "a-1")


def _unparented(span: ReadableSpan) -> ReadableSpan:
    """``span`` as a root, so ``check_tree`` can walk the run under a caller's span."""
    return ReadableSpan(
        span.name,
        span.context,
        None,
        attributes=span.attributes,
        start_time=span.start_time,
        end_time=span.end_time,
        kind=span.kind,
        status=span.status,
    )


def test_a_sync_completion_nests_under_the_callers_current_span(traced: Traced) -> None:
    tracer = traced.provider.get_tracer("test")
    with tracer.start_as_current_span("caller"), RLM(**rlm_kwargs(tracing=traced.tracing())) as r:
        r.completion("ctx", root_prompt=ROOT)
    caller = next(s for s in traced.spans if s.name == "caller")
    (root,) = children(traced.spans, caller)
    assert root.name == "invoke_agent rlm"
    assert root.context.trace_id == caller.context.trace_id


def test_stream_and_astream_nest_under_the_callers_span(traced: Traced) -> None:
    """``stream()`` runs on a thread of its own, ``astream()`` in a task: both keep the
    caller's context, so the run is still a child of the caller's span."""
    tracer = traced.provider.get_tracer("test")
    with (
        tracer.start_as_current_span("sync-caller"),
        RLM(**rlm_kwargs(tracing=traced.tracing())) as r,
    ):
        kinds = [event.type for event in r.stream("ctx", root_prompt=ROOT)]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"

    async def main() -> None:
        with (
            tracer.start_as_current_span("async-caller"),
            RLM(**rlm_kwargs(tracing=traced.tracing())) as r,
        ):
            async for _ in r.astream("ctx", root_prompt=ROOT):
                pass

    asyncio.run(main())
    for name in ("sync-caller", "async-caller"):
        caller = next(s for s in traced.spans if s.name == name)
        (root,) = children(traced.spans, caller)
        assert tree(traced.spans, root) == EXPECTED_TREE


def test_content_is_recorded_only_when_opted_in(
    traced: Traced, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(sc.CAPTURE_ENV, "true")  # the convention's switch
    with RLM(**rlm_kwargs(tracing=traced.tracing())) as r:
        r.completion("ctx", root_prompt=ROOT)
    spans = traced.spans
    (root,) = roots(spans)
    assert ROOT in attrs(root)[sc.INPUT_MESSAGES]
    assert ANSWER in attrs(root)[sc.OUTPUT_MESSAGES]
    cell = children(spans, root)[1]
    assert attrs(cell)[sc.TOOL_ARGUMENTS].startswith("r = llm_query_batched")
    assert sc.TOOL_RESULT in attrs(cell)
    reply = children(spans, root)[0]
    assert "llm_query_batched" in attrs(reply)[sc.OUTPUT_MESSAGES]
    assert json.loads(attrs(reply)[sc.OUTPUT_MESSAGES])[0]["finish_reason"] == "stop"
    prompt = json.loads(attrs(reply)[sc.INPUT_MESSAGES])  # the call's whole prompt
    assert prompt[0]["role"] == "system"
    assert any(ROOT in m["parts"][0]["content"] for m in prompt if m["role"] == "user")
    # The argument wins over the variable, both ways.
    traced.exporter.clear()
    with RLM(**rlm_kwargs(tracing=traced.tracing(capture=False))) as r:
        r.completion("ctx", root_prompt=ROOT)
    assert traced.spans and not any(set(CONTENT_KEYS) & set(attrs(s)) for s in traced.spans)
    monkeypatch.delenv(sc.CAPTURE_ENV)
    traced.exporter.clear()
    with RLM(**rlm_kwargs(tracing=traced.tracing(capture=True))) as r:
        r.completion("ctx", root_prompt=ROOT)
    assert sc.INPUT_MESSAGES in attrs(roots(traced.spans)[0])


def test_metrics_token_usage_and_duration(traced: Traced) -> None:
    with RLM(**rlm_kwargs(tracing=traced.tracing())) as r:
        result = r.completion("ctx", root_prompt=ROOT)
    data = traced.reader.get_metrics_data()
    assert data is not None
    metrics = {
        m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    tokens = metrics[sc.METRIC_TOKEN_USAGE]
    assert tokens.unit == "{token}"
    by_type: dict[str, int] = {}
    for point in tokens.data.data_points:  # type: ignore[union-attr]
        p: Any = point
        kind = p.attributes[sc.TOKEN_TYPE]
        by_type[kind] = by_type.get(kind, 0) + int(p.sum)
        assert p.attributes[sc.OPERATION] == "chat"
        assert p.attributes[sc.PROVIDER] == "scripted"
    usage = result.usage_summary
    assert by_type == {"input": usage.total_input_tokens, "output": usage.total_output_tokens}
    duration = metrics[sc.METRIC_DURATION]
    assert duration.unit == "s"
    counts: dict[str, int] = {}
    for point in duration.data.data_points:  # type: ignore[union-attr]
        q: Any = point
        op = q.attributes[sc.OPERATION]
        counts[op] = counts.get(op, 0) + int(q.count)
    assert counts == {"chat": 4, "invoke_agent": 2}  # four chat spans, two runs


def test_failures_carry_error_type(traced: Traced) -> None:
    def respond(prompt: Any) -> str:
        if isinstance(prompt, str):
            raise RuntimeError("leaf failed")
        if len(prompt) > 3:  # the second iteration: the root model call itself fails
            raise ValueError("root model down")
        return block("x = llm_query('q')\nprint(x)\n1/0")

    kwargs = rlm_kwargs(tracing=traced.tracing(), max_iterations=3)
    kwargs["backend_kwargs"] = {"responder": respond, "model_name": "m1"}
    with RLM(**kwargs) as r, pytest.raises(Exception, match="root model down"):
        r.completion("ctx", root_prompt=ROOT)
    spans = traced.spans
    (root,) = roots(spans)
    assert root.status.status_code is StatusCode.ERROR
    assert attrs(root)[sc.ERROR_TYPE] == "ValueError"
    first, cell, failed = children(spans, root)
    assert first.name == "chat m1" and sc.ERROR_TYPE not in attrs(first)
    assert attrs(cell)[sc.ERROR_TYPE] == "ZeroDivisionError"
    assert cell.status.status_code is StatusCode.ERROR
    (leaf,) = children(spans, cell)
    assert attrs(leaf)[sc.ERROR_TYPE] == "RuntimeError"
    assert failed.name == "chat m1" and attrs(failed)[sc.ERROR_TYPE] == "ValueError"
    assert attrs(failed)[sc.ITERATION] == 2


def test_tracing_off_subscribes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RLM_OTEL", raising=False)
    with RLM(**rlm_kwargs()) as r:
        assert not r.events.active  # the loop builds no event payloads
        assert r.completion("ctx", root_prompt=ROOT).response == ANSWER
    monkeypatch.setenv("RLM_OTEL", "1")
    assert resolve(None) == Tracing()
    with RLM(**rlm_kwargs(tracing=False)) as r:
        assert not r.events.active  # False wins over the variable
    monkeypatch.setenv("RLM_OTEL", "0")
    assert resolve(None) is None


def test_a_tracer_provider_alone_is_enough(traced: Traced) -> None:
    with RLM(**rlm_kwargs(tracing=traced.provider)) as r:
        r.completion("ctx", root_prompt=ROOT)
    assert [s.name for s in roots(traced.spans)] == ["invoke_agent rlm"]


def test_a_bad_tracing_value_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="tracing must be True, False, None"):
        RLM(**rlm_kwargs(tracing="yes"))


def test_a_configured_global_provider_turns_tracing_on() -> None:
    """In a fresh process (the global provider can be set once): no ``tracing=``, no
    ``RLM_OTEL``, only ``set_tracer_provider``."""
    script = textwrap.dedent(
        """
        import json

        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )
        from rlm import RLM
        from otel_support import ROOT, rlm_kwargs

        with RLM(**rlm_kwargs()) as r:
            assert not r.events.active
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        with RLM(**rlm_kwargs()) as r:
            r.completion("ctx", root_prompt=ROOT)
        print(json.dumps(sorted(s.name for s in exporter.get_finished_spans())))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "RLM_OTEL"}
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=os.path.dirname(os.path.abspath(__file__)),  # otel_support
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    names = json.loads(out.stdout.strip().splitlines()[-1])
    assert names.count("invoke_agent rlm") == 2 and names.count("chat m1") == 4
