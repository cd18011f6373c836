"""LocalREPL, one completion at a time (non-persistent semantics)."""

from __future__ import annotations

import importlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest

from rlm.base.types import EnvironmentType, ModelUsageSummary, RLMChatCompletion, UsageSummary
from rlm.environments import (
    ENVIRONMENT_NAMES,
    RESERVED_TOOL_NAMES,
    IsolatedEnv,
    LocalREPL,
    NonIsolatedEnv,
    environment_descriptions,
    environment_is_isolated,
    environment_names,
    environment_supports_persistence,
    get_environment,
)


def completion(prompt: Any, response: str, error: str | None = None) -> RLMChatCompletion:
    usage = UsageSummary({"fake": ModelUsageSummary(1, 3, 5)}) if error is None else UsageSummary()
    return RLMChatCompletion("fake", prompt, response, usage, 0.01, error=error)


class FakeRoute:
    """Stands in for LMRoute: echoes prompts; a prompt containing "boom" fails."""

    def __init__(self) -> None:
        self.models: list[str | None] = []

    def llm_query(self, prompt: Any, model: str | None = None) -> RLMChatCompletion:
        self.models.append(model)
        if "boom" in str(prompt):
            raise RuntimeError("provider down")
        return completion(prompt, f"echo:{prompt}")

    def llm_query_batched(
        self, prompts: list[Any], model: str | None = None
    ) -> list[RLMChatCompletion]:
        self.models.append(model)
        return [
            completion(p, "", error="RuntimeError: provider down")
            if "boom" in str(p)
            else completion(p, f"echo:{p}")
            for p in prompts
        ]


@pytest.fixture
def repl() -> Iterator[LocalREPL]:
    env = LocalREPL()
    yield env
    env.cleanup()


# -- namespace semantics ---------------------------------------------------------


def test_namespace_persists_across_cells(repl: LocalREPL) -> None:
    repl.execute_code("x = 41")
    result = repl.execute_code("x += 1\nprint(x)")
    assert result.stdout == "42\n"
    assert result.stderr == ""
    assert result.locals["x"] == 42
    assert isinstance(result.locals, dict)


def test_assignment_before_exception_survives(repl: LocalREPL) -> None:
    result = repl.execute_code("kept = 'yes'\nraise ValueError('nope')\nlost = 1")
    assert result.stderr.strip().endswith("ValueError: nope")
    assert repl.execute_code("print(kept)").stdout == "yes\n"
    assert "lost" not in repl.locals


def test_del_removes_variable(repl: LocalREPL) -> None:
    repl.execute_code("tmp = 1")
    repl.execute_code("del tmp")
    assert "tmp" not in repl.locals
    assert "NameError" in repl.execute_code("tmp").stderr


def test_functions_see_later_globals(repl: LocalREPL) -> None:
    repl.execute_code("def f():\n    return helper() * 2")
    repl.execute_code("def helper():\n    return 21")
    assert repl.execute_code("print(f())").stdout == "42\n"


def test_comprehension_and_class_see_globals(repl: LocalREPL) -> None:
    result = repl.execute_code(
        "k = 3\nvals = [i * k for i in range(3)]\nclass A:\n    def m(self):\n        return k\n"
        "print(vals, A().m())"
    )
    assert result.stdout == "[0, 3, 6] 3\n"


def test_print_and_stderr_captured(repl: LocalREPL) -> None:
    result = repl.execute_code("import sys\nprint('out')\nprint('err', file=sys.stderr)")
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"
    assert result.execution_time is not None and result.execution_time >= 0


def test_error_format(repl: LocalREPL) -> None:
    result = repl.execute_code("def f():\n    return 1 / 0\nf()")
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[-1] == "ZeroDivisionError: division by zero"
    assert '"<repl-cell-' in result.stderr
    assert "local_repl.py" not in result.stderr  # host frames are trimmed


def test_traceback_hides_host_frames_of_helpers(repl: LocalREPL) -> None:
    result = repl.execute_code("llm_query_batched('not a list')")
    assert result.stderr.strip().splitlines()[-1] == (
        "TypeError: llm_query_batched() expects a list of prompts, got str"
    )
    assert "namespace.py" not in result.stderr


@pytest.mark.parametrize("code", ["import sys\nsys.exit()", "exit(3)", "quit()"])
def test_exit_ends_only_the_cell(repl: LocalREPL, code: str) -> None:
    result = repl.execute_code("before = 1\n" + code + "\nafter = 1")
    assert "SystemExit" in result.stderr.strip().splitlines()[-1]
    assert "before" in repl.locals and "after" not in repl.locals
    assert repl.execute_code("print('alive')").stdout == "alive\n"


def test_syntax_error(repl: LocalREPL) -> None:
    result = repl.execute_code("x = = 1")
    assert result.stderr.strip().splitlines()[-1].startswith("SyntaxError:")
    assert "<repl-cell-" in result.stderr
    assert repl.execute_code("print(1)").stdout == "1\n"


def test_keyboard_interrupt_propagates(repl: LocalREPL) -> None:
    with pytest.raises(KeyboardInterrupt):
        repl.execute_code("llm_query = None\nraise KeyboardInterrupt")
    result = repl.execute_code("print(callable(llm_query))")
    assert result.stdout == "True\n"


def test_input_is_unavailable(repl: LocalREPL) -> None:
    result = repl.execute_code("input('name? ')")
    assert result.stderr.strip().endswith("RuntimeError: input() is not available in the REPL")


def test_open_resolves_relative_paths_in_temp_dir(repl: LocalREPL, tmp_path: Path) -> None:
    cwd = os.getcwd()
    absolute = tmp_path / "abs.txt"
    repl.execute_code(
        "with open('notes.txt', 'w') as f:\n    f.write('hi')\n"
        f"with open({str(absolute)!r}, 'w') as f:\n    f.write('abs')"
    )
    assert Path(repl.temp_dir, "notes.txt").read_text() == "hi"
    assert absolute.read_text() == "abs"
    assert os.getcwd() == cwd
    assert repl.execute_code("print(open('notes.txt').read())").stdout == "hi\n"


# -- scaffold restoration ----------------------------------------------------------


def test_reserved_names_are_restored() -> None:
    with LocalREPL(context_payload="the context") as env:
        env.execute_code("context = 'x'\nllm_query = 5\nSHOW_VARS = None\nFINAL_VAR = 1")
        result = env.execute_code(
            "print(context)\nprint(callable(llm_query), callable(SHOW_VARS), callable(FINAL_VAR))"
        )
        assert result.stdout == "the context\nTrue True True\n"
        assert env.locals["context_0"] == "the context"
    assert "FINAL_VAR" not in RESERVED_TOOL_NAMES


def test_context_n_bindings_are_restored() -> None:
    with LocalREPL(context_payload={"a": 1}) as env:
        env.execute_code("context_0 = 'gone'\ndel context")
        assert env.execute_code("print(context_0, context)").stdout == "{'a': 1} {'a': 1}\n"


def test_locals_is_a_live_user_view(repl: LocalREPL) -> None:
    repl.locals["y"] = 5
    assert repl.execute_code("print(y)").stdout == "5\n"
    repl.execute_code("z = y + 1")
    assert repl.locals["z"] == 6
    for hidden in ("llm_query", "rlm_query_batched", "SHOW_VARS", "FINAL_VAR", "__builtins__"):
        assert hidden not in repl.locals
    assert "answer" in repl.locals
    assert repl.globals["llm_query"] is not None
    with pytest.raises(KeyError):
        repl.locals["llm_query"] = 1


# -- answer and FINAL_VAR ------------------------------------------------------------


def test_answer_ready_sets_final_answer(repl: LocalREPL) -> None:
    assert repl.execute_code("answer['content'] = 'draft'").final_answer is None
    result = repl.execute_code("answer['content'] = 42\nanswer['ready'] = True")
    assert result.final_answer == "42"
    # The answer belongs to that cell only.
    assert repl.execute_code("pass").final_answer is None


def test_answer_update_sets_final_answer(repl: LocalREPL) -> None:
    result = repl.execute_code("answer.update({'content': 'via update', 'ready': True})")
    assert result.final_answer == "via update"


def test_answer_rebound_to_plain_dict(repl: LocalREPL) -> None:
    result = repl.execute_code("answer = {'content': 'rebound', 'ready': True}")
    assert result.final_answer == "rebound"
    # Re-wrapped: the next cell can signal again through item assignment.
    result = repl.execute_code("answer['content'] = 'again'\nanswer['ready'] = True")
    assert result.final_answer == "again"


def test_answer_rebound_not_ready_or_not_a_dict(repl: LocalREPL) -> None:
    assert repl.execute_code("answer = {'content': 'x', 'ready': False}").final_answer is None
    assert repl.execute_code("answer = 'oops'").final_answer is None
    assert repl.execute_code("print(answer)").stdout == "{'content': '', 'ready': False}\n"


def test_answer_survives_exception_in_same_cell(repl: LocalREPL) -> None:
    result = repl.execute_code("answer['content'] = 'ok'\nanswer['ready'] = True\n1/0")
    assert result.final_answer == "ok"
    assert "ZeroDivisionError" in result.stderr


def test_reset_answer(repl: LocalREPL) -> None:
    repl.execute_code("answer['content'] = 'old'")
    repl.reset_answer()
    assert repl.execute_code("print(answer)").stdout == "{'content': '', 'ready': False}\n"


def test_answer_copies_are_plain_dicts(repl: LocalREPL) -> None:
    result = repl.execute_code(
        "import copy\nc = copy.deepcopy(answer)\nprint(type(c).__name__, type(answer.copy()).__name__)"
    )
    assert result.stdout == "dict dict\n"


def test_final_var_with_variable_name(repl: LocalREPL) -> None:
    result = repl.execute_code("total = [1, 2]\nprint(FINAL_VAR('total'))")
    assert result.final_answer == "[1, 2]"
    assert result.stdout == "[1, 2]\n"


def test_final_var_with_value(repl: LocalREPL) -> None:
    assert repl.execute_code("FINAL_VAR(7)").final_answer == "7"
    assert repl.execute_code("FINAL_VAR('no such variable')").final_answer == "no such variable"


def test_lookup_and_set_variable(repl: LocalREPL) -> None:
    repl.execute_code("found = {'k': 1}")
    assert repl.lookup_variable("found") == "{'k': 1}"
    assert repl.lookup_variable("missing") is None
    assert repl.lookup_variable("llm_query") is None
    repl.set_variable("final_answer_0", "done")
    assert repl.execute_code("print(final_answer_0)").stdout == "done\n"
    with pytest.raises(ValueError):
        repl.set_variable("not valid", 1)


# -- contexts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    ["plain text", {"k": [1, 2]}, [{"role": "user", "content": "hi"}], [1, 2, 3]],
)
def test_context_payload_types(payload: Any) -> None:
    with LocalREPL(context_payload=payload) as env:
        result = env.execute_code("print(repr(context)); print(context == context_0)")
        assert result.stdout == f"{payload!r}\nTrue\n"
        assert env.get_context_count() == 1


def test_context_containers_are_copied() -> None:
    payload = {"items": [1]}
    with LocalREPL(context_payload=payload) as env:
        payload["items"].append(2)
        assert env.execute_code("print(context)").stdout == "{'items': [1]}\n"


# -- SHOW_VARS -------------------------------------------------------------------------


def test_show_vars(repl: LocalREPL) -> None:
    empty = repl.execute_code("print(SHOW_VARS())").stdout
    assert empty.startswith("No variables created yet")
    result = repl.execute_code("import json\nn = 1\nname = 'a'\n_private = 2\nprint(SHOW_VARS())")
    assert result.stdout == "Available variables: {'n': 'int', 'name': 'str'}\n"


# -- custom tools ------------------------------------------------------------------------


def test_custom_tools_callable_and_value() -> None:
    tools = {
        "double": {"tool": lambda x: x * 2, "description": "Doubles"},
        "LIMIT": 10,
    }
    with LocalREPL(custom_tools=tools) as env:
        assert env.execute_code("print(double(LIMIT))").stdout == "20\n"
        env.execute_code("double = None")
        assert env.execute_code("print(double(2))").stdout == "4\n"
        assert "LIMIT" in env.locals and "double" not in env.locals
        assert env.custom_sub_tools is env.custom_tools


def test_custom_tools_reject_reserved_names() -> None:
    with pytest.raises(ValueError, match="reserved"):
        LocalREPL(custom_tools={"context": "x"})
    with pytest.raises(ValueError, match="reserved"):
        LocalREPL(custom_tools={"llm_query": lambda p: p})


def test_setup_code_runs_at_construction() -> None:
    with LocalREPL(setup_code="import math\nroot = math.sqrt(16)") as env:
        assert env.locals["root"] == 4.0


# -- llm_query through a route ----------------------------------------------------------


def test_llm_query_without_handler(repl: LocalREPL) -> None:
    result = repl.execute_code("print(llm_query('hi'))\nprint(llm_query_batched(['a', 'b']))")
    assert result.stdout == (
        "Error: No LM handler configured\n"
        "['Error: No LM handler configured', 'Error: No LM handler configured']\n"
    )


def test_llm_query_via_route() -> None:
    route = FakeRoute()
    with LocalREPL(lm_route=route) as env:  # type: ignore[arg-type]
        result = env.execute_code("r = llm_query('hello', model='m1')\nprint(r)")
        assert result.stdout == "echo:hello\n"
        assert route.models == ["m1"]
        assert [c.response for c in result.rlm_calls] == ["echo:hello"]
        failed = env.execute_code("print(llm_query('boom'))")
        assert failed.stdout == "Error: LM query failed - provider down\n"
        assert failed.rlm_calls == []


def test_llm_query_batched_order_and_errors() -> None:
    with LocalREPL(lm_route=FakeRoute()) as env:  # type: ignore[arg-type]
        result = env.execute_code("rs = llm_query_batched(['a', 'boom', 'c'])\nprint(rs)")
        assert result.locals["rs"] == ["echo:a", "Error: RuntimeError: provider down", "echo:c"]
        assert [c.prompt for c in result.rlm_calls] == ["a", "boom", "c"]
        assert env.execute_code("print(llm_query_batched([]))").stdout == "[]\n"


def test_rlm_query_falls_back_to_llm_query() -> None:
    with LocalREPL(lm_route=FakeRoute()) as env:  # type: ignore[arg-type]
        result = env.execute_code("print(rlm_query('q'))\nprint(rlm_query_batched(['x', 'y']))")
        assert result.stdout == "echo:q\n['echo:x', 'echo:y']\n"
        assert len(result.rlm_calls) == 3


# -- rlm_query through subcall_fn -------------------------------------------------------


class CountingSubcall:
    """A subcall_fn that records how many calls are in flight at once."""

    def __init__(self, delay: float = 0.05) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0

    def __call__(self, prompt: str, model: str | None) -> RLMChatCompletion:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.delay)
            if prompt.startswith("bad"):
                raise RuntimeError(f"child failed on {prompt}")
            print(f"child says {prompt}")
            return completion(prompt, f"child:{prompt}")
        finally:
            with self.lock:
                self.in_flight -= 1


def test_rlm_query_uses_subcall_fn() -> None:
    sub = CountingSubcall(delay=0)
    with LocalREPL(subcall_fn=sub) as env:
        result = env.execute_code("print(rlm_query('task'))\nprint(rlm_query('bad one'))")
        assert result.stdout == (
            "child says task\nchild:task\nError: RLM query failed - child failed on bad one\n"
        )
        assert [c.response for c in result.rlm_calls] == ["child:task"]


def test_rlm_query_batched_bounded_concurrency_and_order() -> None:
    sub = CountingSubcall()
    prompts = [f"p{i}" for i in range(10)]
    with LocalREPL(subcall_fn=sub, max_concurrent_subcalls=3) as env:
        env.set_variable("prompts", prompts)
        result = env.execute_code("rs = rlm_query_batched(prompts)")
        assert result.stderr == ""
        assert result.locals["rs"] == [f"child:{p}" for p in prompts]
        assert [c.prompt for c in result.rlm_calls] == prompts
        assert 1 < sub.max_in_flight <= 3
        # Output of the sub-calls' worker threads still belongs to this cell.
        assert sorted(result.stdout.splitlines()) == sorted(f"child says {p}" for p in prompts)


def test_rlm_query_batched_per_item_errors() -> None:
    with LocalREPL(subcall_fn=CountingSubcall(delay=0.01)) as env:
        result = env.execute_code("print(rlm_query_batched(['ok1', 'bad2', 'ok3']))")
        assert result.stdout.splitlines()[-1] == (
            "['child:ok1', 'Error: RLM query failed - child failed on bad2', 'child:ok3']"
        )
        assert [c.prompt for c in result.rlm_calls] == ["ok1", "ok3"]
        assert "TypeError" in env.execute_code("rlm_query_batched('abc')").stderr


# -- lifecycle ---------------------------------------------------------------------------


def test_cleanup_removes_temp_dir_and_is_idempotent() -> None:
    env = LocalREPL()
    env.execute_code("open('f.txt', 'w').write('x')")
    temp_dir = env.temp_dir
    assert os.path.isdir(temp_dir)
    env.cleanup()
    env.cleanup()
    assert not os.path.exists(temp_dir)
    assert env.globals == {}
    with pytest.raises(RuntimeError):
        env.execute_code("1")


def test_context_manager_cleans_up() -> None:
    with LocalREPL() as env:
        temp_dir = env.temp_dir
    assert not os.path.exists(temp_dir)


def test_separate_non_persistent_calls_do_not_share_state() -> None:
    # The engine builds a fresh LocalREPL for every non-persistent completion.
    first = get_environment("local", {"context_payload": "call one"})
    first.execute_code("secret = 'from call one'")
    first.cleanup()
    second = get_environment("local", {"context_payload": "call two"})
    try:
        result = second.execute_code("print(context)\nprint(secret)")
        assert result.stdout == "call two\n"
        assert result.stderr.strip().endswith("NameError: name 'secret' is not defined")
    finally:
        second.cleanup()


def test_compaction_history() -> None:
    with LocalREPL(compaction=True) as env:
        entry = [{"role": "user", "content": "hi"}]
        env.append_compaction_entry(entry)
        entry[0]["content"] = "changed"
        env.execute_code("history = None")
        assert (
            env.execute_code("print(history)").stdout == "[[{'role': 'user', 'content': 'hi'}]]\n"
        )


# -- registry ----------------------------------------------------------------------------


def test_registry() -> None:
    assert set(ENVIRONMENT_NAMES) == {
        "local", "ipython", "docker", "modal", "e2b", "daytona", "prime", "sandbox"
    }  # fmt: skip
    assert environment_names() == list(ENVIRONMENT_NAMES)
    assert environment_supports_persistence("local")
    assert all(environment_supports_persistence(n) for n in ENVIRONMENT_NAMES)
    env = get_environment("local", {})
    assert isinstance(env, LocalREPL)
    env.cleanup()
    with pytest.raises(ValueError, match="local"):
        get_environment("nope", {})
    with pytest.raises(ValueError):
        environment_supports_persistence("nope")


def test_rlms_environment_type_lists_the_registry_names() -> None:
    # rlm.base.types keeps rlms's Literal; the registry is the list everything else reads.
    assert sorted(get_args(EnvironmentType)) == sorted(ENVIRONMENT_NAMES)


def test_registry_describes_every_environment_and_its_isolation() -> None:
    descriptions = environment_descriptions()
    assert list(descriptions) == list(ENVIRONMENT_NAMES)
    assert descriptions["sandbox"].startswith("a bubblewrap sandbox")
    assert descriptions["local"].startswith("this process")
    import rlm.environments as envs

    for name, text in descriptions.items():
        assert text.strip() and "\n" not in text, name
        # The flag says what the class is (the module imports without optional SDKs).
        entry = envs._REGISTRY[name]
        cls = getattr(importlib.import_module(entry.module), entry.class_name)
        isolated = environment_is_isolated(name)
        assert issubclass(cls, IsolatedEnv if isolated else NonIsolatedEnv), name
    assert not environment_is_isolated("local") and not environment_is_isolated("ipython")
    assert environment_is_isolated("sandbox")
    with pytest.raises(ValueError):
        environment_is_isolated("nope")


def test_missing_environment_module_is_not_implemented(monkeypatch: pytest.MonkeyPatch) -> None:
    import rlm.environments as envs

    registry = dict(envs._REGISTRY)
    registry["ghost"] = envs._Entry("rlm.environments.ghost_repl:GhostREPL", "nowhere yet")
    monkeypatch.setattr(envs, "_REGISTRY", registry)
    with pytest.raises(NotImplementedError, match="Environment 'ghost' is not available"):
        get_environment("ghost", {})
