"""The concurrency governor: one window per call tree, AIMD on 429s, retries that do not
multiply, and a circuit breaker for auth/quota errors. Real threads and real sleeps."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any
from unittest import mock

import pytest
from probe_lm import ProbeLM

import rlm.core.rlm
from rlm import RLM
from rlm.base.cancel import CancelToken
from rlm.base.errors import (
    CancellationError,
    CircuitOpenError,
    MissingAPIKeyError,
    ProviderError,
    RateLimitError,
)
from rlm.base.types import Prompt
from rlm.clients.base_lm import LMResult, ProviderLM, TrackedLM
from rlm.clients.retry import HandedOver, RetryPolicy
from rlm.clients.scripted import ScriptedLM
from rlm.core.error_kinds import is_fatal, is_rate_limit
from rlm.core.governor import Governor
from rlm.core.lm_handler import LMHandler

# -- classification ----------------------------------------------------------------------


def test_error_classification() -> None:
    assert is_fatal(MissingAPIKeyError("openai", "OPENAI_API_KEY"))
    assert is_fatal(ProviderError("bad key", status=401))
    assert is_fatal(ProviderError("forbidden", status=403))
    assert is_fatal(RateLimitError("You exceeded your current quota, check billing"))
    assert is_fatal(ProviderError("Your credit balance is too low", status=400))
    assert not is_fatal(RateLimitError("Rate limit reached for requests per minute"))
    assert not is_fatal(ProviderError("Quota exceeded for metric: requests per minute", 429))
    assert not is_fatal(ProviderError("overloaded", status=529))
    assert is_rate_limit(RateLimitError("slow down"))
    assert not is_rate_limit(ProviderError("boom", status=500))


# -- the window --------------------------------------------------------------------------


def test_cap_held_by_threads_and_tasks_sharing_one_governor() -> None:
    governor = Governor(max_inflight=5)
    probe = ProbeLM(latency=0.01)

    def threads() -> None:
        workers = [
            threading.Thread(target=lambda: governor.run(probe.complete, "t", key=probe))
            for _ in range(20)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    async def tasks() -> None:
        await asyncio.gather(*(governor.arun(probe.acomplete, "a", key=probe) for _ in range(20)))

    side = threading.Thread(target=threads)
    side.start()
    asyncio.run(tasks())
    side.join()
    assert probe.completed == 40
    assert probe.max_inflight == 5  # reached, never exceeded
    assert governor.peak == 5 and governor.inflight == 0


def test_cap_held_across_root_batches_and_children() -> None:
    """Root, llm_query_batched in the root and in every child, rlm_query_batched: one window."""

    def reply(prompt: Prompt) -> str:
        if isinstance(prompt, str):
            return f"ok:{prompt}"
        text = str(prompt[1]["content"])
        if "ROOT" in text:
            return (
                "```repl\n"
                "kids = rlm_query_batched([f'kid{i}' for i in range(6)])\n"
                "mine = llm_query_batched([f'r{i}' for i in range(12)])\n"
                "answer['content'] = str(len(kids) + len(mine))\n"
                "answer['ready'] = True\n```"
            )
        return (
            "```repl\n"
            "xs = llm_query_batched([context + str(i) for i in range(5)])\n"
            "answer['content'] = ','.join(xs)\n"
            "answer['ready'] = True\n```"
        )

    probe = ProbeLM(latency=0.02, reply=reply)
    with (
        mock.patch.object(rlm.core.rlm, "get_client", lambda b, k: probe),
        RLM(
            backend="openai",
            backend_kwargs={"model_name": "probe"},
            max_depth=2,
            max_concurrent_subcalls=6,
            max_inflight_llm_calls=3,
        ) as r,
    ):
        result = r.completion("ctx", root_prompt="ROOT")
        assert r._session is not None and r._session.handler is not None
        governor = r._session.handler.governor
    assert result.response == "18"
    assert probe.completed == 1 + 6 * (1 + 5) + 12
    assert probe.max_inflight == 3
    assert governor.peak == 3


def test_waiters_are_served_first_come_first_served() -> None:
    governor = Governor(max_inflight=1)
    order: list[int] = []
    gate = threading.Event()

    def hold(_: Any) -> None:
        gate.wait(5)

    first = threading.Thread(target=governor.run, args=(hold, None))
    first.start()
    while governor.inflight == 0:
        time.sleep(0.001)
    workers = []
    for i in range(5):
        w = threading.Thread(target=governor.run, args=(order.append, i))
        w.start()
        workers.append(w)
        while governor.snapshot()["queued"] < i + 1:
            time.sleep(0.001)
    gate.set()
    for w in [first, *workers]:
        w.join()
    assert order == [0, 1, 2, 3, 4]


def test_cancel_wakes_a_queued_call() -> None:
    governor = Governor(max_inflight=1)
    token = CancelToken()
    release = threading.Event()
    holder = threading.Thread(target=governor.run, args=(lambda _: release.wait(5), None))
    holder.start()
    while governor.inflight == 0:
        time.sleep(0.001)
    errors: list[BaseException] = []

    def queued() -> None:
        try:
            governor.run(lambda _: None, None, token)
        except BaseException as exc:
            errors.append(exc)

    waiter = threading.Thread(target=queued)
    waiter.start()
    time.sleep(0.05)
    started = time.perf_counter()
    token.cancel()
    waiter.join(2)
    assert time.perf_counter() - started < 0.5
    assert len(errors) == 1 and isinstance(errors[0], CancellationError)
    release.set()
    holder.join()
    assert governor.inflight == 0 and governor.snapshot()["queued"] == 0


@pytest.mark.parametrize("mode", ["threads", "asyncio"])
def test_a_call_queued_before_a_429_is_admitted_when_the_pause_ends(mode: str) -> None:
    """A call queued while the window was full (asleep until a slot frees) must not
    sleep on after the call ahead of it gave up on a 429: the release during the pause
    admits nobody, so the queued call is woken to wait out the pause, then admitted.
    Nothing else is in flight to wake it later (the 429 storm that left requests of
    ``rlm serve`` unanswered)."""
    governor = Governor(max_inflight=1)
    policy = RetryPolicy(max_retries=0, base_delay=0.01)
    gate = threading.Event()
    errors: list[BaseException] = []

    def limited(_: Any) -> None:
        gate.wait(5)
        raise RateLimitError("Rate limit reached for requests", retry_after=0.3)

    def first() -> None:
        try:
            governor.run(limited, None, policy=policy)
        except RateLimitError as exc:
            errors.append(exc)

    holder = threading.Thread(target=first)
    holder.start()
    wait_for = time.monotonic() + 5
    while governor.inflight == 0 and time.monotonic() < wait_for:
        time.sleep(0.001)
    results: list[str] = []

    def queued() -> None:
        if mode == "threads":
            results.append(governor.run(lambda _: "ran", None, policy=policy))
        else:
            results.append(asyncio.run(governor.arun(_ran, None, policy=policy)))

    waiter = threading.Thread(target=queued)
    waiter.start()
    while governor.snapshot()["queued"] == 0 and time.monotonic() < wait_for:
        time.sleep(0.001)
    assert governor.snapshot()["queued"] == 1
    gate.set()  # the holder's call fails with a 429: the window pauses for 0.3 s
    holder.join(5)
    waiter.join(5)
    assert not waiter.is_alive(), "the queued call slept through the end of the pause"
    assert results == ["ran"] and len(errors) == 1
    assert governor.inflight == 0 and governor.snapshot()["queued"] == 0


async def _ran(_: Any) -> str:
    return "ran"


# -- AIMD --------------------------------------------------------------------------------


def test_aimd_halves_on_429_then_recovers_step_by_step() -> None:
    """The provider accepts 4 concurrent calls and answers 429 above that."""

    def over_four(n: int, prompt: Prompt) -> None:
        if n > 4:
            raise RateLimitError("Rate limit reached for requests", retry_after=0.02)

    probe = ProbeLM(latency=0.02, fail=over_four)
    handler = LMHandler(probe, governor=Governor(max_inflight=16))
    try:
        results = handler.call_batched([f"p{i}" for i in range(80)])
        governor = handler.governor
    finally:
        handler.close()
    assert [r.response for r in results] == [f"ok:p{i}" for i in range(80)]
    assert all(r.error is None for r in results)
    assert governor.rate_limits > 0

    windows = [w for _, w in governor.window_history]
    assert windows[0] == 16.0
    assert windows[1] == 8.0  # the first 429 halves the window
    low = min(w for w in windows if w is not None)
    assert low < 8.0
    after_low = windows[windows.index(low) :]
    assert max(w for w in after_low if w is not None) > low  # and it recovers
    steps = [b - a for a, b in itertools.pairwise(windows) if a and b and b > a]
    assert steps and all(step <= 1.0 for step in steps)  # additively, one step at a time
    assert probe.max_inflight <= 16


def test_one_cut_per_round_however_many_calls_hit_the_limit() -> None:
    governor = Governor(max_inflight=8)
    first_wave = threading.Barrier(8)
    seen: set[int] = set()
    lock = threading.Lock()

    def call(i: int) -> int:
        with lock:
            retry = i in seen
            seen.add(i)
        if not retry:
            first_wave.wait(2)  # all eight are in flight when the provider refuses them
            raise RateLimitError("slow down", retry_after=0.01)
        return i

    policy = RetryPolicy(max_retries=3, base_delay=0.001)
    workers = [
        threading.Thread(target=governor.run, args=(call, i, None, policy)) for i in range(8)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    windows = [w for _, w in governor.window_history]
    assert governor.rate_limits == 8
    assert windows[:2] == [8.0, 4.0]  # eight 429s from one round: a single halving
    assert all(b >= a for a, b in itertools.pairwise(windows[1:]))


def test_aimd_recovers_to_the_ceiling_after_the_storm() -> None:
    storm_until = time.monotonic() + 0.15

    def storm(n: int, prompt: Prompt) -> None:
        if time.monotonic() < storm_until and n > 2:
            raise RateLimitError("slow down", retry_after=0.01)

    probe = ProbeLM(latency=0.002, fail=storm)
    handler = LMHandler(probe, governor=Governor(max_inflight=8))
    try:
        for _ in range(6):
            handler.call_batched([f"p{i}" for i in range(60)])
        governor = handler.governor
    finally:
        handler.close()
    windows = [w for _, w in governor.window_history]
    assert min(w for w in windows if w is not None) <= 4.0
    assert governor.window == 8.0  # back at max_inflight
    assert windows[-1] == 8.0


def test_unlimited_window_still_backs_off_and_returns_to_unlimited() -> None:
    storm_until = time.monotonic() + 0.1

    def storm(n: int, prompt: Prompt) -> None:
        if time.monotonic() < storm_until and n > 3:
            raise RateLimitError("slow down", retry_after=0.01)

    probe = ProbeLM(latency=0.002, fail=storm)
    handler = LMHandler(probe)  # no cap configured
    try:
        handler.call_batched([f"p{i}" for i in range(40)])
        assert handler.governor.window is not None  # throttled after the storm began
        for _ in range(40):
            handler.call_batched([f"p{i}" for i in range(40)])
            if handler.governor.window is None:
                break
        assert handler.governor.window is None  # recovered all the way
    finally:
        handler.close()


# -- retries -----------------------------------------------------------------------------


class RateLimitedProvider(ProviderLM):
    """A provider client: it retries by itself under its ``retry_policy``, like every
    ``ProviderLM``. Each request it sends is refused with a 429."""

    def __init__(self, policy: RetryPolicy) -> None:
        super().__init__(model_name="limited")
        self.retry_policy = policy
        self.requests = 0

    def _request(self, prompt: Prompt, model: str) -> dict[str, Any]:
        return {"prompt": prompt, "model": model}

    def _send(self, request: dict[str, Any]) -> Any:
        self.requests += 1
        raise RateLimitError("slow down", retry_after=0.0)

    async def _asend(self, request: dict[str, Any]) -> Any:
        return self._send(request)

    def _translate_errors(self) -> AbstractContextManager[None]:
        return nullcontext()

    def _parse(self, response: Any, model: str) -> LMResult:
        return LMResult(str(response), model)


def test_client_and_governor_retries_do_not_multiply() -> None:
    policy = RetryPolicy(max_retries=2, base_delay=0.001, max_delay=0.002)
    alone = RateLimitedProvider(policy)
    with pytest.raises(RateLimitError):
        alone.completion("p")
    assert alone.requests == 3  # on its own, the client retries under its policy

    governed = RateLimitedProvider(policy)
    handler = LMHandler(governed)
    try:
        with pytest.raises(RateLimitError):
            handler.call("p")
        with pytest.raises(RateLimitError):
            asyncio.run(handler.acall("p"))
        assert handler.governor.retries == 4  # the governor retried, under the same policy
    finally:
        handler.close()
    assert governed.requests == 6  # 1 + max_retries per call, not (1 + 2) * (1 + 2)
    assert isinstance(governed.retry_policy, HandedOver)
    assert governed.retry_policy.policy == policy


def test_a_client_shared_by_two_sessions_keeps_its_policy() -> None:
    policy = RetryPolicy(max_retries=1, base_delay=0.001, max_delay=0.002)
    shared = RateLimitedProvider(policy)
    first, second = LMHandler(shared), LMHandler(shared)
    try:
        for handler in (first, second):
            with pytest.raises(RateLimitError):
                handler.call("p")
    finally:
        first.close()
        second.close()
    assert shared.requests == 4  # twice 1 + max_retries: the second session retries too
    assert first.governor.retries == second.governor.retries == 1


def test_transient_errors_are_retried_with_backoff() -> None:
    failures = iter([ProviderError("bad gateway", status=502), ProviderError("down", 503)])

    def flaky(n: int, prompt: Prompt) -> None:
        error = next(failures, None)
        if error is not None:
            raise error

    probe = ProbeLM(latency=0.0, fail=flaky)
    handler = LMHandler(probe, governor=Governor(max_inflight=4))
    try:
        assert handler.call("p").response == "ok:p"
        assert handler.governor.retries == 2
        assert handler.governor.window == 4.0  # not a rate limit: the window is untouched
    finally:
        handler.close()
    assert probe.attempts == 3


def test_errors_that_will_not_heal_are_not_retried() -> None:
    def bad(n: int, prompt: Prompt) -> None:
        raise ProviderError("context too long", status=400)

    probe = ProbeLM(latency=0.0, fail=bad)
    handler = LMHandler(probe)
    try:
        with pytest.raises(ProviderError):
            handler.call("p")
    finally:
        handler.close()
    assert probe.attempts == 1


# -- circuit breaker ---------------------------------------------------------------------


@contextmanager
def two_clients(root: ScriptedLM, sub: ProbeLM, **kwargs: Any) -> Iterator[RLM]:
    def factory(backend: str, backend_kwargs: dict[str, Any]) -> TrackedLM:
        return sub if backend_kwargs.get("model_name") == sub.model_name else root

    with (
        mock.patch.object(rlm.core.rlm, "get_client", factory),
        RLM(backend="openai", backend_kwargs={"model_name": "root"}, **kwargs) as r,
    ):
        yield r


def test_circuit_breaker_fails_the_rest_of_the_batch_fast() -> None:
    def unauthorized(n: int, prompt: Prompt) -> None:
        raise ProviderError("Incorrect API key provided", status=401)

    bad = ProbeLM("bad", latency=0.05, fail=unauthorized)
    code = (
        "rs = llm_query_batched([f'q{i}' for i in range(40)], model='bad')\n"
        "later = llm_query('again', model='bad')\n"
        "import json\n"
        "answer['content'] = json.dumps([rs, later])\n"
        "answer['ready'] = True"
    )
    root = ScriptedLM("root", responses=[f"```repl\n{code}\n```"])
    with two_clients(root, bad, max_inflight_llm_calls=4, allowed_models=["bad"]) as r:
        started = time.perf_counter()
        result = r.completion("ctx")
        elapsed = time.perf_counter() - started
    replies, later = json.loads(result.response)
    assert len(replies) == 40
    assert all(reply.startswith("Error:") for reply in replies)
    assert any("401" in reply or "Incorrect API key" in reply for reply in replies)
    assert sum("circuit open" in reply for reply in replies) >= 30
    assert bad.attempts <= 4  # far fewer than the batch: no doomed launches
    assert later.startswith("Error:") and "circuit open" in later
    assert elapsed < 1.0  # 40 calls of 50 ms at 4 in flight would take 0.5 s at best
    assert result.usage_summary.model_usage_summaries.keys() == {"root"}


def test_circuit_breaker_is_per_client_and_reset_by_a_new_session() -> None:
    governor = Governor()
    missing = MissingAPIKeyError("openai", "OPENAI_API_KEY")

    def no_key(_: Any) -> None:
        raise missing

    with pytest.raises(MissingAPIKeyError):
        governor.run(no_key, None, key="a")
    with pytest.raises(CircuitOpenError) as info:
        governor.run(lambda _: "never", None, key="a")
    assert info.value.cause is missing
    assert governor.run(lambda _: "fine", None, key="b") == "fine"
    assert Governor().run(lambda _: "fresh", None, key="a") == "fresh"


# -- children ----------------------------------------------------------------------------


def test_child_cap_is_tree_wide_and_deep_trees_do_not_deadlock() -> None:
    """Cap 2, depth 3: 3 children each spawn 2 grandchildren. A waiting parent lends its
    slot, so the tree finishes and never runs more than 2 children at once."""

    def reply(prompt: Prompt) -> str:
        if isinstance(prompt, str):
            return f"ok:{prompt}"
        text = str(prompt[1]["content"])
        if "ROOT" in text:
            code = "answer['content'] = '|'.join(rlm_query_batched(['a', 'b', 'c']))"
        else:  # children spawn grandchildren; grandchildren (at max depth - 1) answer
            code = (
                "subs = rlm_query_batched([context + '1', context + '2']) "
                "if len(context) == 1 else [context]\n"
                "answer['content'] = '+'.join(subs)"
            )
        return f"```repl\n{code}\nanswer['ready'] = True\n```"

    probe = ProbeLM(latency=0.01, reply=reply)
    with (
        mock.patch.object(rlm.core.rlm, "get_client", lambda b, k: probe),
        RLM(
            backend="openai",
            backend_kwargs={"model_name": "probe"},
            max_depth=3,
            max_concurrent_subcalls=2,
        ) as r,
    ):
        result = r.completion("ctx", root_prompt="ROOT")
        assert r._session is not None and r._session.handler is not None
        gate = r._session.handler.governor.children
    assert result.response == "a1+a2|b1+b2|c1+c2"
    assert gate.peak == 2 and gate.active == 0
