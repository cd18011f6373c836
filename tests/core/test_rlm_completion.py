"""The public RLM end to end, with ScriptedLM clients behind a patched ``get_client``."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest

import rlm.core.rlm
from rlm import (
    RLM,
    BudgetExceededError,
    CancellationError,
    ErrorThresholdExceededError,
    TimeoutExceededError,
    TokenLimitExceededError,
)
from rlm.base.types import Prompt, RLMChatCompletion
from rlm.clients.scripted import ScriptedLM
from rlm.clients.tokens import estimate_tokens
from rlm.core.prompts import FINAL_ANSWER_PROMPT
from rlm.logger import RLMLogger


def block(code: str) -> str:
    return f"```repl\n{code}\n```"


def submit(expr: str) -> str:
    """A reply whose code submits ``expr`` (a Python expression) as the answer."""
    return block(f"answer['content'] = {expr}\nanswer['ready'] = True")


class Clients:
    """Stands in for ``get_client``: one ScriptedLM per model name, made on first use."""

    def __init__(self, *clients: ScriptedLM) -> None:
        self.by_name = {c.model_name: c for c in clients}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def __call__(self, backend: str, backend_kwargs: dict[str, Any]) -> ScriptedLM:
        with self._lock:
            self.calls.append((backend, dict(backend_kwargs)))
            name = backend_kwargs.get("model_name", "root")
            if name not in self.by_name:
                self.by_name[name] = ScriptedLM(model_name=name, responses=[f"reply from {name}"])
            return self.by_name[name]


class Envs:
    """Counts environment creations, delegating to the real factory."""

    def __init__(self) -> None:
        self.real = rlm.core.rlm.get_environment
        self.calls: list[str] = []

    def __call__(self, name: str, kwargs: dict[str, Any]) -> Any:
        self.calls.append(name)
        return self.real(name, kwargs)


@contextmanager
def patched(clients: Clients, envs: Envs | None = None) -> Iterator[None]:
    with mock.patch.object(rlm.core.rlm, "get_client", clients):
        if envs is None:
            yield
        else:
            with mock.patch.object(rlm.core.rlm, "get_environment", envs):
                yield


def make_rlm(**kwargs: Any) -> RLM:
    kwargs.setdefault("backend", "openai")
    kwargs.setdefault("backend_kwargs", {"model_name": "root"})
    return RLM(**kwargs)


def run(root: ScriptedLM, context: Any = "the context", **kwargs: Any) -> RLMChatCompletion:
    with patched(Clients(root)), make_rlm(**kwargs) as r:
        return r.completion(context)


def last_message(prompt: Prompt) -> str:
    assert isinstance(prompt, list)
    return str(prompt[-1]["content"])


# -- answers ---------------------------------------------------------------------------


def test_repl_answer_ends_the_run() -> None:
    root = ScriptedLM("root", responses=[submit("'forty' + '-two'")])
    result = run(root)
    assert isinstance(result, RLMChatCompletion)
    assert result.response == "forty-two"
    assert result.root_model == "root"
    assert len(root.prompts) == 1


def test_final_marker_ends_the_run() -> None:
    root = ScriptedLM("root", responses=["I know.\nFINAL(42)", "never used"])
    assert run(root).response == "42"
    assert len(root.prompts) == 1


def test_final_var_ends_the_run() -> None:
    root = ScriptedLM("root", responses=[block("x = context.upper()"), "FINAL_VAR(x)", "unused"])
    assert run(root, "abc").response == "ABC"
    assert len(root.prompts) == 2


def test_no_llm_calls_after_an_answer() -> None:
    text = (
        block("early = llm_query('early')\nanswer['content'] = early\nanswer['ready'] = True")
        + "\n"
        + block("llm_query('late')")
        + "\nFINAL(not this)"
    )
    root = ScriptedLM("root", responder=lambda p: text if isinstance(p, list) else "sub:" + p)
    result = run(root)
    assert result.response == "sub:early"
    assert root.prompts[1:] == ["early"]
    assert len(root.prompts) == 2


def test_max_iterations_ends_with_an_answer_now_call() -> None:
    def respond(prompt: Prompt) -> str:
        if last_message(prompt) == FINAL_ANSWER_PROMPT:
            return "best guess"
        return block("print('step')")

    root = ScriptedLM("root", responder=respond)
    result = run(root, max_iterations=2)
    assert result.response == "best guess"
    assert len(root.prompts) == 3
    assert last_message(root.prompts[-1]) == FINAL_ANSWER_PROMPT
    assert all(last_message(p) != FINAL_ANSWER_PROMPT for p in root.prompts[:2])


def test_answer_now_reply_may_name_a_variable() -> None:
    root = ScriptedLM("root", responses=[block("best = context[::-1]"), "FINAL_VAR(best)"])
    result = run(root, "abc", max_iterations=1)
    assert result.response == "cba"
    assert len(root.prompts) == 2


def test_answer_now_reply_may_submit_through_code() -> None:
    root = ScriptedLM(
        "root", responses=[block("x = 2"), submit("str(x * 21)") + "\ntrailing prose"]
    )
    result = run(root, max_iterations=1)
    assert result.response == "42"
    assert len(root.prompts) == 2


def test_depth_at_max_depth_is_one_plain_call() -> None:
    root = ScriptedLM("root", responses=["plain reply"])
    envs = Envs()
    with patched(Clients(root), envs), make_rlm(depth=1, max_depth=1) as r:
        result = r.completion("just a prompt")
    assert isinstance(result, RLMChatCompletion)
    assert result.response == "plain reply"
    assert root.prompts == ["just a prompt"]
    assert envs.calls == []
    assert result.usage_summary.total_calls == 1


# -- limits ----------------------------------------------------------------------------


def test_max_errors() -> None:
    root = ScriptedLM("root", responses=[block("1/0")])
    with pytest.raises(ErrorThresholdExceededError) as info:
        run(root, max_errors=2, max_iterations=10)
    err = info.value
    assert err.partial_answer == block("1/0")
    assert err.error_count == 2
    assert "ZeroDivisionError" in (err.last_error or "")
    assert len(root.prompts) == 2


def test_max_tokens_refuses_a_call_that_would_not_fit() -> None:
    # Each call reserves its input tokens plus the sampling max_tokens before it is made.
    root = ScriptedLM("root", responses=["thinking " + block("x = 1")])
    with pytest.raises(TokenLimitExceededError) as info:
        run(root, max_tokens=100)
    assert info.value.partial_answer is None
    assert info.value.tokens_used == 0
    assert "before the first iteration" in str(info.value)
    assert root.prompts == []


def test_max_tokens_keeps_the_partial_answer() -> None:
    reply = "thinking " + block("x = 1")
    probe = ScriptedLM("root", responses=[reply], sampling_args={"max_tokens": 20})
    run(probe, max_iterations=1)
    first_call = estimate_tokens(probe.prompts[0]) + 20
    root = ScriptedLM("root", responses=[reply], sampling_args={"max_tokens": 20})
    with pytest.raises(TokenLimitExceededError) as info:
        run(root, max_tokens=first_call + 10)  # room for the first call, not the second
    assert info.value.partial_answer == reply
    assert 0 < info.value.tokens_used <= first_call + 10
    assert len(root.prompts) == 1


def test_max_budget() -> None:
    root = ScriptedLM("root", responses=["spending " + block("x = 1")], cost_per_token=1e-5)
    with pytest.raises(BudgetExceededError) as info:
        run(root, max_budget=0.001)
    err = info.value
    assert err.partial_answer == "spending " + block("x = 1")
    assert err.spent > err.budget == 0.001
    assert len(root.prompts) == 1


def test_max_timeout() -> None:
    root = ScriptedLM("root", responses=["step " + block("x = 1")], latency=0.15)
    started = time.perf_counter()
    with pytest.raises(TimeoutExceededError) as info:
        run(root, max_timeout=0.2, max_iterations=50)
    assert time.perf_counter() - started < 10
    assert info.value.partial_answer == "step " + block("x = 1")
    assert info.value.timeout == 0.2
    assert len(root.prompts) < 50


def test_keyboard_interrupt_becomes_cancellation() -> None:
    replies = iter(["first " + block("x = 1")])

    def respond(prompt: Prompt) -> str:
        for text in replies:
            return text
        raise KeyboardInterrupt

    root = ScriptedLM("root", responder=respond)
    with pytest.raises(CancellationError) as info:
        run(root)
    assert info.value.partial_answer == "first " + block("x = 1")
    assert len(root.prompts) == 2


# -- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "tools",
    [
        {"custom_tools": {"llm_query": lambda p: p}},
        {"custom_tools": {"context": "x"}},
        {"custom_sub_tools": {"rlm_query": lambda p: p}},
    ],
)
def test_reserved_custom_tool_name(tools: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="reserved"):
        make_rlm(**tools)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_iterations": 0},
        {"other_backends": ["openai", "openai"], "other_backend_kwargs": [{}]},
        {"other_backends": ["openai"], "other_backend_kwargs": [{}, {}]},
        {"environment": "no-such-environment"},
        {"max_budget": -1},
    ],
)
def test_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        make_rlm(**kwargs)


def test_init_creates_no_client_and_no_environment() -> None:
    clients = Clients(ScriptedLM("root", responses=["FINAL(ok)"]))
    envs = Envs()
    with patched(clients, envs):
        r = make_rlm(other_backends=["openai"], other_backend_kwargs=[{"model_name": "sub"}])
        assert clients.calls == [] and envs.calls == []
        with r:
            assert r.completion("ctx").response == "ok"
        assert [kw["model_name"] for _, kw in clients.calls] == ["root", "sub"]
        assert envs.calls == ["local"]


def test_usage_summary_equals_client_usage() -> None:
    def respond(prompt: Prompt) -> str:
        if isinstance(prompt, str):
            return "sub answer " * 7
        if len(prompt) < 5:
            return block("a = llm_query('summarise ' + context)\nb = llm_query_batched(['x', 'y'])")
        return submit("a")

    root = ScriptedLM("root", responder=respond, cost_per_token=1e-6)
    result = run(root)
    assert result.response == "sub answer " * 7
    assert result.usage_summary.to_dict() == root.get_usage_summary().to_dict()
    assert result.usage_summary.total_calls == 5


# -- callbacks, sampling, backends ---------------------------------------------------


def test_callbacks_fire_with_documented_arguments() -> None:
    def respond(prompt: Prompt) -> str:
        if "Answer the following: ROOT" in str(prompt[1]["content"]):  # type: ignore[index]
            return submit("rlm_query('sub task for the child')")
        return submit("'child done'")

    events: list[tuple[Any, ...]] = []
    root = ScriptedLM("root", responder=respond)
    with (
        patched(Clients(root)),
        make_rlm(
            max_depth=2,
            on_iteration_start=lambda *a: events.append(("it_start", *a)),
            on_iteration_complete=lambda *a: events.append(("it_done", *a)),
            on_subcall_start=lambda *a: events.append(("sub_start", *a)),
            on_subcall_complete=lambda *a: events.append(("sub_done", *a)),
        ) as r,
    ):
        result = r.completion("ctx", root_prompt="ROOT")
    assert result.response == "child done"
    shapes = [(e[0], *(type(x).__name__ for x in e[1:])) for e in events]
    assert shapes == [
        ("it_start", "int", "int"),
        ("sub_start", "int", "str", "str"),
        ("it_start", "int", "int"),
        ("it_done", "int", "int", "float"),
        ("sub_done", "int", "str", "float", "NoneType"),
        ("it_done", "int", "int", "float"),
    ]
    assert events[0] == ("it_start", 0, 1)
    assert events[1] == ("sub_start", 1, "root", "sub task for the child")
    assert events[2] == ("it_start", 1, 1)
    assert events[3][:3] == ("it_done", 1, 1)
    assert events[4][:3] == ("sub_done", 1, "root") and events[4][4] is None
    assert events[5][:3] == ("it_done", 0, 1)
    assert all(e[-1] >= 0 for e in events if e[0] in ("it_done",))


def test_failing_callback_does_not_break_the_run() -> None:
    def boom(*args: Any) -> None:
        raise RuntimeError("callback bug")

    root = ScriptedLM("root", responses=["FINAL(fine)"])
    with pytest.warns(UserWarning, match="callback bug"):
        assert run(root, on_iteration_start=boom).response == "fine"


def test_sampling_args_reach_get_client() -> None:
    clients = Clients(ScriptedLM("root", responses=["FINAL(ok)"]))
    with (
        patched(clients),
        make_rlm(
            backend_kwargs={"model_name": "root", "sampling_args": {"top_p": 0.5}},
            sampling_args={"temperature": 0.3},
        ) as r,
    ):
        r.completion("ctx")
    backend, kwargs = clients.calls[0]
    assert backend == "openai"
    assert kwargs["sampling_args"] == {"top_p": 0.5, "temperature": 0.3}
    assert kwargs["model_name"] == "root"


def test_sub_sampling_args_mirror_the_backend_for_sub_calls() -> None:
    clients = Clients(ScriptedLM("root", responses=["FINAL(ok)"]))
    with (
        patched(clients),
        make_rlm(sampling_args={"temperature": 0.1}, sub_sampling_args={"temperature": 0.9}) as r,
    ):
        r.completion("ctx")
    assert [kw.get("sampling_args") for _, kw in clients.calls] == [
        {"temperature": 0.1},
        {"temperature": 0.9},
    ]


def test_other_backend_serves_depth_one_llm_query() -> None:
    root = ScriptedLM("root", responses=[submit("llm_query('hi')")])
    sub = ScriptedLM("sub", responses=["from sub"])
    with (
        patched(Clients(root, sub)),
        make_rlm(other_backends=["openai"], other_backend_kwargs=[{"model_name": "sub"}]) as r,
    ):
        result = r.completion("ctx")
    assert result.response == "from sub"
    assert sub.prompts == ["hi"]
    assert len(root.prompts) == 1 and isinstance(root.prompts[0], list)
    assert set(result.usage_summary.model_usage_summaries) == {"root", "sub"}


def test_llm_query_with_model_builds_a_client_for_that_model() -> None:
    clients = Clients(
        ScriptedLM("root", responses=[submit("llm_query('q', model='x')")]),
        ScriptedLM("x", responses=["from x"]),
    )
    kwargs = {"backend_kwargs": {"model_name": "root", "api_key": "k"}, "allowed_models": ["x"]}
    with patched(clients), make_rlm(**kwargs) as r:
        result = r.completion("ctx")
    assert result.response == "from x"
    assert clients.by_name["x"].prompts == ["q"]
    assert clients.calls[-1] == ("openai", {"model_name": "x", "api_key": "k"})
    assert sum(1 for _, kw in clients.calls if kw["model_name"] == "x") == 1


# -- logging and verbose output ----------------------------------------------------


def two_step() -> ScriptedLM:
    return ScriptedLM("root", responses=[block("print(len(context))"), submit("'done'")])


def test_logger_gives_metadata() -> None:
    result = run(two_step(), logger=RLMLogger())
    meta = result.metadata
    assert meta is not None
    assert set(meta) == {"run_metadata", "iterations"}
    assert meta["run_metadata"]["root_model"] == "root"
    assert meta["run_metadata"]["max_iterations"] == 30
    assert len(meta["iterations"]) == 2
    assert meta["iterations"][0]["code_blocks"][0]["result"]["stdout"] == "11\n"
    assert meta["iterations"][1]["final_answer"] == "done"


def test_no_logger_no_metadata() -> None:
    assert run(two_step()).metadata is None


def test_logger_log_dir_writes_jsonl(tmp_path: Any) -> None:
    logger = RLMLogger(log_dir=str(tmp_path))
    run(two_step(), logger=logger)
    logger.close()
    files = list(tmp_path.glob("*.jsonl"))
    assert len(files) == 1
    lines = [json.loads(line) for line in files[0].read_text().splitlines()]
    kinds = [entry["type"] for entry in lines]
    assert kinds[:2] == ["metadata", "run_started"] and kinds[-1] == "run_finished"
    iterations = [entry for entry in lines if entry["type"] == "iteration"]
    assert len(iterations) == 2
    assert lines[0]["backend"] == "openai"
    assert iterations[-1]["final_answer"] == "done"
    assert lines[-1]["outcome"] == "answer" and lines[-1]["iterations"] == 2


def test_verbose_prints(capsys: pytest.CaptureFixture[str]) -> None:
    result = run(two_step(), verbose=True)
    assert result.response == "done"
    out = capsys.readouterr().out
    assert out.strip()
    assert "done" in out


def test_quiet_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    run(two_step())
    assert capsys.readouterr().out == ""


def test_rlm_can_be_reused_after_a_completion() -> None:
    root = ScriptedLM("root", responder=lambda p: "FINAL(again)")
    with patched(Clients(root)), make_rlm() as r:
        assert r.completion("one").response == "again"
        assert r.completion("two").response == "again"
    assert len(root.prompts) == 2


def test_failed_environment_creation_leaves_no_subscriber() -> None:
    def broken_environment(name: str, kwargs: dict[str, Any]) -> Any:
        raise RuntimeError("no sandbox today")

    clients = Clients(ScriptedLM("root", responses=["FINAL(ok)"]))
    with (
        patched(clients),
        mock.patch.object(rlm.core.rlm, "get_environment", broken_environment),
        make_rlm(logger=RLMLogger()) as r,
    ):
        assert not r.events.active
        for _ in range(3):
            with pytest.raises(RuntimeError, match="no sandbox today"):
                r.completion("ctx")
        assert not r.events.active  # the trajectory logger's subscription was removed
