"""Stopping work in flight: ``max_timeout`` and asyncio cancellation from outside.

A real OpenAI client talks to a loopback server (``loopback_model``) whose hung calls
record the client going away: that is how these tests see a request in flight being
cancelled rather than waited for. A hung call lasts 60 s; every bound below (30 s) only
proves that it was not waited for.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from loopback_model import LoopbackModel, loopback_model

from rlm import RLM, CancellationError, TimeoutExceededError
from rlm.clients.scripted import ScriptedLM

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("openai") is None, reason="needs the openai package"
)

BOUND = 30.0  # seconds: far less than a hung call (60 s), far more than a stop needs
FIRST = "Looking first.\n```repl\nx = 1\n```"
WAITS_FOR_A_SUB_CALL = (
    "```repl\nr = llm_query('hang')\nanswer['content'] = r\nanswer['ready'] = True\n```"
)


def make(server: LoopbackModel, **kwargs: Any) -> RLM:
    backend_kwargs = {"model_name": "m", "base_url": server.url, "api_key": "k"}
    return RLM(backend="openai", backend_kwargs=backend_kwargs, max_iterations=5, **kwargs)


def run(rlm: RLM, mode: str) -> Any:
    if mode == "sync":
        return rlm.completion("the context", root_prompt="Q?")
    return asyncio.run(rlm.acompletion("the context", root_prompt="Q?"))


def stopped(call: Callable[[], Any]) -> tuple[BaseException, float]:
    started = time.perf_counter()
    try:
        call()
    except BaseException as exc:
        return exc, time.perf_counter() - started
    raise AssertionError("the run was not stopped")


# -- max_timeout ---------------------------------------------------------------------


def limits_reported(r: RLM) -> list[str]:
    """The kinds of the ``limit_exceeded`` events ``r`` will emit."""
    kinds: list[str] = []
    r.events.subscribe(lambda e: kinds.append(e.data["kind"]) if e.type == "limit_exceeded" else 0)
    return kinds


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_max_timeout_cancels_the_model_call_in_flight(mode: str) -> None:
    with loopback_model([FIRST], hang=frozenset({2})) as server, make(server, max_timeout=2) as r:
        kinds = limits_reported(r)
        error, took = stopped(lambda: run(r, mode))
        assert kinds == ["TimeoutExceededError"]
        assert isinstance(error, TimeoutExceededError), error
        assert took < BOUND
        assert server.disconnected.wait(BOUND)  # the request in flight was cancelled
        assert not server.hang_finished.is_set()
    assert error.partial_answer == FIRST  # iteration 1's reply
    assert error.timeout == 2
    assert "during iteration 2" in str(error)
    assert error.checkpoint is not None and error.checkpoint.iteration == 1


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_max_timeout_stops_the_running_cell_and_its_sub_call(mode: str) -> None:
    replies = [WAITS_FOR_A_SUB_CALL]
    with loopback_model(replies, hang=frozenset({2})) as server, make(server, max_timeout=2) as r:
        error, took = stopped(lambda: run(r, mode))
        assert isinstance(error, TimeoutExceededError), error
        assert took < BOUND
        assert server.disconnected.wait(BOUND)  # llm_query's request was cancelled
        assert not server.hang_finished.is_set()
    assert "during iteration 1" in str(error)
    assert error.partial_answer is None  # no iteration finished


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_max_timeout_stops_a_child_rlm_in_flight(mode: str) -> None:
    spawn = "```repl\nr = rlm_query('look deeper')\n```"
    with (
        loopback_model([spawn], hang=frozenset({2})) as server,  # 2: the child's first call
        make(server, max_timeout=2, max_depth=2) as r,
    ):
        error, took = stopped(lambda: run(r, mode))
        assert isinstance(error, TimeoutExceededError), error
        assert took < BOUND
        assert server.disconnected.wait(BOUND)
        assert not server.hang_finished.is_set()
        # The hung call was the child's: a fresh conversation, without the root's question.
        assert "Q?" in json.dumps(server.bodies[0]) and "Q?" not in json.dumps(server.bodies[1])


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_max_timeout_does_not_wait_for_a_cell_stuck_in_python(mode: str) -> None:
    release, running = threading.Event(), threading.Event()
    safety = threading.Timer(BOUND * 2, release.set)  # never leave the cell looping
    safety.start()
    loop = "running()\nwhile not released():\n    time.sleep(0.02)"
    root = ScriptedLM("root", responses=[f"```repl\nimport time\n{loop}\n```"])
    tools = {"released": release.is_set, "running": running.set}
    try:
        with (
            pytest.MonkeyPatch.context() as patch,
            RLM(backend="scripted", max_timeout=1, custom_tools=tools) as r,
        ):
            patch.setattr("rlm.core.rlm.get_client", lambda backend, kwargs: root)
            error, took = stopped(lambda: run(r, mode))
            assert isinstance(error, TimeoutExceededError), error
            assert running.is_set() and not release.is_set()  # stopped while it ran
            assert took < BOUND
    finally:
        release.set()
        safety.cancel()


def test_a_run_that_answers_in_time_is_not_affected() -> None:
    answer = "```repl\nanswer['content'] = 'done'\nanswer['ready'] = True\n```"
    with loopback_model([FIRST, answer]) as server, make(server, max_timeout=30) as r:
        assert run(r, "sync").response == "done"
        assert run(r, "async").response == "done"


# -- asyncio cancellation from outside -----------------------------------------------


def test_wait_for_raises_timeout_error_and_cancels_the_call() -> None:
    with loopback_model([FIRST], hang=frozenset({2})) as server, make(server) as r:

        async def main() -> None:
            await asyncio.wait_for(r.acompletion("ctx", root_prompt="Q?"), timeout=1.5)

        error, took = stopped(lambda: asyncio.run(main()))
        assert type(error) is TimeoutError, error
        assert took < BOUND
        assert server.disconnected.wait(BOUND)
        assert not server.hang_finished.is_set()


def test_asyncio_timeout_raises_timeout_error() -> None:
    with loopback_model([FIRST], hang=frozenset({2})) as server, make(server) as r:

        async def main() -> None:
            async with asyncio.timeout(1.5):
                await r.acompletion("ctx", root_prompt="Q?")

        error, _ = stopped(lambda: asyncio.run(main()))
        assert type(error) is TimeoutError, error
        assert server.disconnected.wait(BOUND)


def test_a_failing_task_group_cancels_the_run_cleanly() -> None:
    with loopback_model([FIRST], hang=frozenset({2})) as server, make(server) as r:

        async def fail_once_hung() -> None:
            await asyncio.to_thread(server.hung.wait, BOUND)
            raise ValueError("sibling failed")

        async def main() -> None:
            async with asyncio.TaskGroup() as group:
                group.create_task(r.acompletion("ctx", root_prompt="Q?"))
                group.create_task(fail_once_hung())

        error, took = stopped(lambda: asyncio.run(main()))
        assert isinstance(error, ExceptionGroup), error
        # Only the sibling's error: the cancelled run raised CancelledError, as it must.
        assert [type(e) for e in error.exceptions] == [ValueError]
        assert took < BOUND
        assert server.disconnected.wait(BOUND)


def test_outside_cancellation_leaves_the_session_usable_and_resumable() -> None:
    answer = "```repl\nanswer['content'] = 'done'\nanswer['ready'] = True\n```"
    with (
        loopback_model([FIRST, "never sent", answer], hang=frozenset({2})) as server,
        make(server, persistent=True) as r,
    ):

        async def main() -> None:
            task = asyncio.ensure_future(r.acompletion("ctx", root_prompt="Q?"))
            await asyncio.to_thread(server.hung.wait, BOUND)
            task.cancel()
            await task

        error, _ = stopped(lambda: asyncio.run(main()))
        assert isinstance(error, asyncio.CancelledError), error
        assert server.disconnected.wait(BOUND)
        # Resumed from the stopped turn's checkpoint: iteration 1 is not asked again.
        result = asyncio.run(r.acompletion("ctx", root_prompt="Q?", resume=True))
        assert result.response == "done"
        assert server.calls == 3


def test_rlm_cancel_still_raises_cancellation_error() -> None:
    with loopback_model([FIRST], hang=frozenset({2})) as server, make(server) as r:
        kinds = limits_reported(r)

        async def main() -> None:
            task = asyncio.ensure_future(r.acompletion("ctx", root_prompt="Q?"))
            await asyncio.to_thread(server.hung.wait, BOUND)
            await asyncio.to_thread(r.cancel)
            await task

        error, _ = stopped(lambda: asyncio.run(main()))
        assert isinstance(error, CancellationError), error
        assert error.partial_answer == FIRST
        assert server.disconnected.wait(BOUND)
        assert kinds == ["cancelled"]
