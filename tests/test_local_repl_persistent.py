"""LocalREPL as a persistent, multi-turn environment (the SupportsPersistence contract)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rlm.environments import LocalREPL, SupportsPersistence


@pytest.fixture
def env() -> Iterator[LocalREPL]:
    repl = LocalREPL(persistent=True)
    yield repl
    repl.cleanup()


def test_implements_persistence_protocol(env: LocalREPL) -> None:
    assert isinstance(env, SupportsPersistence)
    assert env.persistent is True


def test_contexts_are_versioned(env: LocalREPL) -> None:
    assert env.get_context_count() == 0
    assert env.add_context("first") == 0
    assert env.add_context({"second": 2}) == 1
    assert env.add_context([1, 2, 3]) == 2
    assert env.get_context_count() == 3
    result = env.execute_code("print(context_0, context_1, context_2)\nprint(context)")
    assert result.stdout == "first {'second': 2} [1, 2, 3]\nfirst\n"


def test_context_alias_follows_index_zero(env: LocalREPL) -> None:
    env.add_context("a")
    env.add_context("b")
    env.execute_code("context = 'overwritten'")
    assert env.execute_code("print(context)").stdout == "a\n"
    env.add_context("replaced", 0)
    assert env.execute_code("print(context, context_0)").stdout == "replaced replaced\n"


def test_explicit_indices_and_counts(env: LocalREPL) -> None:
    assert env.add_context("five", 5) == 5
    assert env.get_context_count() == 6
    assert env.add_context("next") == 6
    assert "context" not in env.locals  # no index 0 yet
    assert env.add_history([], 3) == 3
    assert env.get_history_count() == 4
    with pytest.raises(ValueError):
        env.add_context("bad", -1)


def test_histories_are_versioned_and_deep_copied(env: LocalREPL) -> None:
    messages = [{"role": "user", "content": "hello"}]
    assert env.get_history_count() == 0
    assert env.add_history(messages) == 0
    messages[0]["content"] = "mutated"
    messages.append({"role": "assistant", "content": "extra"})
    assert env.add_history([{"role": "user", "content": "turn 2"}]) == 1
    assert env.get_history_count() == 2
    result = env.execute_code(
        "print(history_0)\nprint(history_1[0]['content'])\nprint(history is history_0)"
    )
    assert result.stdout == "[{'role': 'user', 'content': 'hello'}]\nturn 2\nTrue\n"


def test_history_alias_is_restored(env: LocalREPL) -> None:
    env.add_history([{"role": "user", "content": "x"}])
    env.execute_code("history = []\nhistory_0 = None")
    assert env.execute_code("print(len(history), len(history_0))").stdout == "1 1\n"


def test_variables_persist_across_turns(env: LocalREPL) -> None:
    # Turn 1, as the engine drives it.
    index = env.add_context("turn one data")
    env.reset_answer()
    env.execute_code("notes = [context_0]\nanswer.update(content='one', ready=True)")
    env.add_history([{"role": "user", "content": "q1"}], index)
    env.set_variable(f"final_answer_{index}", "one")
    # Turn 2.
    index = env.add_context("turn two data")
    env.reset_answer()
    result = env.execute_code("notes.append(context_1)\nprint(notes, final_answer_0)")
    assert result.stdout == "['turn one data', 'turn two data'] one\n"
    assert result.final_answer is None
    assert env.execute_code("print(answer)").stdout == "{'content': '', 'ready': False}\n"


def test_reset_answer_between_turns(env: LocalREPL) -> None:
    env.execute_code("answer['content'] = 'turn 1'")
    env.reset_answer()
    result = env.execute_code("print(answer['content'] == '')\nanswer['ready'] = True")
    assert result.stdout == "True\n"
    assert result.final_answer == ""


def test_update_handler_address(env: LocalREPL) -> None:
    env.update_handler_address(("127.0.0.1", 5555))
    assert env.lm_handler_address == ("127.0.0.1", 5555)


def test_contexts_of_non_string_lists(env: LocalREPL) -> None:
    env.add_context([1, 2, 3])
    env.add_context([{"a": 1}, {"b": 2}])
    result = env.execute_code("print(sum(context_0), context_1[1]['b'])")
    assert result.stdout == "6 2\n"
