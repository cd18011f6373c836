"""Security hardening, finding 3 (handler part): batched sub-calls are bounded.

A batch has a length cap (``max_batch_size``); it runs on a fixed pool of workers (no
asyncio task per prompt, at most ``batch_max_concurrent`` in flight); it counts against
``max_llm_calls`` before any work (the excess fails at once); and no client is made for
a call that the budget refuses.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest

import rlm.core.rlm
from rlm import RLM
from rlm.base.errors import BudgetExhaustedError
from rlm.base.types import Prompt
from rlm.base.wire import send_lm_request_batched
from rlm.clients.base_lm import BaseLM
from rlm.clients.scripted import ScriptedLM
from rlm.core.budget import BudgetNode, Limits
from rlm.core.lm_handler import LMHandler
from rlm.environments.local_repl import LocalREPL

OVER_DEFAULT_CAP = 10_001  # the default max_batch_size is 10,000


def _engine_task(task: asyncio.Task[Any]) -> bool:
    code = getattr(task.get_coro(), "cr_code", None)
    return "/rlm/" in getattr(code, "co_filename", "/rlm/")


class TaskCountingLM(ScriptedLM):
    """Replies ``ok:<prompt>``; at each call, records how many asyncio tasks exist on
    the loop running it (the handler's)."""

    def __init__(self, model_name: str = "counted") -> None:
        super().__init__(model_name=model_name, responder=self._reply)
        self.max_tasks = 0
        self.calls = 0
        self._count_lock = threading.Lock()

    def _reply(self, prompt: Prompt) -> str:
        try:
            running = asyncio.all_tasks(asyncio.get_running_loop())
        except RuntimeError:  # a sync call: no loop
            running = set()
        # The engine's own tasks only: the loop is shared by the process's handlers, and
        # another test's SDK client may still be closing on it (an httpx ``aclose``).
        tasks = sum(1 for t in running if _engine_task(t))
        with self._count_lock:
            self.calls += 1
            self.max_tasks = max(self.max_tasks, tasks)
        return f"ok:{prompt}"


class Factory:
    """A ``client_factory`` that records every client it makes."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def __call__(self, model: str) -> BaseLM:
        self.made.append(model)
        return ScriptedLM(model_name=model, responses=["made"])


@pytest.fixture
def lm() -> TaskCountingLM:
    return TaskCountingLM()


@contextmanager
def handler_of(client: BaseLM, **kwargs: Any) -> Iterator[LMHandler]:
    handler = LMHandler(client, **kwargs)
    try:
        yield handler
    finally:
        handler.close()


def test_batch_runs_on_a_fixed_pool_of_workers(lm: TaskCountingLM) -> None:
    prompts: list[Prompt] = [f"p{i}" for i in range(2000)]
    with handler_of(lm, batch_max_concurrent=4) as handler:
        results = handler.call_batched(prompts)
    assert [r.response for r in results] == [f"ok:p{i}" for i in range(2000)]
    assert lm.calls == 2000
    # 4 workers plus the batch's own task (and slack): never one task per prompt.
    assert lm.max_tasks <= 4 + 4, lm.max_tasks


def test_batch_larger_than_calls_left_fails_the_excess_without_work(lm: TaskCountingLM) -> None:
    node = BudgetNode(Limits(max_llm_calls=2))
    with handler_of(lm) as handler:
        results = handler.route(1, node).llm_query_batched([f"p{i}" for i in range(5000)])
    assert len(results) == 5000
    assert [r.response for r in results[:2]] == ["ok:p0", "ok:p1"]
    assert all(r.error and "max_llm_calls 2" in r.error for r in results[2:])
    assert lm.calls == 2
    assert lm.max_tasks <= 2 + 4, lm.max_tasks  # no task was made for a refused prompt
    assert node.refused is not None and node.refused.kind == "calls"


def test_batch_with_no_calls_left_makes_no_client() -> None:
    factory = Factory()
    node = BudgetNode(Limits(max_llm_calls=0))
    with handler_of(ScriptedLM(model_name="root"), client_factory=factory) as handler:
        results = handler.call_batched(["a", "b", "c"], "other-model", 1, node)
    assert all(r.error and "max_llm_calls" in r.error for r in results)
    assert factory.made == []


def test_refused_single_call_makes_no_client() -> None:
    """``llm_query(p, model=f"m{i}")`` with ``max_llm_calls`` used up made and cached a
    provider client per name before the budget said no."""
    factory = Factory()
    node = BudgetNode(Limits(max_llm_calls=0))
    with handler_of(ScriptedLM(model_name="root"), client_factory=factory) as handler:
        for i in range(200):
            with pytest.raises(BudgetExhaustedError, match="max_llm_calls"):
                handler.call("p", f"m{i}", 1, node)
        assert factory.made == []
        assert set(handler.clients) == {"root"}


def test_oversized_batch_is_refused_at_once_naming_the_setting(lm: TaskCountingLM) -> None:
    with handler_of(lm) as handler:
        repl = LocalREPL(lm_route=handler.route(1))
        try:
            result = repl.execute_code(
                f"r = llm_query_batched([''] * {OVER_DEFAULT_CAP})\nprint(len(r))\nprint(r[-1])"
            )
        finally:
            repl.cleanup()
    assert result.stdout.splitlines()[0] == str(OVER_DEFAULT_CAP)
    assert "max_batch_size" in result.stdout and "10,001" in result.stdout
    assert lm.calls == 0


def test_oversized_batch_over_the_socket_is_refused(lm: TaskCountingLM) -> None:
    with handler_of(lm) as handler:
        address = handler.start()
        out = send_lm_request_batched(address, ["x"] * OVER_DEFAULT_CAP)
    assert len(out) == OVER_DEFAULT_CAP
    assert all(not r.success and "max_batch_size" in (r.error or "") for r in out)
    assert lm.calls == 0


# -- end to end through RLM ------------------------------------------------------------


def _repl(code: str) -> str:
    return f"```repl\n{code}\n```"


def _run(root_code: str, made: list[str], **kwargs: Any) -> str:
    """Run one RLM turn whose root writes ``root_code`` then submits ``out``; returns
    the answer. ``made`` gets the model names clients are made for."""
    root = ScriptedLM(
        model_name="root-sec",
        cost_per_token=0.0,
        responses=[_repl(root_code + "\nanswer['content'] = out\nanswer['ready'] = True")],
    )

    def get_client(backend: str, backend_kwargs: dict[str, Any]) -> BaseLM:
        name = str(backend_kwargs.get("model_name"))
        if name == "root-sec":
            return root
        made.append(name)
        return ScriptedLM(model_name=name, cost_per_token=0.0, responses=[f"from {name}"])

    with (
        mock.patch.object(rlm.core.rlm, "get_client", get_client),
        RLM(backend="openai", backend_kwargs={"model_name": "root-sec"}, **kwargs) as r,
    ):
        return r.completion("ctx").response


def test_rlm_max_batch_size_is_configurable() -> None:
    answer = _run("r = llm_query_batched(['x'] * 101)\nout = r[0]", [], max_batch_size=100)
    assert "max_batch_size" in answer and "101" in answer


def test_rlm_refused_calls_make_no_clients_even_with_any_model_allowed() -> None:
    code = "out = [llm_query('p', model=f'm{i}') for i in range(100)][-1]"
    made: list[str] = []
    answer = _run(code, made, max_llm_calls=1, allowed_models="*")
    assert "budget exhausted: max_llm_calls 1" in answer
    assert made == []
    _run("out = llm_query('p', model='m1')", made, max_llm_calls=5, allowed_models="*")
    assert made == ["m1"]  # an admitted call still makes its client
