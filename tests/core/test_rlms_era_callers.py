"""Code written for rlms, as it calls the engine: duck-typed clients, handler sockets
found by address, FINAL_VAR semantics, run metadata and the RLM's private hooks.

Each test here stands for one way rlms's own suites (run unmodified by
``.ci/rlms_suites.py``) use rlmx, checked with rlmx's own fixtures.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from unittest.mock import Mock, patch

import pytest

import rlm.core.rlm as rlm_module
from rlm import RLM
from rlm.base.errors import (
    BudgetExceededError,
    ErrorThresholdExceededError,
    TimeoutExceededError,
    TokenLimitExceededError,
)
from rlm.base.types import (
    CodeBlock,
    ModelUsageSummary,
    REPLResult,
    RLMIteration,
    UsageSummary,
    _serialize_value,
)
from rlm.base.wire import LMRequest, send_lm_request
from rlm.clients.base_lm import BaseLM
from rlm.clients.legacy import LegacyClient, as_client
from rlm.clients.scripted import ScriptedLM
from rlm.core.lm_handler import LMHandler
from rlm.core.parsing import find_final_answer
from rlm.environments.local_repl import LocalREPL
from rlm.logger import RLMLogger


def submit(content: str) -> str:
    return f"```repl\nanswer['content'] = {content!r}\nanswer['ready'] = True\n```"


class RlmsEraClient:
    """A client as rlms 0.1.x defines one: completion + get_last_usage, no complete()."""

    def __init__(self, replies: list[str], model_name: str = "era-model") -> None:
        self.model_name = model_name
        self.replies = list(replies)
        self.prompts: list[Any] = []

    def completion(self, prompt: Any) -> str:
        self.prompts.append(prompt)
        return self.replies.pop(0)

    def get_usage_summary(self) -> UsageSummary:
        return UsageSummary({self.model_name: ModelUsageSummary(len(self.prompts), 7, 3)})

    def get_last_usage(self) -> UsageSummary:  # rlms's mocks return a whole summary
        return UsageSummary({self.model_name: ModelUsageSummary(1, 7, 3)})


# -- duck-typed clients ----------------------------------------------------------------


def test_a_client_with_only_completion_runs_a_whole_completion() -> None:
    client = RlmsEraClient(["```repl\nx = 6 * 7\nprint(x)\n```", submit("42")])
    with patch.object(rlm_module, "get_client", return_value=client):
        result = RLM(backend="openai", backend_kwargs={"model_name": "cfg-model"}).completion("q")
    assert result.response == "42"
    assert len(client.prompts) == 2
    assert "42" in str(client.prompts[1])  # the cell's output reached the second call
    # get_last_usage() returned a UsageSummary: converted to one call of 7 in / 3 out
    usage = result.usage_summary.model_usage_summaries["era-model"]
    assert (usage.total_calls, usage.total_input_tokens, usage.total_output_tokens) == (2, 14, 6)


def test_a_plain_mock_client_runs_and_the_configured_model_is_reported() -> None:
    mock = Mock()
    mock.model_name = "mock-model"
    mock.completion.side_effect = [submit("done")]
    logger = RLMLogger()
    with patch.object(rlm_module, "get_client", return_value=mock):
        rlm = RLM(backend="openai", backend_kwargs={"model_name": "test-model"}, logger=logger)
        result = rlm.completion("q")
    assert result.response == "done"
    assert result.root_model == "test-model"
    assert result.metadata is not None
    assert result.metadata["run_metadata"]["root_model"] == "test-model"


def test_a_non_str_reply_is_a_clear_type_error() -> None:
    mock = Mock()
    mock.model_name = "m"
    mock.completion.return_value = 42
    handler = LMHandler(mock)
    with pytest.raises(TypeError, match=r"completion\(\) returned int, expected str"):
        handler.call("hi")
    handler.close()


def test_an_object_without_completion_is_refused_where_it_enters() -> None:
    with pytest.raises(TypeError, match="has no completion"):
        LMHandler(object())


def test_rlmx_clients_are_not_wrapped_and_legacy_ones_are() -> None:
    scripted = ScriptedLM(responses=["x"])
    assert as_client(scripted) is scripted
    wrapped = as_client(RlmsEraClient(["a"]))
    assert isinstance(wrapped, LegacyClient) and isinstance(wrapped, BaseLM)
    assert wrapped.model_name == "era-model"


def test_a_legacy_client_fans_out_on_the_async_path() -> None:
    class AsyncEra(RlmsEraClient):
        async def acompletion(self, prompt: Any) -> str:
            await asyncio.sleep(0)
            return f"async:{prompt}"

    handler = LMHandler(AsyncEra([]))
    try:
        out = handler.call_batched(["a", "b", "c"])
        assert [r.response for r in out] == ["async:a", "async:b", "async:c"]
        assert all(r.usage_summary.total_input_tokens == 7 for r in out)
    finally:
        handler.close()


def test_a_sync_only_legacy_client_fans_out_on_threads() -> None:
    client = RlmsEraClient(["r0", "r1", "r2"])
    handler = LMHandler(client)
    try:
        out = handler.call_batched(["a", "b", "c"])
        assert sorted(r.response for r in out) == ["r0", "r1", "r2"]
        assert not any(r.error for r in out)
    finally:
        handler.close()


# -- handler sockets found by address ---------------------------------------------------


def test_a_repl_given_only_the_handler_address_can_query() -> None:
    """upstream's lm_in_repl.py: LMHandler(client) + LocalREPL(lm_handler_address=...)."""
    with LMHandler(ScriptedLM(responder=lambda p: f"echo:{p}")) as handler:
        direct = send_lm_request(handler.address, LMRequest(prompt="ping"))
        assert direct.success and direct.chat_completion is not None
        repl = LocalREPL(lm_handler_address=handler.address)
        try:
            result = repl.execute_code("print(llm_query('hello'))")
        finally:
            repl.cleanup()
    assert result.stdout.strip() == "echo:hello"
    assert "unauthorized" not in result.stdout + result.stderr


# -- types -----------------------------------------------------------------------------


def test_serialize_value_keeps_its_rlms_name() -> None:
    def tool() -> None: ...

    assert _serialize_value({"a": [1, (2, 3)], "f": tool})["a"] == [1, [2, 3]]
    assert "tool" in _serialize_value(tool)


def test_repl_result_str_is_rlms_layout_without_the_namespace() -> None:
    big = "x" * 10_000
    text = str(REPLResult(stdout="out", stderr="", locals={"big": big}, execution_time=0.5))
    assert text.startswith("REPLResult(stdout=out, stderr=, ")
    assert big not in text and "locals=<1 names>" in text


# -- FINAL_VAR ---------------------------------------------------------------------------


def test_final_var_of_an_unbound_name_is_an_error_and_submits_nothing() -> None:
    repl = LocalREPL()
    try:
        result = repl.execute_code("r = FINAL_VAR('missing')\nprint(r)")
        assert result.stdout.startswith("Error: Variable 'missing' not found")
        assert result.final_answer is None
        bound = repl.execute_code("total = 5\nFINAL_VAR('total')")
        assert bound.final_answer == "5"
        value = repl.execute_code("FINAL_VAR('The answer is 5')")  # a value, not a name
        assert value.final_answer == "The answer is 5"
    finally:
        repl.cleanup()


def test_a_run_goes_on_after_final_var_of_an_unbound_name() -> None:
    script = ["```repl\nFINAL_VAR('nothing_here')\n```", "```repl\ny = 3\n```", "FINAL_VAR(y)"]
    client = ScriptedLM(responses=script, repeat_last=False)
    with patch.object(rlm_module, "get_client", return_value=client):
        result = RLM(backend="openai", backend_kwargs={"model_name": "m"}).completion("q")
    assert result.response == "3"
    assert "not found, so no final answer was submitted" in str(client.prompts[1])


def test_final_var_on_a_non_rlmx_environment_is_asked_the_rlms_way() -> None:
    class RlmsEraEnv:
        def __init__(self) -> None:
            self.cells: list[str] = []

        def execute_code(self, code: str) -> REPLResult:
            self.cells.append(code)
            return REPLResult(stdout="value-of-x\n", stderr="", locals={})

    env = RlmsEraEnv()
    assert find_final_answer("FINAL_VAR(x)", environment=env) == "value-of-x"
    assert env.cells == ["print(FINAL_VAR('x'))"]


# -- the RLM's private hooks -----------------------------------------------------------


def _rlm(**kwargs: Any) -> RLM:
    return RLM(backend="openai", backend_kwargs={"model_name": "parent", "api_key": "k"}, **kwargs)


def test_check_timeout() -> None:
    rlm = _rlm(max_timeout=5.0)
    rlm._check_timeout(0, time.perf_counter())
    with pytest.raises(TimeoutExceededError) as err:
        rlm._check_timeout(3, time.perf_counter() - 6.0)
    assert err.value.timeout == 5.0 and err.value.elapsed > 5.0
    _rlm()._check_timeout(0, 0.0)  # no limit, no error


def _iteration(stderr: str) -> RLMIteration:
    result = REPLResult(stdout="", stderr=stderr, locals={})
    return RLMIteration(prompt="p", response="r", code_blocks=[CodeBlock("c", result)])


def _handler(cost: float | None = None, tokens: tuple[int, int] = (0, 0)) -> Any:
    usage = UsageSummary({"m": ModelUsageSummary(1, tokens[0], tokens[1], cost)})
    return type("H", (), {"get_usage_summary": lambda self: usage})()


def test_check_iteration_limits_counts_consecutive_errors() -> None:
    rlm = _rlm(max_errors=2)
    rlm._check_iteration_limits(_iteration("Boom"), 0, _handler())
    rlm._check_iteration_limits(_iteration(""), 1, _handler())
    assert rlm._consecutive_errors == 0
    rlm._check_iteration_limits(_iteration("Boom"), 2, _handler())
    with pytest.raises(ErrorThresholdExceededError) as err:
        rlm._check_iteration_limits(_iteration("Boom again"), 3, _handler())
    assert (err.value.error_count, err.value.threshold) == (2, 2)
    assert err.value.last_error == "Boom again"


def test_check_iteration_limits_budget_and_tokens() -> None:
    with pytest.raises(BudgetExceededError):
        _rlm(max_budget=0.01)._check_iteration_limits(_iteration(""), 0, _handler(cost=0.02))
    _rlm(max_budget=0.01)._check_iteration_limits(_iteration(""), 0, _handler(cost=0.005))
    with pytest.raises(TokenLimitExceededError) as err:
        _rlm(max_tokens=100)._check_iteration_limits(_iteration(""), 0, _handler(tokens=(60, 50)))
    assert err.value.tokens_used == 110


def test_subcall_outside_a_run_builds_the_child_through_the_module_global() -> None:
    captured: dict[str, Any] = {}
    original = rlm_module.RLM

    class Capturing(original):  # type: ignore[misc, valid-type]
        def __init__(self, **kwargs: Any) -> None:
            captured.update(kwargs)
            super().__init__(**kwargs)

    client = ScriptedLM(responses=[submit("child says hi")])
    tools = {"double": lambda x: 2 * x}
    with patch.object(rlm_module, "get_client", return_value=client):
        parent = _rlm(
            max_depth=3, max_timeout=60.0, max_tokens=50_000, max_errors=4, logger=RLMLogger(),
            custom_tools={"t": lambda: 1}, custom_sub_tools=tools,
        )  # fmt: skip
        parent._completion_start_time = time.perf_counter() - 20.0
        with patch.object(rlm_module, "RLM", Capturing):
            result = parent._subcall("hello", model="small-model")
    assert result.response == "child says hi"
    assert result.metadata is not None and result.metadata["iterations"]
    assert 35.0 < captured["max_timeout"] < 41.0
    assert (captured["max_tokens"], captured["max_errors"]) == (50_000, 4)
    assert captured["backend_kwargs"] == {"model_name": "small-model", "api_key": "k"}
    assert parent.backend_kwargs["model_name"] == "parent"
    assert captured["custom_tools"] == tools and captured["depth"] == 1
    assert isinstance(captured["logger"], RLMLogger) and captured["logger"] is not parent.logger


def test_subcall_with_no_time_left_says_so() -> None:
    parent = _rlm(max_depth=3, max_timeout=10.0)
    parent._completion_start_time = time.perf_counter() - 12.0
    assert parent._subcall("hi").response.startswith("Error: Timeout exhausted (12.")


def test_subcall_at_the_depth_limit_is_one_call_to_the_named_model() -> None:
    made: list[dict[str, Any]] = []

    def factory(backend: str, kwargs: dict[str, Any]) -> BaseLM:
        made.append(dict(kwargs))
        return ScriptedLM(model_name=kwargs["model_name"], responses=["leaf reply"])

    with patch.object(rlm_module, "get_client", side_effect=factory):
        parent = _rlm(depth=1, max_depth=2)
        result = parent._subcall("hi", model="leaf-model")
    assert result.response == "leaf reply" and result.metadata is None
    assert result.root_model == "leaf-model"
    assert made[-1]["model_name"] == "leaf-model"
