"""The seams between the engine's parts: the socket serves any ``RequestHandler``; sync
and async calls go through one pipeline; clients enter the router once; a child
session comes from ``Session.child``; a turn reports its end through ``on_close``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from probe_lm import ProbeLM

from rlm import RLM
from rlm.base.errors import BudgetExhaustedError
from rlm.base.events import EventBus, RunScope
from rlm.base.types import Prompt, RLMChatCompletion, UsageSummary
from rlm.base.wire import LMRequest, LMResponse, send_lm_request, send_lm_request_batched
from rlm.clients.base_lm import BaseLM
from rlm.clients.legacy import LegacyClient
from rlm.clients.retry import HandedOver, RetryPolicy
from rlm.clients.scripted import ScriptedLM
from rlm.core.budget import BudgetNode, Limits
from rlm.core.child_slots import ChildGate, ChildSlot
from rlm.core.config import RLMConfig
from rlm.core.lm_handler import LMHandler
from rlm.core.lm_router import ModelRouter
from rlm.core.lm_server import LMServer
from rlm.core.loop import LoopConfig, TurnResult, TurnState
from rlm.core.session import Session, SessionParts
from rlm.core.turn import Turn
from rlm.logger import RLMLogger


def _echo(prompt: Prompt) -> str:
    text = prompt if isinstance(prompt, str) else str(prompt)
    if text == "boom":
        raise RuntimeError("scripted failure")
    return "echo:" + text


# -- the socket serves a RequestHandler, not the LMHandler -----------------------------


class Recorder:
    """The smallest ``RequestHandler``: answers every prompt with its length."""

    def __init__(self) -> None:
        self.requests: list[LMRequest] = []

    def handle_request(self, request: LMRequest) -> LMResponse:
        self.requests.append(request)
        if request.prompt == "raise":
            raise RuntimeError("handler bug")
        prompts = request.prompts if request.prompts is not None else [request.prompt]
        done = [RLMChatCompletion("len", p, str(len(str(p))), UsageSummary(), 0.0) for p in prompts]
        if request.prompts is not None:
            return LMResponse.batched_success_response(done)
        return LMResponse.success_response(done[0])


def test_the_socket_serves_any_request_handler() -> None:
    handler = Recorder()
    server = LMServer(handler, token="secret")
    address = server.start()
    try:
        single = send_lm_request(address, LMRequest(prompt="four", model="any", depth=2))
        batch = send_lm_request_batched(address, ["a", "bb"])
        failing = send_lm_request(address, LMRequest(prompt="raise"))
        malformed = send_lm_request(address, LMRequest(prompt=None))
    finally:
        server.stop()
    assert single.chat_completion is not None and single.chat_completion.response == "4"
    assert [r.chat_completion.response for r in batch if r.chat_completion] == ["1", "2"]
    assert failing.error == "LM call failed: RuntimeError: handler bug"
    assert malformed.error is not None and "malformed request" in malformed.error
    # The server checked the shape and passed the request on as sent; the malformed
    # one never reached the handler.
    assert [(r.prompt, r.prompts, r.model, r.depth) for r in handler.requests] == [
        ("four", None, "any", 2),
        (None, ["a", "bb"], None, 0),
        ("raise", None, None, 0),
    ]


def test_the_handler_answers_socket_requests_under_its_model_policy() -> None:
    handler = LMHandler(ScriptedLM("main", responder=_echo))
    try:
        allowed = handler.handle_request(LMRequest(prompt="x", id=7))
        refused = handler.handle_request(LMRequest(prompt="x", model="o1-pro"))
        failed = handler.handle_request(LMRequest(prompt="boom"))
    finally:
        handler.close()
    assert allowed.id == 7 and allowed.chat_completion is not None
    assert allowed.chat_completion.response == "echo:x"
    assert refused.error is not None and "model 'o1-pro' is not available" in refused.error
    assert failed.error == "LM call failed: RuntimeError: scripted failure"


# -- one pipeline for sync and async calls ---------------------------------------------


def test_sync_and_async_calls_reserve_charge_and_release_alike() -> None:
    client = ScriptedLM("main", responder=_echo)
    handler = LMHandler(client)
    node = BudgetNode(Limits(max_llm_calls=2))
    try:
        with pytest.raises(RuntimeError):
            handler.call("boom", sink=node)
        with pytest.raises(RuntimeError):
            asyncio.run(handler.acall("boom", sink=node))
        assert node.remaining()["calls"] == 2  # both reservations were released
        assert handler.call("a", sink=node).response == "echo:a"
        assert asyncio.run(handler.acall("b", sink=node)).response == "echo:b"
        assert node.calls == 2 and node.remaining()["calls"] == 0
        with pytest.raises(BudgetExhaustedError):
            handler.call("c", sink=node)
        with pytest.raises(BudgetExhaustedError):
            asyncio.run(handler.acall("c", sink=node))
    finally:
        handler.close()
    assert client.prompts == ["boom", "boom", "a", "b"]  # the refused calls were never sent


# -- clients enter the router once ------------------------------------------------------


class RlmsEraClient:
    """An ``rlms``-style client: ``completion`` only, with a retry policy of its own."""

    model_name = "old"

    def __init__(self) -> None:
        self.retry_policy = RetryPolicy(max_retries=7)

    def completion(self, prompt: Prompt) -> str:
        return f"old:{prompt}"


def test_the_router_adopts_each_client_once_and_keeps_its_retry_policy() -> None:
    made: list[str] = []

    def factory(model: str) -> Any:
        made.append(model)
        return RlmsEraClient()

    main = ProbeLM("main", retry_policy=RetryPolicy(max_retries=1))
    router = ModelRouter(main, factory=factory)
    assert router.makes("old") and not router.makes("main") and not router.makes(None)
    first, again = router.route("old"), router.route("old")
    assert made == ["old"]
    assert first.client is again.client and isinstance(first.client, LegacyClient)
    assert first.retry_policy == RetryPolicy(max_retries=7)  # the governor applies it
    assert router.route().retry_policy == RetryPolicy(max_retries=1)
    assert isinstance(main.retry_policy, HandedOver)  # the client itself tries once
    # Registered names are allowed to REPL code; a model the factory served is not.
    assert router.model_policy.allows("main") and not router.model_policy.allows("old")
    assert first.client.complete("p").text == "old:p"


# -- children come from Session.child ---------------------------------------------------


def _session(logged: bool) -> Session:
    def make_client(backend: str, kwargs: dict[str, Any]) -> BaseLM:
        return ScriptedLM(kwargs.get("model_name", "root"), responder=_echo)

    def make_env(name: str, kwargs: dict[str, Any]) -> Any:
        raise AssertionError("no environment is made here")

    parts = SessionParts(make_client, make_env, EventBus(), "sid", RLMLogger if logged else None)
    config = RLMConfig(backend="scripted", backend_kwargs={"model_name": "root"}, max_depth=2)
    return Session(config, parts, logger=RLMLogger() if logged else None)


def test_a_child_session_shares_its_parents_parts_and_handler() -> None:
    root = _session(logged=True)
    node = BudgetNode(Limits(max_llm_calls=5))
    scope = RunScope(root.bus, run_id="run-root", session_id="sid")
    config = root.config.for_child("sub", node.child_limits(root.config.limits))
    child = root.child(config, scope, node, ChildSlot(ChildGate(1)), "run-child")
    try:
        assert child.handler is root.ensure_handler()  # hence the governor, and its window
        assert child.bus is root.bus and child.session_id == "sid"
        assert isinstance(child.logger, RLMLogger) and child.logger is not root.logger
        assert child.config.depth == 1 and child.config.model_override == "sub"
        child.close()
        assert root.handler is not None  # a child never closes its parent's handler
        assert root.handler.call("still").response == "echo:still"
    finally:
        root.close()
    assert root.handler is None


# -- a turn reports its end once, through on_close --------------------------------------


class NoEnv:
    def cleanup(self) -> None:
        pass


def test_a_turn_reports_its_end_once_before_its_last_event() -> None:
    bus = EventBus()
    seen: list[tuple[str, str]] = []
    bus.subscribe(lambda e: seen.append(("event", e.type)))
    closed: list[tuple[TurnResult | None, BaseException | None]] = []

    def on_close(turn: Turn, result: TurnResult | None, error: BaseException | None) -> None:
        closed.append((result, error))
        seen.append(("closed", turn.root_model))

    handler = LMHandler(ScriptedLM("root", responder=_echo))

    def turn() -> Turn:
        return Turn(
            prompt="ctx",
            handler=handler,
            env=NoEnv(),  # type: ignore[arg-type]
            index=0,
            node=BudgetNode(),
            scope=RunScope(bus, run_id="r", parent_id="p"),  # a child run: no checkpoint
            state=TurnState([]),
            loop_cfg=LoopConfig(max_iterations=1),
            started=time.perf_counter(),
            on_close=on_close,
            root_model="root",
        )

    try:
        result = turn().succeed(TurnResult("42", "FINAL", 1))
        error = turn().fail(ValueError("broken"))
    finally:
        handler.close()
    assert result.response == "42" and result.root_model == "root"
    assert isinstance(error, ValueError)
    assert [(r.answer if r else None, type(e).__name__ if e else None) for r, e in closed] == [
        ("42", None),
        (None, "ValueError"),
    ]
    assert seen == [("closed", "root"), ("event", "run_finished")] * 2


# -- the console printer ----------------------------------------------------------------


def test_a_quiet_rlm_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    rlm = RLM(backend="scripted", backend_kwargs={"responses": ["FINAL(ok)"]})
    try:
        assert rlm.completion("ctx").response == "ok"
        assert rlm.verbose.enabled is False
    finally:
        rlm.close()
    assert capsys.readouterr().out == ""
