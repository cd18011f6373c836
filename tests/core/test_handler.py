"""LMHandler: routing, batching, per-call usage, sinks and lifecycle."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from rlm.base.events import Event, EventBus, RunScope
from rlm.base.types import ModelUsageSummary, Prompt, UsageSummary
from rlm.clients.base_lm import BaseLM
from rlm.clients.scripted import ScriptedLM
from rlm.clients.tokens import estimate_tokens
from rlm.core.budget import BudgetNode
from rlm.core.lm_handler import LMHandler


def echo(prompt: Prompt) -> str:
    text = prompt if isinstance(prompt, str) else str(prompt[-1]["content"])  # type: ignore[index]
    if text == "boom":
        raise RuntimeError("scripted failure")
    return "echo:" + text


@pytest.fixture
def main() -> ScriptedLM:
    return ScriptedLM("main", responder=echo)


@pytest.fixture
def handler(main: ScriptedLM) -> Iterator[LMHandler]:
    h = LMHandler(main)
    yield h
    h.close()


class InFlight:
    """Counts concurrent entries; thread-safe."""

    def __init__(self) -> None:
        self.now = 0
        self.max = 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            self.now += 1
            self.max = max(self.max, self.now)

    def leave(self) -> None:
        with self._lock:
            self.now -= 1


class CountingScriptedLM(ScriptedLM):
    """A ScriptedLM whose async calls are counted while they wait on their latency."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_flight = InFlight()

    async def _acomplete(self, prompt: Prompt) -> Any:
        self.in_flight.enter()
        try:
            return await super()._acomplete(prompt)
        finally:
            self.in_flight.leave()


class SyncOnlyLM(BaseLM):
    """An rlms-style client without async support."""

    def __init__(self) -> None:
        super().__init__(model_name="sync-only")
        self.in_flight = InFlight()
        self.threads: set[str] = set()
        self._lock = threading.Lock()
        self._usage = UsageSummary()

    def completion(self, prompt: Prompt) -> str:
        self.in_flight.enter()
        try:
            with self._lock:
                self.threads.add(threading.current_thread().name)
            time.sleep(0.05)
            return f"sync:{prompt}"
        finally:
            self.in_flight.leave()

    async def acompletion(self, prompt: Prompt) -> str:
        raise NotImplementedError

    def get_usage_summary(self) -> UsageSummary:
        return self._usage

    def get_last_usage(self) -> ModelUsageSummary:
        return ModelUsageSummary(1, 2, 3)


# -- routing ---------------------------------------------------------------------------


def test_routing_by_model_name_and_depth() -> None:
    main = ScriptedLM("main", responses=["m"])
    other = ScriptedLM("other", responses=["o"])
    named = ScriptedLM("named", responses=["n"])
    handler = LMHandler(main, other_backend_client=other)
    handler.register_client("named", named)
    try:
        assert handler.get_client() is main
        assert handler.get_client(None, depth=0) is main
        assert handler.get_client(None, depth=1) is other
        assert handler.get_client(None, depth=2) is main
        assert handler.get_client("named", depth=1) is named
        assert handler.get_client("main", depth=1) is main
        assert handler.call("p", depth=1).response == "o"
        assert handler.call("p", model="named").response == "n"
        assert handler.call("p").root_model == "main"
    finally:
        handler.close()


def test_client_factory_builds_one_client_per_model_under_concurrency() -> None:
    made: list[str] = []
    lock = threading.Lock()

    def factory(model: str) -> BaseLM:
        time.sleep(0.02)  # widen the race window
        with lock:
            made.append(model)
        return ScriptedLM(model, responder=lambda p: f"{model}:{p}")

    handler = LMHandler(ScriptedLM("main", responder=echo), client_factory=factory)
    barrier = threading.Barrier(16)

    def worker(i: int) -> tuple[int, str]:
        barrier.wait(timeout=10)
        client = handler.get_client(f"x{i % 2}")
        return id(client), handler.call("q", model=f"x{i % 2}").response

    try:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(worker, range(16)))
        assert sorted(made) == ["x0", "x1"]
        assert len({cid for cid, _ in results}) == 2
        assert {resp for _, resp in results} == {"x0:q", "x1:q"}
        assert handler.get_client("x0") is handler.clients["x0"]
    finally:
        handler.close()


# -- batches ---------------------------------------------------------------------------


def test_call_batched_keeps_order_and_reports_errors_per_item(handler: LMHandler) -> None:
    prompts = ["a", "b", "boom", "d"]
    results = handler.call_batched(prompts)
    assert [r.response for r in results] == ["echo:a", "echo:b", "", "echo:d"]
    assert [r.error is None for r in results] == [True, True, False, True]
    assert "RuntimeError" in (results[2].error or "")
    assert "scripted failure" in (results[2].error or "")
    assert [r.prompt for r in results] == prompts
    assert results[2].usage_summary.total_calls == 0


def test_call_batched_empty(handler: LMHandler) -> None:
    assert handler.call_batched([]) == []


def test_batch_concurrency_cap() -> None:
    client = CountingScriptedLM("main", responder=echo, latency=0.05)
    handler = LMHandler(client, batch_max_concurrent=5)
    try:
        started = time.perf_counter()
        results = handler.call_batched([f"p{i}" for i in range(20)])
        assert time.perf_counter() - started < 10
        assert [r.response for r in results] == [f"echo:p{i}" for i in range(20)]
        assert client.in_flight.max == 5
    finally:
        handler.close()


def test_batch_concurrency_must_be_positive(main: ScriptedLM) -> None:
    with pytest.raises(ValueError):
        LMHandler(main, batch_max_concurrent=0)


# -- usage -----------------------------------------------------------------------------


def test_each_batched_call_gets_its_own_usage() -> None:
    client = ScriptedLM("main", responder=echo, latency=0.01)
    handler = LMHandler(client)
    prompts = ["w" * (7 * i + 1) for i in range(32)]
    try:
        results = handler.call_batched(prompts)
        for prompt, result in zip(prompts, results, strict=True):
            usage = result.usage_summary.model_usage_summaries["main"]
            assert usage.total_calls == 1
            assert usage.total_input_tokens == estimate_tokens(prompt)
            assert usage.total_output_tokens == estimate_tokens("echo:" + prompt)
    finally:
        handler.close()


def test_each_threaded_call_gets_its_own_usage() -> None:
    client = ScriptedLM("main", responder=echo, latency=0.01)
    handler = LMHandler(client)
    prompts = ["v" * (5 * i + 3) for i in range(32)]
    try:
        with ThreadPoolExecutor(32) as pool:
            results = list(pool.map(handler.call, prompts))
        for prompt, result in zip(prompts, results, strict=True):
            usage = result.usage_summary.model_usage_summaries["main"]
            assert usage.total_input_tokens == estimate_tokens(prompt)
            assert usage.total_output_tokens == estimate_tokens("echo:" + prompt)
        assert client.get_usage_summary().total_calls == 32
    finally:
        handler.close()


def test_sink_is_charged(handler: LMHandler, main: ScriptedLM) -> None:
    root = BudgetNode()
    node = root.child(root.limits)
    one = handler.call("hello", sink=node)
    batch = handler.call_batched(["a", "boom", "ccc"], sink=node)
    expected = UsageSummary()
    for r in (one, *batch):
        expected.merge(r.usage_summary)
    assert node.usage.to_dict() == expected.to_dict()
    assert root.usage.to_dict() == expected.to_dict()
    assert node.usage.total_calls == 3  # the failed item is not charged
    assert node.usage.to_dict() == main.get_usage_summary().to_dict()
    handler.call("no sink")
    assert node.usage.total_calls == 3


def test_sync_only_client_still_fans_out_on_threads() -> None:
    client = SyncOnlyLM()
    handler = LMHandler(client)
    try:
        started = time.perf_counter()
        results = handler.call_batched([f"p{i}" for i in range(8)])
        assert time.perf_counter() - started < 10
        assert [r.response for r in results] == [f"sync:p{i}" for i in range(8)]
        assert all(r.error is None for r in results)
        assert client.in_flight.max > 1
        assert len(client.threads) > 1
        usage = results[0].usage_summary.model_usage_summaries["sync-only"]
        assert (usage.total_input_tokens, usage.total_output_tokens) == (2, 3)
    finally:
        handler.close()


# -- routes ----------------------------------------------------------------------------


def test_route_charges_its_sink_and_emits_events(main: ScriptedLM) -> None:
    other = ScriptedLM("other", responder=echo)
    handler = LMHandler(main, other_backend_client=other)
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe(events.append)
    node = BudgetNode()
    route = handler.route(1, node, RunScope(bus, run_id="r"))
    try:
        assert route.llm_query("x").response == "echo:x"
        assert [r.response for r in route.llm_query_batched(["y", "boom"])] == ["echo:y", ""]
        assert other.prompts == ["x", "y", "boom"]
        assert main.prompts == []
        assert node.usage.total_calls == 2
        assert [e.type for e in events] == ["subcall_started", "subcall_finished"] * 2
        assert events[1].data["error"] is None
        assert "1 of 2 failed" in events[3].data["error"]
        with pytest.raises(RuntimeError):
            route.llm_query("boom")
        assert "RuntimeError" in events[-1].data["error"]
    finally:
        handler.close()


# -- lifecycle -------------------------------------------------------------------------


def test_close_is_idempotent() -> None:
    closed: list[str] = []

    class Closing(ScriptedLM):
        def close(self) -> None:
            closed.append(self.model_name)

    handler = LMHandler(Closing("main", responder=echo), other_backend_client=Closing("o"))
    handler.call_batched(["a", "b"])  # starts the event loop thread
    address = handler.start()  # and the socket server
    handler.close()
    handler.close()
    assert sorted(set(closed)) == ["main", "o"]
    with pytest.raises(OSError):
        socket.create_connection(address, timeout=2).close()


def test_close_without_use() -> None:
    handler = LMHandler(ScriptedLM("main", responder=echo))
    handler.close()
    handler.close()
