"""A provider failing mid-run: each retry is announced as it happens (``call_retry``),
and the error that ends the run carries the partial answer and a checkpoint."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest
from probe_lm import ProbeLM

import rlm.core.rlm
from rlm import RLM
from rlm.base.errors import ProviderConnectionError
from rlm.base.events import Event
from rlm.base.types import Prompt
from rlm.clients.retry import RetryPolicy

FIRST = "Looking.\n```repl\nx = 1\n```"
QUERIES = "```repl\nr = llm_query('one')\nrs = llm_query_batched(['two', 'three'])\n```"
DONE = "```repl\nanswer['content'] = 'done'\nanswer['ready'] = True\n```"
QUICK = RetryPolicy(max_retries=2, base_delay=0.001, max_delay=0.002, jitter=0.0)


@contextmanager
def make(probe: ProbeLM, **kwargs: Any) -> Iterator[tuple[RLM, list[Event]]]:
    events: list[Event] = []
    with (
        mock.patch.object(rlm.core.rlm, "get_client", lambda b, k: probe),
        RLM(backend="openai", backend_kwargs={"model_name": "probe"}, **kwargs) as r,
    ):
        r.events.subscribe(events.append)
        yield r, events


def retries(events: list[Event]) -> list[dict[str, Any]]:
    return [dict(e.data) for e in events if str(e.type) == "call_retry"]


def root_turns(prompt: Prompt) -> int:
    return (
        sum(1 for m in prompt if m.get("role") == "assistant") if isinstance(prompt, list) else -1
    )


def test_a_provider_lost_mid_run_raises_its_error_with_the_partial_answer() -> None:
    def fail(inflight: int, prompt: Prompt) -> None:
        if root_turns(prompt) >= 1:  # the provider goes away after iteration 1
            raise ProviderConnectionError("Could not reach the model: Connection refused")

    probe = ProbeLM(latency=0.0, fail=fail, reply=lambda p: FIRST, retry_policy=QUICK)
    with (
        make(probe, max_iterations=5) as (r, events),
        pytest.raises(ProviderConnectionError) as info,
    ):
        r.completion("ctx", root_prompt="Q?")
    error: Any = info.value
    assert error.partial_answer == FIRST
    assert error.checkpoint is not None and error.checkpoint.iteration == 1
    seen = retries(events)
    assert [(d["purpose"], d["attempt"], d["attempts"]) for d in seen] == [
        ("iteration", 1, 3),
        ("iteration", 2, 3),
    ]
    assert all("Connection refused" in d["error"] and d["wait"] >= 0 for d in seen)
    assert probe.attempts == 1 + 3  # iteration 1, then three tries of iteration 2


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_sub_call_retries_are_announced_by_the_run_that_made_them(mode: str) -> None:
    failed: set[str] = set()
    lock = threading.Lock()

    def fail(inflight: int, prompt: Prompt) -> None:
        if isinstance(prompt, str):
            with lock:
                first = prompt not in failed
                failed.add(prompt)
            if first:  # each sub-call fails once, then succeeds
                raise ProviderConnectionError(f"reset while asking {prompt}")

    def reply(prompt: Prompt) -> str:
        if isinstance(prompt, str):
            return f"ok:{prompt}"
        return QUERIES if root_turns(prompt) == 0 else DONE

    probe = ProbeLM(latency=0.0, fail=fail, reply=reply, retry_policy=QUICK)
    with make(probe) as (r, events):
        if mode == "sync":
            result = r.completion("ctx", root_prompt="Q?")
        else:
            result = asyncio.run(r.acompletion("ctx", root_prompt="Q?"))
    assert result.response == "done"
    seen = retries(events)
    assert sorted(d["error"] for d in seen) == [
        f"ProviderConnectionError: reset while asking {p}" for p in ("one", "three", "two")
    ]
    assert {(d["purpose"], d["model"], d["attempt"]) for d in seen} == {("subcall", "probe", 1)}
    root = next(e.run_id for e in events if e.type == "run_started")
    assert {e.run_id for e in events if str(e.type) == "call_retry"} == {root}
