"""One conformance suite for every REPL transport: LocalREPL, the bubblewrap sandbox and
the same worker as a plain subprocess. Each test states the behaviour all of them share."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from worker_env_support import TRANSPORTS, env_of, scripted_route

from rlm.base.types import ModelUsageSummary, RLMChatCompletion, UsageSummary
from rlm.clients.scripted import ScriptedLM
from rlm.core.budget import Limits
from rlm.core.lm_handler import LMHandler
from rlm.environments import SupportsPersistence

pytestmark = pytest.mark.parametrize("kind", TRANSPORTS)


# -- SupportsPersistence ------------------------------------------------------------------


def test_persistence_protocol_contexts_and_aliases(kind: str) -> None:
    with env_of(kind, persistent=True) as env:
        assert isinstance(env, SupportsPersistence)
        assert env.get_context_count() == 0
        assert env.add_context("first") == 0
        assert env.add_context({"second": 2}) == 1
        assert env.add_context([1, 2, 3]) == 2
        assert env.get_context_count() == 3
        result = env.execute_code("print(context_0, context_1, context_2)\nprint(context)")
        assert result.stdout == "first {'second': 2} [1, 2, 3]\nfirst\n"
        env.execute_code("context = 'overwritten'\ndel context_1")
        assert env.execute_code("print(context, context_1)").stdout == "first {'second': 2}\n"
        env.add_context("replaced", 0)
        assert env.execute_code("print(context, context_0)").stdout == "replaced replaced\n"
        assert env.add_context("five", 5) == 5
        assert env.get_context_count() == 6
        with pytest.raises(ValueError):
            env.add_context("bad", -1)


def test_histories_are_versioned_and_deep_copied(kind: str) -> None:
    with env_of(kind, persistent=True) as env:
        messages = [{"role": "user", "content": "hello"}]
        assert env.add_history(messages) == 0
        messages[0]["content"] = "mutated"
        assert env.add_history([{"role": "user", "content": "turn 2"}]) == 1
        assert env.get_history_count() == 2
        env.execute_code("history = []\nhistory_0 = None")
        result = env.execute_code("print(history_0)\nprint(history_1[0]['content'], len(history))")
        assert result.stdout == "[{'role': 'user', 'content': 'hello'}]\nturn 2 1\n"


def test_a_turn_as_the_engine_drives_it(kind: str) -> None:
    with env_of(kind, persistent=True) as env:
        index = env.add_context("turn one data")
        env.reset_answer()
        env.execute_code("notes = [context_0]\nanswer.update(content='one', ready=True)")
        env.add_history([{"role": "user", "content": "q1"}], index)
        env.set_variable(f"final_answer_{index}", "one")
        index = env.add_context("turn two data")
        env.reset_answer()
        result = env.execute_code("notes.append(context_1)\nprint(notes, final_answer_0)")
        assert result.stdout == "['turn one data', 'turn two data'] one\n"
        assert result.final_answer is None
        assert env.execute_code("print(answer)").stdout == "{'content': '', 'ready': False}\n"
        env.update_handler_address(("127.0.0.1", 5555))


# -- cells -----------------------------------------------------------------------------------


def test_output_errors_and_exit(kind: str) -> None:
    with env_of(kind) as env:
        result = env.execute_code("import sys\nprint('out')\nprint('err', file=sys.stderr)")
        assert (result.stdout, result.stderr) == ("out\n", "err\n")
        error = env.execute_code("def f():\n    return 1 / 0\nf()").stderr
        lines = error.strip().splitlines()
        assert lines[0] == "Traceback (most recent call last):"
        assert lines[-1] == "ZeroDivisionError: division by zero"
        assert '"<repl-cell-' in error and "server.py" not in error and "repl.py" not in error
        for code in ("import sys\nsys.exit()", "exit(3)", "quit()"):
            result = env.execute_code("before = 1\n" + code + "\nafter = 1")
            assert "SystemExit" in result.stderr.strip().splitlines()[-1]
        syntax = env.execute_code("x = = 1").stderr.strip().splitlines()[-1]
        assert syntax.startswith("SyntaxError:")
        assert "RuntimeError: input() is not available" in env.execute_code("input()").stderr
        assert env.lookup_variable("before") == "1"
        assert env.lookup_variable("after") is None


def test_scaffold_names_are_restored(kind: str) -> None:
    with env_of(kind, context_payload="the context") as env:
        env.execute_code("context = 'x'\nllm_query = 5\nSHOW_VARS = None\nFINAL_VAR = 1")
        result = env.execute_code(
            "print(context)\nprint(callable(llm_query), callable(SHOW_VARS), callable(FINAL_VAR))"
        )
        assert result.stdout == "the context\nTrue True True\n"


def test_answer_final_var_and_show_vars(kind: str) -> None:
    with env_of(kind) as env:
        assert env.execute_code("print(SHOW_VARS())").stdout.startswith("No variables created")
        assert env.execute_code("answer['content'] = 'draft'").final_answer is None
        result = env.execute_code("answer['content'] = 42\nanswer['ready'] = True")
        assert result.final_answer == "42"
        assert env.execute_code("pass").final_answer is None
        rebound = env.execute_code("answer = {'content': 'rebound', 'ready': True}")
        assert rebound.final_answer == "rebound"
        assert env.execute_code("total = [1, 2]\nFINAL_VAR('total')").final_answer == "[1, 2]"
        assert env.execute_code("FINAL_VAR(7)").final_answer == "7"
        shown = env.execute_code("import json\nn = 1\n_p = 2\nprint(SHOW_VARS())").stdout
        assert shown == "Available variables: {'total': 'list', 'n': 'int'}\n"
        env.reset_answer()
        assert env.execute_code("print(answer)").stdout == "{'content': '', 'ready': False}\n"


def test_variables_lookup_set_and_locals(kind: str) -> None:
    with env_of(kind) as env:
        env.set_variable("greeting", "hi")
        env.set_variable("n", 3)
        result = env.execute_code("out = greeting * n\ndef helper():\n    return out")
        assert env.lookup_variable("out") == "hihihi"
        assert env.lookup_variable("missing") is None
        assert env.lookup_variable("not an identifier") is None
        assert result.locals["out"] == "hihihi" and result.locals["n"] == 3
        assert "helper" in result.locals and "llm_query" not in result.locals
        with pytest.raises(ValueError):
            env.set_variable("llm_query", 1)


def test_custom_tools(kind: str) -> None:
    source = "def double(x):\n    return 2 * x"
    tools: dict[str, Any] = {"LIMIT": 10, "double": {"tool": source, "description": "Doubles"}}
    if kind == "local":
        tools["double"] = {"tool": lambda x: 2 * x, "description": "Doubles"}
    with env_of(kind, custom_tools=tools) as env:
        assert env.execute_code("print(double(LIMIT))").stdout == "20\n"
        env.execute_code("double = None")
        assert env.execute_code("print(double(2))").stdout == "4\n"


def test_compaction_history(kind: str) -> None:
    with env_of(kind, compaction=True) as env:
        entry = [{"role": "user", "content": "hi"}]
        env.append_compaction_entry(entry)
        entry[0]["content"] = "changed"
        env.execute_code("history = None")
        result = env.execute_code("print(history)")
        assert result.stdout == "[[{'role': 'user', 'content': 'hi'}]]\n"


def test_relative_open_uses_the_working_directory(kind: str) -> None:
    with env_of(kind) as env:
        env.execute_code("with open('notes.txt', 'w') as f:\n    f.write('hi')")
        assert env.execute_code("print(open('notes.txt').read())").stdout == "hi\n"


# -- sub-calls -------------------------------------------------------------------------------


def test_llm_query_is_relayed_with_usage(kind: str) -> None:
    with scripted_route() as (route, node), env_of(kind, lm_route=route) as env:
        result = env.execute_code(
            "r = llm_query('hello')\nrs = llm_query_batched(['a', 'boom', 'c'])\nprint(r, rs)"
        )
        assert result.stdout == (
            "echo:hello ['echo:a', 'Error: RuntimeError: provider down', 'echo:c']\n"
        )
        assert [c.prompt for c in result.rlm_calls] == ["hello", "a", "boom", "c"]
        assert node.usage.total_calls == 3  # the failed item is not charged
        single = env.execute_code("print(llm_query('boom'))").stdout
        assert single.startswith("Error: LM query failed - ")
        assert env.execute_code("print(llm_query_batched([]))").stdout == "[]\n"
        assert "TypeError" in env.execute_code("llm_query_batched('abc')").stderr


def test_budget_reports_what_remains(kind: str) -> None:
    limits = Limits(max_llm_calls=5)
    with scripted_route(limits) as (route, _), env_of(kind, lm_route=route) as env:
        env.execute_code("llm_query('a')")
        result = env.execute_code("print(budget())")
        assert result.stdout == (
            "{'calls': 4, 'tokens': None, 'usd': None, 'seconds': None, "
            "'context_window': None, 'sub_context_window': None}\n"
        )
    with env_of(kind) as env:
        assert env.execute_code("print(budget()['calls'])").stdout == "None\n"


def test_llm_query_over_the_handler_socket(kind: str) -> None:
    handler = LMHandler(ScriptedLM(model_name="scripted", responder=lambda p: f"sock:{p}"))
    try:
        address = handler.start()
        with env_of(kind, lm_handler_address=address, lm_handler_token=handler.token) as env:
            assert env.execute_code("print(llm_query('x'))").stdout == "sock:x\n"
    finally:
        handler.close()


def test_routing_set_on_the_environment_reaches_its_sub_calls(kind: str) -> None:
    with env_of(kind) as env:
        assert (env.lm_route, env.lm_handler_address, env.subcall_fn) == (None, None, None)
        with scripted_route() as (route, node):
            env.lm_route = route
            env.subcall_fn = lambda prompt, model=None: completion(prompt, f"child:{prompt}")
            result = env.execute_code("print(llm_query('x'), rlm_query('y'))")
            assert result.stdout == "echo:x child:y\n"
            assert [c.prompt for c in result.rlm_calls] == ["x", "y"]
            assert node.usage.total_calls == 1  # the child is the subcall_fn's to charge
        env.lm_route = env.subcall_fn = None
        assert (
            env.execute_code("print(llm_query('x'))").stdout == "Error: No LM handler configured\n"
        )
        env.update_handler_address(("127.0.0.1", 5555))
        assert env.lm_handler_address == ("127.0.0.1", 5555)


def test_without_a_handler(kind: str) -> None:
    with env_of(kind) as env:
        result = env.execute_code("print(llm_query('hi'))\nprint(rlm_query('q'))")
        assert result.stdout == "Error: No LM handler configured\n" * 2


def completion(prompt: Any, response: str) -> RLMChatCompletion:
    usage = UsageSummary({"child": ModelUsageSummary(1, 3, 5)})
    return RLMChatCompletion("child", prompt, response, usage, 0.01)


def test_rlm_query_is_relayed_to_subcall_fn(kind: str) -> None:
    lock, seen = threading.Lock(), {"now": 0, "max": 0}

    def subcall(prompt: str, model: str | None) -> RLMChatCompletion:
        with lock:
            seen["now"] += 1
            seen["max"] = max(seen["max"], seen["now"])
        time.sleep(0.05)
        with lock:
            seen["now"] -= 1
        if prompt.startswith("bad"):
            raise RuntimeError(f"child failed on {prompt}")
        return completion(prompt, f"child:{prompt}")

    prompts = [f"p{i}" for i in range(6)] + ["bad"]
    with env_of(kind, subcall_fn=subcall, max_concurrent_subcalls=3) as env:
        env.set_variable("prompts", prompts)
        result = env.execute_code("one = rlm_query('task')\nrs = rlm_query_batched(prompts)")
        assert env.lookup_variable("one") == "child:task"
        expected = [f"child:p{i}" for i in range(6)] + [
            "Error: RLM query failed - child failed on bad"
        ]
        assert env.lookup_variable("rs") == str(expected)
        assert [c.prompt for c in result.rlm_calls] == ["task", *prompts[:-1]]
        assert 1 < seen["max"] <= 3
