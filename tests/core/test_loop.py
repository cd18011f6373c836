"""The loop generator, driven by hand: every effect's result is fed in by the test."""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any
from unittest import mock

import pytest

import rlm.core.loop
from rlm.base.errors import (
    ErrorThresholdExceededError,
    TimeoutExceededError,
    TokenLimitExceededError,
)
from rlm.base.events import Event, EventBus, RunScope
from rlm.base.types import ModelUsageSummary, REPLResult, RLMChatCompletion, UsageSummary
from rlm.core.budget import BudgetNode, Limits
from rlm.core.loop import (
    CallModel,
    LoopConfig,
    ReadVariable,
    RecordCompaction,
    RunCode,
    TurnResult,
    TurnState,
    drive_sync,
    run_turn,
)
from rlm.core.prompts import COMPACTION_PROMPT, FINAL_ANSWER_PROMPT

Flow = Generator[Any, Any, TurnResult]
OPENING = [{"role": "system", "content": "SYSTEM"}, {"role": "user", "content": "META"}]


def reply(text: str) -> RLMChatCompletion:
    return RLMChatCompletion(
        root_model="m",
        prompt=None,
        response=text,
        usage_summary=UsageSummary({"m": ModelUsageSummary(1, 1, 1)}),
        execution_time=0.0,
    )


def repl_result(stdout: str = "", stderr: str = "", final: str | None = None) -> REPLResult:
    return REPLResult(stdout=stdout, stderr=stderr, locals={}, final_answer=final)


def code(*bodies: str) -> str:
    return "\n".join(f"```repl\n{b}\n```" for b in bodies)


def start(
    max_iterations: int = 5,
    limits: Limits | None = None,
    bus: EventBus | None = None,
    **cfg: Any,
) -> tuple[TurnState, BudgetNode, Flow]:
    st = TurnState([dict(m) for m in OPENING])
    node = BudgetNode(limits or Limits())
    scope = RunScope(bus or EventBus(), run_id="run-test")
    flow = run_turn(st, LoopConfig(max_iterations=max_iterations, **cfg), node, scope)
    return st, node, flow


def finish(flow: Flow, value: Any) -> TurnResult:
    """Send ``value``; the flow must end right there."""
    with pytest.raises(StopIteration) as stop:
        flow.send(value)
    return stop.value.value


def test_first_effect_is_a_model_call_with_the_turn_prompt() -> None:
    st, _, flow = start(max_iterations=3)
    effect = next(flow)
    assert isinstance(effect, CallModel)
    assert effect.messages[:2] == OPENING
    assert effect.messages[-1]["role"] == "user"
    assert "Turn 1/3:" in effect.messages[-1]["content"]
    assert st.iteration == 1


def test_repl_answer_stops_before_later_blocks() -> None:
    st, _, flow = start()
    next(flow)
    text = code("answer['content'] = '42'; answer['ready'] = True", "llm_query('never')")
    first = flow.send(reply(text))
    assert first == RunCode("answer['content'] = '42'; answer['ready'] = True")
    result = finish(flow, repl_result(final="42"))  # the second block is never requested
    assert result == TurnResult("42", "answer", 1)
    assert len(st.iterations) == 1
    assert [b.code for b in st.iterations[0].code_blocks] == [first.code]
    assert st.iterations[0].final_answer == "42"


def test_all_blocks_run_when_none_answers() -> None:
    _, _, flow = start()
    next(flow)
    assert flow.send(reply(code("a = 1", "b = 2"))) == RunCode("a = 1")
    assert flow.send(repl_result()) == RunCode("b = 2")
    nxt = flow.send(repl_result())
    assert isinstance(nxt, CallModel)
    assert "Turn 2/5:" in nxt.messages[-1]["content"]


def test_final_marker_answer() -> None:
    st, _, flow = start()
    next(flow)
    result = finish(flow, reply("Done looking.\nFINAL(the answer (final))"))
    assert result == TurnResult("the answer (final)", "FINAL", 1)
    assert st.messages[-1] == {
        "role": "assistant",
        "content": "Done looking.\nFINAL(the answer (final))",
    }


def test_final_marker_after_code_without_answer() -> None:
    _, _, flow = start()
    next(flow)
    assert isinstance(flow.send(reply(code("x = 1") + "\nFINAL(x is one)")), RunCode)
    assert finish(flow, repl_result()) == TurnResult("x is one", "FINAL", 1)


def test_final_inside_a_fence_does_not_end_the_turn() -> None:
    _, _, flow = start()
    next(flow)
    assert isinstance(flow.send(reply("```\nFINAL(nope)\n```")), CallModel)


def test_final_var_reads_the_variable() -> None:
    st, _, flow = start()
    next(flow)
    effect = flow.send(reply("FINAL_VAR(result)"))
    assert effect == ReadVariable("result")
    assert finish(flow, "hello world") == TurnResult("hello world", "FINAL_VAR", 1)
    assert st.iterations[-1].final_answer == "hello world"


def test_unbound_final_var_continues() -> None:
    st, _, flow = start()
    next(flow)
    assert flow.send(reply('FINAL_VAR("missing")')) == ReadVariable("missing")
    nxt = flow.send(None)
    assert isinstance(nxt, CallModel)
    assert "Turn 2/5:" in nxt.messages[-1]["content"]
    assert st.iterations[0].final_answer is None
    assert finish(flow, reply("FINAL(ok)")).answer == "ok"


def test_out_of_iterations_asks_once_for_the_answer() -> None:
    st, _, flow = start(max_iterations=2)
    next(flow)
    assert isinstance(flow.send(reply("thinking 1")), CallModel)
    last = flow.send(reply("thinking 2"))
    assert isinstance(last, CallModel)
    assert last.messages[-1] == {"role": "user", "content": FINAL_ANSWER_PROMPT}
    result = finish(flow, reply("It is 7."))
    assert result == TurnResult("It is 7.", "default", 2)
    assert st.messages[-2] == {"role": "user", "content": FINAL_ANSWER_PROMPT}
    assert st.messages[-1] == {"role": "assistant", "content": "It is 7."}
    assert len(st.iterations) == 3


def test_out_of_iterations_final_marker_is_unwrapped() -> None:
    _, _, flow = start(max_iterations=1)
    next(flow)
    flow.send(reply("nothing yet"))
    assert finish(flow, reply("FINAL(7)")).answer == "7"


def test_out_of_iterations_final_var_is_resolved() -> None:
    _, _, flow = start(max_iterations=1)
    next(flow)
    flow.send(reply("nothing yet"))
    assert flow.send(reply("FINAL_VAR(result)")) == ReadVariable("result")
    assert finish(flow, "forty-two") == TurnResult("forty-two", "default", 1)


def test_out_of_iterations_unbound_final_var_falls_back_to_the_text() -> None:
    _, _, flow = start(max_iterations=1)
    next(flow)
    flow.send(reply("nothing yet"))
    assert flow.send(reply("FINAL_VAR(result)")) == ReadVariable("result")
    assert finish(flow, None).answer == "FINAL_VAR(result)"


def test_consecutive_errors_raise_with_partial_answer() -> None:
    st, _, flow = start(max_iterations=10, limits=Limits(max_errors=2))
    next(flow)
    flow.send(reply("first try\n" + code("1/0")))
    nxt = flow.send(repl_result(stderr="ZeroDivisionError: division by zero"))
    assert isinstance(nxt, CallModel)
    assert st.consecutive_errors == 1
    flow.send(reply("second try\n" + code("undefined")))
    with pytest.raises(ErrorThresholdExceededError) as info:
        flow.send(repl_result(stderr="NameError: name 'undefined' is not defined"))
    err = info.value
    assert err.error_count == 2 and err.threshold == 2
    assert err.last_error == "NameError: name 'undefined' is not defined"
    assert err.partial_answer == "second try\n" + code("undefined")
    assert st.best_partial == err.partial_answer


def test_a_clean_iteration_resets_the_error_count() -> None:
    st, _, flow = start(max_iterations=10, limits=Limits(max_errors=2))
    next(flow)
    for stderr in ("Boom", "", "Boom", "", "Boom"):
        flow.send(reply(code("x")))
        assert isinstance(flow.send(repl_result(stderr=stderr)), CallModel)
    assert st.consecutive_errors == 1


def test_answer_wins_over_a_broken_limit() -> None:
    _, node, flow = start(limits=Limits(max_tokens=10))
    node.charge("m", ModelUsageSummary(1, 500, 500))  # already far over the limit
    next(flow)
    assert finish(flow, reply("FINAL(made it)")) == TurnResult("made it", "FINAL", 1)

    _, node, flow = start(limits=Limits(max_tokens=10))
    node.charge("m", ModelUsageSummary(1, 500, 500))
    next(flow)
    flow.send(reply(code("answer['ready'] = True")))
    assert finish(flow, repl_result(final="also made it")).source == "answer"


def test_broken_limit_without_answer_raises() -> None:
    _, node, flow = start(limits=Limits(max_tokens=10))
    node.charge("m", ModelUsageSummary(1, 500, 500))
    next(flow)
    with pytest.raises(TokenLimitExceededError) as info:
        flow.send(reply("still looking"))
    assert info.value.partial_answer == "still looking"
    assert info.value.tokens_used == 1000


def test_timeout_before_the_first_iteration() -> None:
    _, node, flow = start(limits=Limits(max_timeout=1.0))
    node.started = time.perf_counter() - 10
    with pytest.raises(TimeoutExceededError) as info:
        next(flow)
    assert "before the first iteration" in str(info.value)
    assert info.value.partial_answer is None


def test_timeout_between_iterations_keeps_partial() -> None:
    _, node, flow = start(limits=Limits(max_timeout=5.0))
    next(flow)
    node.started = time.perf_counter() - 10
    with pytest.raises(TimeoutExceededError) as info:
        flow.send(reply("partial work"))
    assert info.value.partial_answer == "partial work"


def test_compaction_summarises_and_replaces_history() -> None:
    with mock.patch.object(rlm.core.loop, "get_context_limit", return_value=10):
        st, _, flow = start(compaction=True)
        ask = next(flow)
        assert isinstance(ask, CallModel)
        assert ask.messages[-1] == {"role": "user", "content": COMPACTION_PROMPT}
        assert ask.messages[:2] == OPENING
        record = flow.send(reply("SUMMARY-1"))
        assert record == RecordCompaction({"type": "summary", "content": "SUMMARY-1"})
        call = flow.send(None)
        assert isinstance(call, CallModel)
        assert st.compactions == 1
        assert st.messages[:2] == OPENING
        assert st.messages[2] == {"role": "assistant", "content": "SUMMARY-1"}
        assert "compacted (1 time(s))" in st.messages[3]["content"]
        assert "Turn 1/5:" in st.messages[4]["content"]
        assert len(st.messages) == 5
        # The iteration's messages are recorded too, then the answer ends the turn.
        segment = flow.send(reply("FINAL(done)"))
        assert isinstance(segment, RecordCompaction)
        assert segment.entry == [{"role": "assistant", "content": "FINAL(done)"}]
        assert finish(flow, None).answer == "done"


def test_no_compaction_below_the_threshold() -> None:
    _, _, flow = start(compaction=True)  # real limit: the tiny history is far below it
    effect = next(flow)
    assert isinstance(effect, CallModel)
    assert effect.messages[-1]["content"] != COMPACTION_PROMPT


def test_history_includes_the_final_assistant_message() -> None:
    st, _, flow = start()
    next(flow)
    flow.send(reply("look\n" + code("print(len(context))")))
    flow.send(repl_result(stdout="12\n"))
    flow.send(reply(code("answer['ready'] = True")))
    finish(flow, repl_result(final="twelve"))
    roles = [m["role"] for m in st.messages]
    assert roles == ["system", "user", "user", "assistant", "user", "user", "assistant", "user"]
    assert st.messages[4]["content"] == "REPL output:\n12"
    assert st.messages[6] == {"role": "assistant", "content": code("answer['ready'] = True")}


def test_events_are_emitted() -> None:
    bus = EventBus()
    seen: list[Event] = []
    bus.subscribe(seen.append)
    _, _, flow = start(bus=bus)
    next(flow)
    flow.send(reply(code("x = 1")))
    finish(flow, repl_result(final="1"))
    types = [e.type for e in seen]
    assert types == [
        "iteration_started",
        "model_reply",
        "code_cell_started",
        "code_cell_finished",
        "iteration_finished",
        "budget_update",
        "final_answer",
    ]
    assert seen[-1].data == {"answer": "1", "iterations": 1, "source": "answer"}
    update = seen[-2].data
    assert update["calls"] == 0 and update["iteration"] == 1
    assert update["remaining"] == {"calls": None, "tokens": None, "usd": None, "seconds": None}


def test_drive_sync_performs_effects_and_delivers_errors() -> None:
    _, _, flow = start()
    performed: list[Any] = []

    def perform(effect: Any) -> Any:
        performed.append(effect)
        if isinstance(effect, CallModel):
            return reply(code("boom()") if len(performed) == 1 else "FINAL(ok)")
        return repl_result(stderr="NameError")

    assert drive_sync(flow, perform).answer == "ok"
    assert [type(e) for e in performed] == [CallModel, RunCode, CallModel]

    _, _, flow = start()

    def interrupted(effect: Any) -> Any:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        drive_sync(flow, interrupted)
