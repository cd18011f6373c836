"""rlm_query / rlm_query_batched: child RLMs, their order, limits, costs and isolation.

A child's prompt becomes its ``context`` (as in ``rlms``): its messages only describe the
context's size. So the scripts below tell the root from a child by the root's
``root_prompt`` and let child code read its own ``context``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest

import rlm.core.rlm
from rlm import RLM, BudgetExceededError, CancellationError
from rlm.base.events import Event
from rlm.base.types import Prompt, RLMChatCompletion
from rlm.clients.scripted import ScriptedLM
from rlm.clients.tokens import estimate_tokens
from rlm.logger import RLMLogger

ROOT = "ROOT TASK"


def block(code: str) -> str:
    return f"```repl\n{code}\n```"


def submit(expr: str, before: str = "") -> str:
    return block(f"{before}answer['content'] = {expr}\nanswer['ready'] = True")


ECHO_CHILD = submit("'child:' + context")


def is_root(prompt: Prompt) -> bool:
    return isinstance(prompt, list) and f"Answer the following: {ROOT}" in prompt[1]["content"]


def is_child(prompt: Prompt) -> bool:
    return isinstance(prompt, list) and not is_root(prompt)


def context_length(prompt: Prompt) -> int:
    assert isinstance(prompt, list)
    match = re.search(r"str of ([\d,]+) total characters", str(prompt[1]["content"]))
    assert match is not None
    return int(match.group(1).replace(",", ""))


def scripted(
    root_reply: str | Callable[[Prompt], str],
    child_reply: str | Callable[[Prompt], str] = ECHO_CHILD,
    leaf_reply: Callable[[str], str] = lambda p: "plain:" + p,
    **kwargs: Any,
) -> ScriptedLM:
    """One client serving the root run, the child runs and plain sub-calls."""

    def respond(prompt: Prompt) -> str:
        if isinstance(prompt, str):
            return leaf_reply(prompt)
        reply = root_reply if is_root(prompt) else child_reply
        return reply(prompt) if callable(reply) else reply

    return ScriptedLM("root", responder=respond, **kwargs)


@contextmanager
def make_rlm(client: ScriptedLM, **kwargs: Any) -> Iterator[RLM]:
    kwargs.setdefault("max_depth", 2)

    def factory(backend: str, backend_kwargs: dict[str, Any]) -> ScriptedLM:
        return client

    with (
        mock.patch.object(rlm.core.rlm, "get_client", factory),
        RLM(backend="openai", backend_kwargs={"model_name": "root"}, **kwargs) as r,
    ):
        yield r


def complete(client: ScriptedLM, **kwargs: Any) -> RLMChatCompletion:
    with make_rlm(client, **kwargs) as r:
        return r.completion("root context", root_prompt=ROOT)


def test_rlm_query_spawns_a_child_rlm() -> None:
    client = scripted(submit("rlm_query('look at this')"))
    result = complete(client)
    assert result.response == "child:look at this"
    child_calls = [p for p in client.prompts if is_child(p)]
    assert len(child_calls) == 1
    messages = child_calls[0]
    assert isinstance(messages, list)
    assert messages[0]["role"] == "system"
    assert "Recursive Language Model" in messages[0]["content"]
    assert context_length(messages) == len("look at this")
    assert len(client.prompts) == 2


def test_batched_results_in_prompt_order_with_capped_concurrency() -> None:
    lock = threading.Condition()
    state = {"in_flight": 0, "max": 0, "children": 0}

    def child(prompt: Prompt) -> str:
        with lock:
            state["in_flight"] += 1
            state["children"] += 1
            state["max"] = max(state["max"], state["in_flight"])
            lock.notify_all()
            # Wait (bounded) for the others, so the cap is observed, not just allowed.
            lock.wait_for(lambda: state["in_flight"] >= 4, timeout=2)
        time.sleep(0.05)
        with lock:
            state["in_flight"] -= 1
        return ECHO_CHILD

    client = scripted(
        submit("'|'.join(rlm_query_batched([f'p{i}' for i in range(8)]))"), child_reply=child
    )
    started = time.perf_counter()
    result = complete(client, max_concurrent_subcalls=4)
    assert time.perf_counter() - started < 20
    assert result.response == "|".join(f"child:p{i}" for i in range(8))
    assert state["children"] == 8
    assert state["max"] == 4


def test_a_failing_child_only_spoils_its_own_slot() -> None:
    bad = "this prompt makes the child fail"

    def child(prompt: Prompt) -> str:
        if context_length(prompt) == len(bad):
            raise RuntimeError("model exploded")
        return ECHO_CHILD

    code = f"rs = rlm_query_batched(['a', {bad!r}, 'c'])\nprint(rs)\n"
    errors: list[Any] = []
    client = scripted(submit("'\\n'.join(rs)", before=code), child_reply=child)
    result = complete(client, on_subcall_complete=lambda *a: errors.append(a[3]))
    first, second, third = result.response.split("\n")
    assert first == "child:a"
    assert second.startswith("Error") and "model exploded" in second
    assert third == "child:c"
    assert sum(e is not None for e in errors) == 1
    assert len(errors) == 3


def test_child_cost_counts_toward_the_parent_usage() -> None:
    client = scripted(submit("' '.join(rlm_query_batched(['a', 'b', 'c']))"), cost_per_token=1e-6)
    result = complete(client)
    assert result.response == "child:a child:b child:c"
    assert result.usage_summary.total_calls == 4
    assert result.usage_summary.to_dict() == client.get_usage_summary().to_dict()
    assert result.usage_summary.total_cost == pytest.approx(client.get_usage_summary().total_cost)


def test_children_spending_cannot_overshoot_the_parent_budget() -> None:
    # Each child reserves its first call before it is made; once the parent's budget is
    # spoken for, further children are refused and the parent stops at its next check.
    root_reply = "Delegating.\n" + block("rs = rlm_query_batched([f'q{i}' for i in range(8)])")
    tight = {"cost_per_token": 1e-6, "sampling_args": {"max_tokens": 64}}

    probe = scripted(root_reply, **tight)
    with make_rlm(probe, max_iterations=1) as r:
        r.completion("root context", root_prompt=ROOT)
    root_cost = (estimate_tokens(probe.prompts[0]) + estimate_tokens(root_reply)) * 1e-6
    child_cost = max(
        (estimate_tokens(p) + estimate_tokens(ECHO_CHILD)) * 1e-6
        for p in probe.prompts
        if is_child(p)
    )

    budget = root_cost + 3.5 * child_cost
    client = scripted(root_reply, **tight)
    with pytest.raises(BudgetExceededError) as info:
        complete(client, max_budget=budget)
    err = info.value
    assert err.budget == budget
    assert err.spent <= budget
    assert (client.get_usage_summary().total_cost or 0) <= budget
    assert err.partial_answer == root_reply
    assert "after iteration 1" in str(err)
    assert sum(1 for p in client.prompts if is_root(p)) == 1
    assert 1 <= sum(1 for p in client.prompts if is_child(p)) < 8


def test_max_depth_one_makes_rlm_query_a_plain_llm_query() -> None:
    client = scripted(submit("rlm_query('sub') + ' ' + ' '.join(rlm_query_batched(['x', 'y']))"))
    result = complete(client, max_depth=1)
    assert result.response == "plain:sub plain:x plain:y"
    assert sorted(p for p in client.prompts if isinstance(p, str)) == ["sub", "x", "y"]
    assert not any(is_child(p) for p in client.prompts)


def test_rlm_query_at_the_depth_limit_is_a_plain_call() -> None:
    client = scripted(
        submit("rlm_query('child')"),
        child_reply=submit("context + '>' + rlm_query('leaf')"),
    )
    assert complete(client, max_depth=2).response == "child>plain:leaf"


def test_depth_three_chain() -> None:
    child_code = submit(
        "context + '>' + r",
        before="r = rlm_query('level2') if context == 'level1' else rlm_query('leaf')\n",
    )
    depths: list[int] = []
    client = scripted(submit("rlm_query('level1')"), child_reply=child_code)
    result = complete(client, max_depth=3, on_subcall_start=lambda d, m, p: depths.append(d))
    assert result.response == "level1>level2>plain:leaf"
    assert depths == [1, 2]
    assert sum(1 for p in client.prompts if is_child(p)) == 2
    assert "leaf" in client.prompts


CHILD_NOISE = """\
import time
tag = context
for i in range(200):
    print(f"{tag}:{i}")
    if i % 40 == 0:
        time.sleep(0.002)
with open("notes.txt", "w") as f:
    f.write(tag)
time.sleep(0.01)
with open("notes.txt") as f:
    back = f.read()
answer['content'] = back
answer['ready'] = True"""


def test_concurrent_children_never_mix_output_or_files() -> None:
    tags = [f"T{i}" for i in range(8)]
    root_code = f"print('root-start')\nres = rlm_query_batched({tags!r})\nprint('root-end')\n"
    client = scripted(submit("'|'.join(res)", before=root_code), child_reply=block(CHILD_NOISE))

    cells: list[Event] = []
    with make_rlm(client, max_concurrent_subcalls=8, logger=RLMLogger()) as r:
        r.events.subscribe(lambda e: cells.append(e) if e.type == "code_cell_finished" else None)
        result = r.completion("root context", root_prompt=ROOT)

    # Each child read back its own file.
    assert result.response == "|".join(tags)

    # Each child's REPL result holds exactly its own 200 lines.
    child_cells = [e for e in cells if e.depth == 1]
    assert len(child_cells) == 8
    seen = set()
    for event in child_cells:
        res = event.data["result"]
        lines = res.stdout.splitlines()
        tag = lines[0].split(":")[0]
        assert lines == [f"{tag}:{i}" for i in range(200)]
        assert res.stderr == ""
        seen.add(tag)
    assert seen == set(tags)
    root_cells = [e for e in cells if e.depth == 0]
    assert [e.data["result"].stdout for e in root_cells] == ["root-start\nroot-end\n"]

    # The same holds for the children's trajectories collected by the parent.
    assert result.metadata is not None
    root_block = result.metadata["iterations"][0]["code_blocks"][0]["result"]
    children = root_block["rlm_calls"]
    assert [c["response"] for c in children] == tags
    for tag, child in zip(tags, children, strict=True):
        child_stdout = child["metadata"]["iterations"][0]["code_blocks"][0]["result"]["stdout"]
        assert child_stdout.splitlines() == [f"{tag}:{i}" for i in range(200)]


def test_rlm_query_with_model_runs_the_child_on_that_model() -> None:
    root = scripted(submit("rlm_query('task', model='small')"))
    small = ScriptedLM("small", responses=[ECHO_CHILD])
    built: list[dict[str, Any]] = []

    def factory(backend: str, backend_kwargs: dict[str, Any]) -> ScriptedLM:
        built.append(dict(backend_kwargs))
        return small if backend_kwargs.get("model_name") == "small" else root

    starts: list[tuple[int, str, str]] = []
    with (
        mock.patch.object(rlm.core.rlm, "get_client", factory),
        RLM(
            backend="openai",
            backend_kwargs={"model_name": "root"},
            max_depth=2,
            on_subcall_start=lambda *a: starts.append(a),
            allowed_models=["small"],  # REPL code may only name registered models
        ) as r,
    ):
        result = r.completion("root context", root_prompt=ROOT)
    assert result.response == "child:task"
    assert len(small.prompts) == 1 and is_child(small.prompts[0])
    assert not any(is_child(p) for p in root.prompts)
    assert [kw["model_name"] for kw in built] == ["root", "small"]
    assert starts == [(1, "small", "task")]
    assert set(result.usage_summary.model_usage_summaries) == {"root", "small"}


@pytest.mark.parametrize("call", ["rlm_query('child')", "rlm_query_batched(['c1', 'c2'])"])
def test_ctrl_c_in_a_child_cancels_the_whole_run(call: str) -> None:
    def child(prompt: Prompt) -> str:
        raise KeyboardInterrupt

    client = scripted(block(f"r = {call}\nprint(r)"), child_reply=child)
    with pytest.raises(CancellationError):
        complete(client, max_iterations=3)
    assert sum(1 for p in client.prompts if is_root(p)) == 1  # the root stopped at once
