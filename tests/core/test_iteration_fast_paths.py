"""The per-iteration shortcuts (issue 18) give what the long way gives.

Each shortcut skips work only where the result cannot differ: a code block with no
indented line is not dedented, output within the budget is not cut, an event payload
is not built while nobody listens (but is as soon as someone does).
"""

from __future__ import annotations

import textwrap

import pytest

from rlm.base.events import Event, EventBus, RunScope
from rlm.base.types import ModelUsageSummary, REPLResult, RLMChatCompletion, UsageSummary
from rlm.core.budget import BudgetNode, Limits
from rlm.core.loop import LoopConfig, TurnState, run_turn
from rlm.core.parsing import find_code_blocks, format_execution_result, truncate_middle

BODIES = [
    "x = 1",
    "x = 1\nprint(x)",
    "  x = 1\n  y = 2",
    "\tx = 1\n\ty = 2",
    "x = 1\n  \ny = 2",  # a whitespace-only line: dedent clears it
    "x = 1\n\t\ny = 2",
    "  \nx = 1",
    "if x:\n    y = 1\nz = 2",
    "for i in r:\n\tpass",
    "    if x:\n        y = 1",
    "x = 1 \ny = 2\t",
    "x = '''\n  kept\n'''",
]


@pytest.mark.parametrize("body", BODIES)
def test_a_code_block_is_dedented_as_textwrap_does(body: str) -> None:
    assert find_code_blocks(f"Step.\n```repl\n{body}\n```\n") == [textwrap.dedent(body).strip("\n")]


def test_output_exactly_at_the_budget_is_kept_whole_and_one_more_is_cut() -> None:
    out, err = "o" * 80, "e" * 20
    at = format_execution_result(REPLResult(out, err, {}), max_chars=100)
    assert at == f"{out}\n\n{err}"
    over = format_execution_result(REPLResult(out + "o", err, {}), max_chars=100)
    # stderr (within its quarter) is kept; stdout is cut head and tail to the rest.
    assert over == f"{truncate_middle(out + 'o', 80)}\n\n{err}"
    assert "characters omitted" in over


def _reply(text: str) -> RLMChatCompletion:
    usage = UsageSummary({"m": ModelUsageSummary(1, 1, 1)})
    return RLMChatCompletion("m", None, text, usage, 0.0)


def test_a_listener_that_subscribes_mid_turn_hears_the_rest_of_it() -> None:
    bus = EventBus()
    st = TurnState([{"role": "system", "content": "S"}, {"role": "user", "content": "M"}])
    scope = RunScope(bus, run_id="run-mid")
    flow = run_turn(st, LoopConfig(max_iterations=3), BudgetNode(Limits()), scope)
    next(flow)  # iteration_started went out to nobody
    seen: list[Event] = []
    bus.subscribe(seen.append)
    flow.send(_reply("```repl\nx = 1\n```"))
    with pytest.raises(StopIteration):
        flow.send(REPLResult("", "", {}, final_answer="1"))
    assert [e.type for e in seen] == [
        "model_reply",
        "code_cell_started",
        "code_cell_finished",
        "iteration_finished",
        "budget_update",
        "final_answer",
    ]
    assert all(e.data.get("iteration", 1) == 1 for e in seen)


def test_no_limits_still_stops_on_an_error_streak_when_max_errors_is_set() -> None:
    # ``max_errors`` alone is not "reservable": the loop must still count errors.
    st = TurnState([{"role": "system", "content": "S"}, {"role": "user", "content": "M"}])
    scope = RunScope(EventBus(), run_id="run-errors")
    flow = run_turn(st, LoopConfig(max_iterations=5), BudgetNode(Limits(max_errors=1)), scope)
    next(flow)
    flow.send(_reply("```repl\nboom()\n```"))
    with pytest.raises(Exception, match="error") as raised:
        flow.send(REPLResult("", "NameError: boom", {}))
    assert type(raised.value).__name__ == "ErrorThresholdExceededError"
    assert st.last_error == "NameError: boom"
