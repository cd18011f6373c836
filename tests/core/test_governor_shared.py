"""One governor per upstream, shared by many call trees (``rlm serve``'s sessions).

The window, AIMD and the pause on a 429 are shared (``RateWindow``): after one tree's
429 every tree's calls wait out the ``Retry-After`` instead of hitting the upstream.
The circuit breaker, the child gate and cancellation stay per tree. A 429 that outlasts
the retries ends the run as ``RateLimitError`` with ``retry_after``, as it left the
client, so a server can answer 429 with ``Retry-After``. The upstream is a real
loopback HTTP server speaking OpenAI's wire; the clients are the real ``openai`` SDK.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from rlm import RLM
from rlm.base.cancel import CancelToken
from rlm.base.errors import (
    CancellationError,
    CircuitOpenError,
    ProviderError,
    RateLimitError,
)
from rlm.cli.factory import ModelSetup, SettingsFactory
from rlm.cli.settings import Settings
from rlm.clients.retry import RetryPolicy
from rlm.core.governor import Governor, shared_governor

pytest.importorskip("openai")

DONE = "```repl\nanswer['content'] = 'done'\nanswer['ready'] = True\n```"
# Answers: (status, headers, body) for the n-th request (1-based) and its Authorization.
Script = Callable[[int, str], tuple[int, dict[str, str], dict[str, Any]]]


def chat(text: str = DONE) -> dict[str, Any]:
    message = {"role": "assistant", "content": text}
    return {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def too_many(retry_after: str | None) -> tuple[int, dict[str, str], dict[str, Any]]:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    body = {"error": {"message": "Rate limit reached for requests", "type": "requests"}}
    return 429, headers, body


class Upstream:
    """Counts every request it answers (``hits``), answered by ``script``."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.hits = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer.lock:
                    outer.hits += 1
                    n = outer.hits
                status, headers, body = outer.script(n, self.headers.get("Authorization", ""))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"


@contextmanager
def upstream(script: Script) -> Iterator[Upstream]:
    server = Upstream(script)
    thread = threading.Thread(target=server.httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def kwargs_for(up: Upstream, policy: RetryPolicy, key: str = "x") -> dict[str, Any]:
    return {"base_url": up.url, "api_key": key, "model_name": "m", "retry_policy": policy}


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


# -- the split: what trees share and what they do not -----------------------------------


def test_trees_share_the_window_but_not_circuits_or_child_gates() -> None:
    shared = Governor(max_inflight=4)
    one, two = shared.for_tree(max_children=2), shared.for_tree(max_children=3)
    assert one.rate is two.rate is shared.rate
    assert one.max_inflight == two.max_inflight == 4
    assert one.children is not two.children and one.children.limit == 2

    client = object()  # one client object both trees happen to use
    denied = ProviderError("invalid api key", status=401)

    def deny(_: None) -> None:
        raise denied

    with pytest.raises(ProviderError):
        one.run(deny, None, key=client)
    assert one.tripped(client) is denied and two.tripped(client) is None
    with pytest.raises(CircuitOpenError):
        one.run(lambda _: "never sent", None, key=client)
    assert two.run(lambda _: "sent", None, key=client) == "sent"  # the other tree carries on
    with pytest.raises(ValueError, match="max_inflight"):
        Governor(max_inflight=2, window=shared.rate)


def test_cancelling_one_tree_leaves_the_others_queued_call_waiting() -> None:
    shared = Governor()
    one, two = shared.for_tree(), shared.for_tree()
    policy = RetryPolicy(max_retries=3, base_delay=0.01)
    hits: list[str] = []

    def limited(name: str) -> str:
        hits.append(name)
        if len(hits) == 1:
            raise RateLimitError("slow down", retry_after=0.6)
        return name

    results: dict[str, Any] = {}
    token_one, token_two = CancelToken(), CancelToken()

    def run(governor: Governor, name: str, token: CancelToken) -> None:
        try:
            results[name] = governor.run(limited, name, token, policy, key=name)
        except BaseException as exc:
            results[name] = exc

    first = threading.Thread(target=run, args=(one, "one", token_one))
    first.start()
    wait_until(lambda: shared.rate_limits == 1, "the 429")
    second = threading.Thread(target=run, args=(two, "two", token_two))
    second.start()
    wait_until(lambda: shared.snapshot()["queued"] == 2, "both calls queued by the pause")
    token_two.cancel()
    second.join(5)
    assert isinstance(results["two"], CancellationError)
    assert shared.snapshot()["queued"] == 1 and hits == ["one"]  # tree one still waits
    first.join(10)
    assert results["one"] == "one" and hits == ["one", "one"]
    assert shared.inflight == 0 and shared.snapshot()["queued"] == 0


def test_a_tree_whose_event_loop_was_closed_does_not_block_the_shared_window() -> None:
    """A session's loop closed under a queued call (``AsyncRuntime.close`` stops it
    without cancelling its tasks) leaves a waiter that can never be woken; the next
    release must skip it and admit the other trees' calls."""
    shared = Governor(max_inflight=1)
    holder_tree, dead_tree, live_tree = shared.for_tree(), shared.for_tree(), shared.for_tree()
    release = threading.Event()
    outcome: dict[str, Any] = {}

    def hold() -> None:
        try:
            outcome["holder"] = holder_tree.run(lambda _: release.wait(10), None)
        except BaseException as exc:
            outcome["holder"] = exc

    holder = threading.Thread(target=hold)
    holder.start()
    wait_until(lambda: shared.inflight == 1, "the holder's slot")

    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever)
    runner.start()

    async def never_resumed() -> str:
        return await dead_tree.arun(lambda _: asyncio.sleep(0, "late"), None)

    pending = asyncio.run_coroutine_threadsafe(never_resumed(), loop)
    wait_until(lambda: shared.snapshot()["queued"] == 1, "the doomed call queued")
    loop.call_soon_threadsafe(loop.stop)
    runner.join(5)
    loop.close()  # the task is still pending: its waiter stays in the queue

    def live() -> None:
        outcome["live"] = live_tree.run(lambda _: "admitted", None)

    waiter = threading.Thread(target=live)
    waiter.start()
    wait_until(lambda: shared.snapshot()["queued"] == 2, "the live call queued behind it")
    release.set()
    holder.join(5)
    waiter.join(5)
    assert outcome == {"holder": True, "live": "admitted"}
    assert shared.inflight == 0 and shared.snapshot()["queued"] == 0
    assert not pending.done()


# -- item 3: one governor per upstream --------------------------------------------------


@pytest.mark.parametrize("mode", ["threads", "asyncio"])
def test_after_a_429_every_tree_sharing_the_governor_waits_out_retry_after(mode: str) -> None:
    def script(n: int, auth: str) -> tuple[int, dict[str, str], dict[str, Any]]:
        return too_many("1.5") if n == 1 else (200, {}, chat())

    policy = RetryPolicy(max_retries=3, base_delay=0.01, max_delay=5.0)
    governor = Governor()
    with upstream(script) as up:
        first = RLM(backend="openai", backend_kwargs=kwargs_for(up, policy), governor=governor)
        second = RLM(backend="openai", backend_kwargs=kwargs_for(up, policy), governor=governor)
        answers: list[Any] = []

        def blocking(rlm: RLM) -> None:
            answers.append(rlm.completion("ctx", root_prompt="Q?").response)

        def start(rlm: RLM) -> Callable[[], None]:
            if mode == "threads":
                thread = threading.Thread(target=blocking, args=(rlm,))
                thread.start()
                return lambda: thread.join(30)
            loop = asyncio.new_event_loop()  # each RLM on a loop of its own thread
            done = threading.Event()

            def drive() -> None:
                answers.append(loop.run_until_complete(rlm.acompletion("ctx")).response)
                loop.close()
                done.set()

            threading.Thread(target=drive).start()
            return lambda: done.wait(30) and None

        join_first = start(first)
        wait_until(lambda: governor.rate_limits == 1, "the first tree's 429")
        join_second = start(second)
        # The second tree's first call is held back by the pause, as is the first tree's
        # retry: neither reaches the upstream until Retry-After has passed.
        wait_until(lambda: governor.snapshot()["queued"] == 2, "both trees paused")
        assert up.hits == 1
        assert governor.snapshot()["paused_for"] > 0
        join_first()
        join_second()
        first.close()
        second.close()
    assert answers == ["done", "done"]
    assert up.hits == 3  # the 429, the first tree's retry, the second tree's one call


def test_each_rlm_gets_its_own_tree_over_the_shared_window() -> None:
    governor = Governor(max_inflight=3)
    with upstream(lambda n, auth: (200, {}, chat())) as up:
        policy = RetryPolicy(max_retries=0)
        rlms = [
            RLM(backend="openai", backend_kwargs=kwargs_for(up, policy), governor=governor)
            for _ in range(2)
        ]
        trees = [r._get_session().ensure_handler().governor for r in rlms]
        assert trees[0] is not trees[1] and trees[0] is not governor
        assert trees[0].rate is trees[1].rate is governor.rate
        assert [r.completion("ctx").response for r in rlms] == ["done", "done"]
        for r in rlms:
            r.close()
        with pytest.raises(ValueError, match="max_inflight_llm_calls"):
            RLM(backend="openai", governor=governor, max_inflight_llm_calls=2)


def test_an_auth_failure_opens_only_that_trees_circuit() -> None:
    def script(n: int, auth: str) -> tuple[int, dict[str, str], dict[str, Any]]:
        if auth.endswith("bad-key"):
            return 401, {}, {"error": {"message": "Incorrect API key provided"}}
        return 200, {}, chat()

    governor = Governor()
    policy = RetryPolicy(max_retries=2, base_delay=0.01)
    with upstream(script) as up:
        bad_kwargs = kwargs_for(up, policy, key="bad-key")
        with RLM(backend="openai", backend_kwargs=bad_kwargs, governor=governor) as bad:
            with pytest.raises(ProviderError) as info:
                bad.completion("ctx")
            assert info.value.status == 401
            with RLM(
                backend="openai", backend_kwargs=kwargs_for(up, policy), governor=governor
            ) as good:
                assert good.completion("ctx").response == "done"
    assert up.hits == 2  # one 401 (never retried), one answer
    assert governor.snapshot()["tripped"] == []  # the shared part holds no circuit


def test_the_settings_factory_shares_one_governor_per_upstream() -> None:
    url = "http://127.0.0.1:9/v1/"
    setup = ModelSetup(backend="openai", backend_kwargs={"base_url": url, "model_name": "m"})
    shared = SettingsFactory(Settings(), setup, shared_governor=True)
    rlms = [shared(), shared(session_id="s1"), SettingsFactory(Settings(), setup)()]
    governor = shared_governor("openai", "http://127.0.0.1:9/v1")  # same upstream
    assert rlms[0].config.governor is rlms[1].config.governor is governor
    assert rlms[2].config.governor is None  # without the option: a governor per tree
    assert shared_governor("openai", "http://other:9/v1") is not governor
    for r in rlms:
        r.close()


# -- item 4: a 429 that outlasts the retries ends the run as a 429 ----------------------


@pytest.mark.parametrize("mode", ["completion", "acompletion"])
@pytest.mark.parametrize("shared", [False, True], ids=["own-governor", "shared-governor"])
@pytest.mark.parametrize("max_timeout", [None, 60.0], ids=["no-deadline", "deadline"])
def test_exhausted_429s_end_the_run_as_rate_limit_error_with_retry_after(
    mode: str, shared: bool, max_timeout: float | None
) -> None:
    policy = RetryPolicy(max_retries=2, base_delay=0.01, max_delay=5.0)
    with upstream(lambda n, auth: too_many("0.05")) as up:
        governor = Governor() if shared else None
        kwargs = kwargs_for(up, policy)
        with (
            RLM(
                backend="openai", backend_kwargs=kwargs, governor=governor, max_timeout=max_timeout
            ) as rlm,
            pytest.raises(RateLimitError) as info,
        ):
            if mode == "completion":
                rlm.completion("ctx", root_prompt="Q?")
            else:
                asyncio.run(rlm.acompletion("ctx", root_prompt="Q?"))
    error = info.value
    assert type(error) is RateLimitError and error.status == 429
    assert error.retry_after == pytest.approx(0.05)  # the provider's Retry-After
    assert "Rate limit reached" in str(error)
    assert up.hits == 1 + policy.max_retries


def test_without_retry_after_the_error_carries_the_governors_back_off() -> None:
    policy = RetryPolicy(max_retries=1, base_delay=0.2, max_delay=5.0, jitter=0.0)
    with upstream(lambda n, auth: too_many(None)) as up:
        rlm = RLM(backend="openai", backend_kwargs=kwargs_for(up, policy))
        with pytest.raises(RateLimitError) as info:
            rlm.completion("ctx")
        rlm.close()
    retry_after = info.value.retry_after
    assert retry_after == pytest.approx(0.4)  # the pause after attempt 1: 0.2 * 2
    assert up.hits == 2
