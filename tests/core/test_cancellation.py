"""Cancelling a run: task cancellation, ``RLM.cancel()`` from another thread, Ctrl-C.

Each stops children and in-flight LM calls within a second and leaves a persistent
session usable. ``RLM.cancel()`` and Ctrl-C raise ``CancellationError`` with the partial
answer; cancelling the awaiting task raises ``asyncio.CancelledError`` (Python's
contract), the partial answer then being in the ``limit_exceeded`` event.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest
from probe_lm import ProbeLM

import rlm.core.rlm
from rlm import RLM, CancellationError
from rlm.base.cancel import CancelToken
from rlm.base.types import Prompt

SLOW = 10.0  # an LM call that a working cancellation never waits for
FIRST = "Looking first.\n```repl\nx = 1\n```"


def repl(code: str) -> str:
    return f"```repl\n{code}\n```"


def is_root(prompt: Prompt) -> bool:
    return isinstance(prompt, list) and "ROOT" in str(prompt[1]["content"])


@contextmanager
def make(probe: ProbeLM, **kwargs: Any) -> Iterator[RLM]:
    with (
        mock.patch.object(rlm.core.rlm, "get_client", lambda b, k: probe),
        RLM(backend="openai", backend_kwargs={"model_name": "probe"}, **kwargs) as r,
    ):
        yield r


def stopped_partials(r: RLM) -> list[Any]:
    """The partial answers of the ``limit_exceeded`` events ``r`` will emit."""
    seen: list[Any] = []
    r.events.subscribe(
        lambda e: seen.append(e.data["partial_answer"]) if e.type == "limit_exceeded" else None
    )
    return seen


def wait_until(predicate: Any, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return bool(predicate())


class Script:
    """Root: FIRST, then ``second`` (slow when ``slow_second``), then an answer."""

    def __init__(self, second: str, child: str = "", slow_second: bool = True) -> None:
        self.second, self.child, self.slow_second = second, child, slow_second
        self.root_calls = 0
        self.lock = threading.Lock()

    def latency(self, prompt: Prompt) -> float:
        if isinstance(prompt, str):
            return SLOW if prompt.startswith("slow") else 0.01
        if is_root(prompt):
            with self.lock:
                self.root_calls += 1
                n = self.root_calls
            return SLOW if n == 2 and self.slow_second else 0.0
        return 0.0

    def reply(self, prompt: Prompt) -> str:
        if isinstance(prompt, str):
            if prompt == "boom":
                raise KeyboardInterrupt  # what Ctrl-C looks like inside a client
            return f"ok:{prompt}"
        if not is_root(prompt):
            return self.child
        if "REPL output" not in str(prompt[-2:]) and "x = 1" not in str(prompt):
            return FIRST
        if sum(1 for m in prompt if m.get("role") == "assistant") == 1:
            return self.second
        return repl("answer['content'] = 'done'\nanswer['ready'] = True")


# -- the token ---------------------------------------------------------------------------


def test_token_callbacks() -> None:
    token = CancelToken()
    fired: list[str] = []
    unregister = token.on_cancel(lambda: fired.append("a"))
    token.on_cancel(lambda: fired.append("b"))
    unregister()
    token.cancel("stop")
    token.cancel("again")  # idempotent
    assert fired == ["b"] and token.cancelled and token.reason == "stop"
    token.on_cancel(lambda: fired.append("late"))  # already cancelled: runs at once
    assert fired == ["b", "late"]
    with pytest.raises(CancellationError, match="stop"):
        token.raise_if_cancelled()


# -- asyncio task cancellation -----------------------------------------------------------


def test_task_cancel_stops_the_run_and_its_batched_calls() -> None:
    script = Script(repl("ys = llm_query_batched([f'slow{i}' for i in range(8)])"))
    probe = ProbeLM(latency=script.latency, reply=script.reply)

    async def main(r: RLM) -> tuple[float, BaseException | None]:
        task = asyncio.ensure_future(r.acompletion("ctx", root_prompt="ROOT"))
        await asyncio.to_thread(wait_until, lambda: probe.inflight == 8)
        started = time.perf_counter()
        task.cancel()
        try:
            await task
        except BaseException as exc:
            return time.perf_counter() - started, exc
        return time.perf_counter() - started, None

    with make(probe, persistent=True) as r:
        partials = stopped_partials(r)
        script.slow_second = False
        elapsed, error = asyncio.run(main(r))
        assert isinstance(error, asyncio.CancelledError)
        assert elapsed < 1.0
        assert partials == [FIRST]  # the last finished iteration's reply
        assert wait_until(lambda: probe.inflight == 0, 1.0)  # in-flight calls cancelled
        assert probe.completed == 2  # the two root calls; no slow call ever finished

        # The persistent session is usable, and its contexts and histories aligned.
        script.second = repl("answer['content'] = 'second run'\nanswer['ready'] = True")
        script.root_calls = 0
        result = asyncio.run(r.acompletion("ctx2", root_prompt="ROOT"))
        assert result.response == "second run"
        env = r._persistent_env
        assert env is not None
        assert env.get_context_count() == env.get_history_count() == 2


def test_task_cancel_interrupts_the_root_model_call() -> None:
    script = Script(repl("x = 2"))  # the second root call sleeps SLOW seconds
    probe = ProbeLM(latency=script.latency, reply=script.reply)

    async def main(r: RLM) -> tuple[float, BaseException | None]:
        task = asyncio.ensure_future(r.acompletion("ctx", root_prompt="ROOT"))
        await asyncio.to_thread(wait_until, lambda: script.root_calls == 2)
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        task.cancel()
        try:
            await task
        except BaseException as exc:
            return time.perf_counter() - started, exc
        return time.perf_counter() - started, None

    with make(probe) as r:
        partials = stopped_partials(r)
        elapsed, error = asyncio.run(main(r))
    assert isinstance(error, asyncio.CancelledError)
    assert elapsed < 1.0
    assert partials == [FIRST]


# -- RLM.cancel() from another thread ----------------------------------------------------


def test_cancel_from_another_thread_during_stream_stops_children() -> None:
    child = repl(
        "ys = llm_query_batched([f'slow{context}{i}' for i in range(3)])\n"
        "answer['content'] = 'never'\nanswer['ready'] = True"
    )
    script = Script(repl("ks = rlm_query_batched([f'k{i}' for i in range(4)])"), child)
    script.slow_second = False
    probe = ProbeLM(latency=script.latency, reply=script.reply)
    with make(probe, max_depth=2, max_concurrent_subcalls=4) as r:
        stream = r.stream("ctx", root_prompt="ROOT")
        started = None
        seen: list[str] = []
        with pytest.raises(CancellationError) as info:
            for event in stream:
                seen.append(event.type)
                if started is None and probe.inflight == 12:  # 4 children x 3 slow calls
                    started = time.perf_counter()
                    threading.Thread(target=r.cancel).start()
                elif started is None and event.type == "code_cell_started" and event.depth == 1:
                    assert wait_until(lambda: probe.inflight == 12, 2.0)
                    started = time.perf_counter()
                    threading.Thread(target=r.cancel).start()
        assert started is not None
        assert time.perf_counter() - started < 1.0
        assert info.value.partial_answer is not None
        assert wait_until(lambda: probe.inflight == 0, 1.0)
        assert seen[-1] == "run_finished"
        # The session survives: a new turn runs normally.
        script.root_calls, script.second = (
            0,
            repl("answer['content'] = 'ok'\nanswer['ready'] = True"),
        )
        assert r.completion("again", root_prompt="ROOT").response == "ok"


def test_cancel_during_a_sync_completion_cancels_the_batch() -> None:
    script = Script(repl("ys = llm_query_batched([f'slow{i}' for i in range(10)])"))
    script.slow_second = False
    probe = ProbeLM(latency=script.latency, reply=script.reply)
    outcome: dict[str, Any] = {}

    def run(r: RLM) -> None:
        try:
            r.completion("ctx", root_prompt="ROOT")
        except BaseException as exc:
            outcome["error"] = exc
        outcome["done"] = time.perf_counter()

    with make(probe, persistent=True) as r:
        worker = threading.Thread(target=run, args=(r,))
        worker.start()
        assert wait_until(lambda: probe.inflight == 10)
        started = time.perf_counter()
        r.cancel()
        worker.join(2)
        assert outcome["done"] - started < 1.0
        assert isinstance(outcome["error"], CancellationError)
        assert wait_until(lambda: probe.inflight == 0, 1.0)
        r.cancel()  # idle: a no-op
        script.root_calls, script.second = (
            0,
            repl("answer['content'] = 'ok'\nanswer['ready'] = True"),
        )
        assert r.completion("again", root_prompt="ROOT").response == "ok"


# -- Ctrl-C ------------------------------------------------------------------------------


def test_keyboard_interrupt_in_a_child_cancels_the_whole_tree() -> None:
    child = repl(
        "if context == 'k0':\n"
        "    llm_query('boom')\n"
        "for i in range(40):\n"
        "    llm_query(context + str(i))\n"
        "answer['content'] = 'finished'\nanswer['ready'] = True"
    )
    script = Script(repl("ks = rlm_query_batched([f'k{i}' for i in range(4)])"), child)
    script.slow_second = False
    probe = ProbeLM(latency=script.latency, reply=script.reply)
    with make(probe, max_depth=2, max_concurrent_subcalls=4, persistent=True) as r:
        started = time.perf_counter()
        with pytest.raises(CancellationError) as info:
            r.completion("ctx", root_prompt="ROOT")
        assert time.perf_counter() - started < 1.0
        assert info.value.partial_answer is not None
        time.sleep(0.2)
        leaves = sum(1 for p in probe.prompts if isinstance(p, str))
        time.sleep(0.2)
        assert sum(1 for p in probe.prompts if isinstance(p, str)) == leaves  # all stopped
        assert leaves < 3 * 40  # the other children did not run to the end

        script.root_calls, script.second = (
            0,
            repl("answer['content'] = 'ok'\nanswer['ready'] = True"),
        )
        assert r.completion("again", root_prompt="ROOT").response == "ok"
        env = r._persistent_env
        assert env is not None
        assert env.get_context_count() == env.get_history_count() == 2
