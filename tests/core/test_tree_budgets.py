"""Tree-wide budgets: reservations that concurrent children cannot overshoot, spending
per node in events, ``budget()`` in the REPL, and the event stream of a depth-2 run."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest
from probe_lm import ProbeLM

import rlm.core.rlm
from rlm import RLM, BudgetExceededError, TimeoutExceededError
from rlm.base.errors import BudgetExhaustedError, LLMCallLimitExceededError
from rlm.base.events import Event
from rlm.base.types import ModelUsageSummary, Prompt
from rlm.clients.pricing import register_price
from rlm.core.budget import Breach, BudgetNode, Estimate, Limits

PRICED = "tree-budget-probe"  # $1 per million tokens, in and out
register_price(PRICED, 1.0, 1.0)


def repl(code: str) -> str:
    return f"```repl\n{code}\n```"


def submit(expr: str, before: str = "") -> str:
    return repl(f"{before}answer['content'] = {expr}\nanswer['ready'] = True")


def is_root(prompt: Prompt) -> bool:
    return isinstance(prompt, list) and "ROOT" in str(prompt[1]["content"])


def scripted(root: str, child: str = "", **kwargs: Any) -> ProbeLM:
    def reply(prompt: Prompt) -> str:
        if isinstance(prompt, str):
            return f"ok:{prompt}"
        return root if is_root(prompt) else child

    kwargs.setdefault("latency", 0.01)
    return ProbeLM(reply=reply, **kwargs)


@contextmanager
def make(probe: ProbeLM, **kwargs: Any) -> Iterator[RLM]:
    with (
        mock.patch.object(rlm.core.rlm, "get_client", lambda b, k: probe),
        RLM(backend="openai", backend_kwargs={"model_name": probe.model_name}, **kwargs) as r,
    ):
        yield r


def collect(r: RLM) -> list[Event]:
    events: list[Event] = []
    lock = threading.Lock()

    def keep(event: Event) -> None:
        with lock:
            events.append(event)

    r.events.subscribe(keep)
    return events


# -- reservations on the budget tree -----------------------------------------------------


def test_reserve_settle_release() -> None:
    node = BudgetNode(Limits(max_llm_calls=3, max_tokens=100, max_budget=1.0))
    hold = node.reserve(Estimate(calls=1, tokens=40, usd=0.25))
    assert node.remaining() == {"calls": 2, "tokens": 60, "usd": 0.75, "seconds": None}
    node.settle("m", ModelUsageSummary(1, 10, 5, 0.05), hold)  # real usage replaces it
    assert node.remaining() == {
        "calls": 2,
        "tokens": 85,
        "usd": pytest.approx(0.95),
        "seconds": None,
    }
    other = node.reserve(Estimate(calls=1, tokens=80))
    with pytest.raises(BudgetExhaustedError, match="budget exhausted: max_tokens") as info:
        node.reserve(Estimate(calls=1, tokens=10))
    assert info.value.breach.kind == "tokens"
    assert node.refused is not None and node.refused.kind == "tokens"
    node.release(other)
    assert node.remaining()["tokens"] == 85 and node.calls == 1


def test_children_reserve_against_every_ancestor() -> None:
    root = BudgetNode(Limits(max_llm_calls=4))
    kids = [root.child(Limits()) for _ in range(3)]
    assert all(k.limits.max_llm_calls == 4 for k in kids)  # each sees the whole remainder
    for kid in kids:
        kid.reserve(Estimate())
    kids[0].reserve(Estimate())
    with pytest.raises(BudgetExhaustedError):
        kids[1].reserve(Estimate())  # the kid's own limit allows it; the root's does not
    assert root.refused == Breach("calls", 0, 4, 1, 4)
    assert kids[1].remaining()["calls"] == 0


def test_concurrent_reservations_never_overshoot() -> None:
    root = BudgetNode(Limits(max_llm_calls=50, max_budget=0.5))
    kids = [root.child(Limits()) for _ in range(8)]
    granted = Counter[int]()
    start = threading.Barrier(8)

    def work(i: int) -> None:
        start.wait()
        for _ in range(40):
            try:
                hold = kids[i].reserve(Estimate(calls=1, usd=0.01))
            except BudgetExhaustedError:
                continue
            granted[i] += 1
            kids[i].settle("m", ModelUsageSummary(1, 1, 1, 0.01), hold)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted.values()) == root.calls <= 50
    assert root.spent_usd <= 0.5 + 1e-9


def test_unlimited_trees_skip_reservations() -> None:
    node = BudgetNode().child(Limits(max_errors=3))
    assert not node.guarded
    assert node.remaining() == {"calls": None, "tokens": None, "usd": None, "seconds": None}


# -- eight concurrent children -----------------------------------------------------------

ROOT_FANOUT = "Fan out.\n" + repl("rs = rlm_query_batched([f'k{i}' for i in range(8)])")
CHILD_WORK = submit(
    "'done'", before="for i in range(5):\n    print(llm_query(context + '-' + str(i)))\n"
)


def child_outputs(events: list[Event]) -> str:
    return "\n".join(
        e.data["result"].stdout for e in events if e.type == "code_cell_finished" and e.depth == 1
    )


def test_max_llm_calls_holds_under_eight_concurrent_children() -> None:
    probe = scripted(ROOT_FANOUT, CHILD_WORK, latency=0.02)
    with make(probe, max_depth=2, max_concurrent_subcalls=8, max_llm_calls=20) as r:
        events = collect(r)
        with pytest.raises(LLMCallLimitExceededError) as info:
            r.completion("ctx", root_prompt="ROOT")
    err = info.value
    assert probe.attempts <= 20  # 1 + 8 * (1 + 5) = 49 were wanted
    assert err.call_limit == 20 and err.calls_used <= 20
    assert err.partial_answer == ROOT_FANOUT
    assert "Error: budget exhausted: max_llm_calls 20" in child_outputs(events)
    refused = [e for e in events if e.type == "subcall_finished" and e.data.get("error")]
    assert refused  # some sub-calls (or children) were refused rather than made
    assert sum(1 for p in probe.prompts if is_root(p)) == 1


def test_max_budget_holds_under_eight_concurrent_children() -> None:
    model = f"{PRICED}-usd"
    tight = {"cost_per_token": 1e-6, "sampling_args": {"max_tokens": 16}}
    full = scripted(ROOT_FANOUT, CHILD_WORK, model_name=model, **tight)
    with make(full, max_depth=2, max_concurrent_subcalls=8, max_iterations=1) as r:
        r.completion("ctx", root_prompt="ROOT")
    demand = full.get_usage_summary().total_cost or 0.0  # one fan-out, unconstrained

    budget = demand * 0.5
    probe = scripted(ROOT_FANOUT, CHILD_WORK, model_name=model, **tight)
    with make(probe, max_depth=2, max_concurrent_subcalls=8, max_budget=budget) as r:
        events = collect(r)
        with pytest.raises(BudgetExceededError) as info:
            r.completion("ctx", root_prompt="ROOT")
    spent = probe.get_usage_summary().total_cost or 0.0
    assert 0 < spent <= budget  # never exceeded, by any interleaving of the children
    assert info.value.spent <= info.value.budget == budget
    assert info.value.partial_answer == ROOT_FANOUT
    stopped = [
        e.data["error"]
        for e in events
        if e.type == "subcall_finished" and e.data["kind"] == "rlm" and e.data["error"]
    ]
    refused_in_cells = child_outputs(events).count("Error: budget exhausted: max_budget")
    assert refused_in_cells + sum("Budget exhausted" in error for error in stopped) > 0


def test_the_deadline_stops_the_running_cell_before_its_late_sub_call() -> None:
    # The deadline passes while the cell sleeps: the run stops then, in iteration 1
    # (no iteration finished, so no partial answer), and the sub-call the cell makes
    # after its sleep never reaches the model.
    code = "import time\ntime.sleep(0.3)\nprint(llm_query('late'))"
    probe = scripted("Slow.\n" + repl(code), latency=0.0)
    with make(probe, max_timeout=0.2) as r:
        events = collect(r)
        with pytest.raises(TimeoutExceededError) as info:
            r.completion("ctx", root_prompt="ROOT")
    assert "during iteration 1" in str(info.value)
    assert info.value.partial_answer is None
    assert not [e for e in events if e.type == "code_cell_finished"]
    assert "late" not in probe.prompts


# -- budget() in the REPL ----------------------------------------------------------------


def test_budget_in_the_repl_reports_what_remains() -> None:
    model = f"{PRICED}-repl"
    code = (
        "import json\n"
        "before = budget()\n"
        "llm_query('one')\n"
        "after = budget()\n"
        "kid = rlm_query('sub')\n"
    )
    child = submit("json.dumps(budget())", before="import json\n")
    probe = scripted(
        submit("json.dumps([before, after, json.loads(kid)])", before=code),
        child,
        model_name=model,
        cost_per_token=1e-6,
        sampling_args={"max_tokens": 32},
    )
    limits = {"max_llm_calls": 10, "max_tokens": 10**6, "max_budget": 1.0, "max_timeout": 60.0}
    with make(probe, max_depth=2, **limits) as r:
        before, after, in_child = json.loads(r.completion("ctx", root_prompt="ROOT").response)
    assert set(before) == {
        "calls",
        "tokens",
        "usd",
        "seconds",
        "context_window",
        "sub_context_window",
    }
    assert before["calls"] == 9  # the root's own first call is spent
    assert after["calls"] == 8
    assert after["tokens"] < before["tokens"] < 10**6
    assert after["usd"] < before["usd"] < 1.0
    assert 0 < after["seconds"] <= before["seconds"] <= 60.0
    assert in_child["calls"] == 7  # drawn from the parent: 2 root calls and the child's own
    assert in_child["usd"] < after["usd"]


def test_budget_without_limits_is_all_none() -> None:
    probe = scripted(submit("json.dumps(budget())", before="import json\n"))
    with make(probe) as r:
        assert json.loads(r.completion("ctx", root_prompt="ROOT").response) == {
            "calls": None,
            "tokens": None,
            "usd": None,
            "seconds": None,
            "context_window": None,  # "scripted" is in no table and has no override
            "sub_context_window": None,
        }


# -- spending per node in events ---------------------------------------------------------


def test_child_spending_is_reported_per_node() -> None:
    root = submit("' '.join(rlm_query_batched(['a', 'b']))")
    child = submit("llm_query(context)")
    probe = scripted(root, child)
    with make(probe, max_depth=2) as r:
        events = collect(r)
        result = r.completion("ctx", root_prompt="ROOT")
    assert result.response == "ok:a ok:b"
    finished = [e for e in events if e.type == "subcall_finished" and e.data["kind"] == "rlm"]
    assert len(finished) == 2
    for e in finished:
        assert e.data["usage"].total_calls == 2  # the child's own call and its llm_query
    updates = [e for e in events if e.type == "budget_update" and e.depth == 0]
    assert [u.data["iteration"] for u in updates] == [1]
    assert updates[0].data["calls"] == 1 + 2 * 2
    assert updates[0].data["remaining"] == {
        "calls": None,
        "tokens": None,
        "usd": None,
        "seconds": None,
    }


# -- events of a depth-2 run -------------------------------------------------------------


def test_event_order_and_completeness_for_a_depth_two_run() -> None:
    root = submit(
        "' '.join(kids) + ' ' + llm_query('leaf')",
        before="kids = rlm_query_batched(['a', 'b', 'c'])\n",
    )
    child = submit("llm_query(context)")
    probe = scripted(root, child, latency=0.005)
    with make(probe, max_depth=2, max_concurrent_subcalls=3) as r:
        events = collect(r)
        result = r.completion("ctx", root_prompt="ROOT")
    assert result.response == "ok:a ok:b ok:c ok:leaf"

    by_run: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        by_run[e.run_id].append(e)
    roots = [run for run, evs in by_run.items() if evs[0].parent_id is None]
    assert len(roots) == 1 and len(by_run) == 4
    root_id = roots[0]
    assert events[0].type == "run_started" and events[0].run_id == root_id
    assert events[-1].type == "run_finished" and events[-1].run_id == root_id

    for run, evs in by_run.items():
        kinds = [e.type for e in evs]
        assert kinds[0] == "run_started" and kinds[-1] == "run_finished", run
        assert kinds.count("iteration_started") == kinds.count("iteration_finished")
        assert kinds.count("iteration_finished") == kinds.count("budget_update")
        assert kinds.count("final_answer") == 1
        assert len({(e.session_id, e.turn) for e in evs}) == 1
        for before, after in itertools.pairwise(kinds):
            if before == "iteration_finished":
                assert after == "budget_update"
        assert len({e.depth for e in evs}) == 1
        assert len({e.parent_id for e in evs}) == 1

    started = [e for e in events if e.type == "subcall_started" and e.data["kind"] == "rlm"]
    finished = [e for e in events if e.type == "subcall_finished" and e.data["kind"] == "rlm"]
    assert len(started) == len(finished) == 3
    position = {id(e): i for i, e in enumerate(events)}
    for s in started:
        child_id = s.data["child_run_id"]
        (f,) = [f for f in finished if f.data["child_run_id"] == child_id]
        assert s.run_id == f.run_id == root_id
        child_events = by_run[child_id]
        assert all(e.parent_id == root_id and e.depth == 1 for e in child_events)
        assert s.data["child_depth"] == f.data["child_depth"] == 1
        assert position[id(s)] < position[id(child_events[0])]
        assert position[id(child_events[-1])] < position[id(f)]
        assert f.data["error"] is None and f.data["usage"].total_calls == 2

    for run, evs in by_run.items():
        llm = Counter(
            e.type for e in evs if e.type.startswith("subcall_") and e.data["kind"] == "llm"
        )
        assert llm["subcall_started"] == llm["subcall_finished"] == 1, run


def test_limits_leave_the_zero_overhead_path_alone() -> None:
    # No limits: no reservation, no lock, no estimate (the cost the benchmarks watch).
    probe = scripted(submit("llm_query('x')"))
    with make(probe) as r:
        started = time.perf_counter()
        r.completion("ctx", root_prompt="ROOT")
        session = r._session
        assert session is not None and session.node is not None
        assert not session.node.guarded
    assert time.perf_counter() - started < 5
