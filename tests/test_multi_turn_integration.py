"""End-to-end multi-turn sessions through the public ``RLM`` API with scripted models."""

from __future__ import annotations

import re
from typing import Any
from unittest import mock

import pytest

import rlm.core.rlm as core_rlm
from rlm import RLM, ErrorThresholdExceededError
from rlm.base.types import ModelUsageSummary, RLMChatCompletion, UsageSummary
from rlm.clients.base_lm import BaseLM
from rlm.clients.scripted import ScriptedLM
from rlm.environments import LocalREPL, SupportsPersistence


def repl(code: str) -> str:
    return f"Next step.\n```repl\n{code}\n```"


def submit(expr: str) -> str:
    return repl(f'answer["content"] = {expr}\nanswer["ready"] = True')


class Script:
    """Replies for a session, keyed by the turn the root model is in.

    ``turns[t]`` is the list of replies of turn ``t`` (one per iteration). Each root call
    is recorded with its messages so tests can read what the model was told.
    """

    def __init__(self, turns: list[list[str]]) -> None:
        self.turns = turns
        self.calls: list[list[dict[str, Any]]] = []
        self.turn = 0
        self.step = 0

    def __call__(self, prompt: Any) -> str:
        if isinstance(prompt, str):
            return f"sub:{prompt}"
        self.calls.append([dict(m) for m in prompt])
        if prompt[-1]["content"].startswith("You have not looked"):  # iteration 1 of a turn
            if self.calls[:-1]:
                self.turn += 1
            self.step = 0
        reply = self.turns[self.turn][self.step]
        self.step += 1
        return reply


@pytest.fixture
def scripted():
    """Patch ``get_client`` so every client is one ScriptedLM driven by a Script."""

    def install(turns: list[list[str]]) -> tuple[Script, ScriptedLM, list[tuple[str, dict]]]:
        script = Script(turns)
        lm = ScriptedLM(model_name="root-model", responder=script)
        made: list[tuple[str, dict]] = []

        def factory(backend: str, kwargs: dict) -> ScriptedLM:
            made.append((backend, dict(kwargs)))
            return lm

        patcher = mock.patch.object(core_rlm, "get_client", factory)
        patcher.start()
        patches.append(patcher)
        return script, lm, made

    patches: list[Any] = []
    yield install
    for p in patches:
        p.stop()


def make(**kw: Any) -> RLM:
    return RLM(backend="openai", backend_kwargs={"model_name": "root-model"}, **kw)


def test_environment_is_reused_across_completions(scripted):
    scripted([[submit('"a"')], [submit('"b"')], [submit('"c"')]])
    with mock.patch.object(core_rlm, "get_environment", wraps=core_rlm.get_environment) as spy:
        rlm = make(persistent=True)
        rlm.completion("first")
        env = rlm._persistent_env
        rlm.completion("second")
        rlm.completion("third")
        assert rlm._persistent_env is env
        assert spy.call_count == 1
        rlm.close()


def test_contexts_and_histories_accumulate_with_aliases(scripted):
    scripted([[submit('"one"')], [submit('"two"')], [submit('"three"')]])
    rlm = make(persistent=True)
    for payload in ("alpha", {"k": "beta"}, ["gamma", "delta"]):
        rlm.completion(payload)
    env = rlm._persistent_env
    assert isinstance(env, SupportsPersistence)
    assert env.get_context_count() == 3
    assert env.get_history_count() == 3
    assert env.locals["context_0"] == "alpha"
    assert env.locals["context_1"] == {"k": "beta"}
    assert env.locals["context_2"] == ["gamma", "delta"]
    assert env.locals["context"] == "alpha"
    assert env.locals["history"] == env.locals["history_0"]
    assert [env.locals[f"final_answer_{i}"] for i in range(3)] == ["one", "two", "three"]
    rlm.close()


def test_variables_survive_across_calls(scripted):
    scripted(
        [
            [repl("counter = 10\nnotes = ['x']"), submit("str(counter)")],
            [repl("counter += 5\nnotes.append('y')"), submit("f'{counter}:{len(notes)}'")],
        ]
    )
    rlm = make(persistent=True)
    assert rlm.completion("turn one").response == "10"
    assert rlm.completion("turn two").response == "15:2"
    rlm.close()


def test_prompt_announces_context_and_history_counts(scripted):
    script, _, _ = scripted([[submit('"1"')], [submit('"2"')], [submit('"3"')]])
    rlm = make(persistent=True)
    for i in range(3):
        rlm.completion(f"ctx {i}")
    third_turn_prompt = script.calls[-1][-1]["content"]
    assert "You have 3 contexts available (context_0 through context_2)." in third_turn_prompt
    assert (
        "2 prior conversation histories available (history_0 through history_1)"
        in third_turn_prompt
    )
    second_turn_prompt = script.calls[1][-1]["content"]
    assert "1 prior conversation history" in second_turn_prompt
    # the metadata message describes every context, not only the newest
    metadata = script.calls[-1][1]["content"]
    assert all(f"context_{i}" in metadata for i in range(3))
    assert "final_answer_0 through final_answer_1" in metadata
    rlm.close()


def test_history_includes_the_final_assistant_turn(scripted):
    final = submit('"done"')
    scripted([[repl("x = 1"), final], [submit('"next"')]])
    rlm = make(persistent=True)
    rlm.completion("c0")
    rlm.completion("c1")
    history = rlm._persistent_env.locals["history_0"]
    assistant = [m["content"] for m in history if m["role"] == "assistant"]
    assert assistant[-1] == final
    rlm.close()


def test_versioned_bindings_cannot_be_rebound_by_model_code(scripted):
    scripted(
        [
            [submit('"a"')],
            [repl("history_0 = []\ncontext_0 = 'gone'\ndel context"), submit('"b"')],
            [submit("f'{len(history_0)}|{context_0}|{context}'")],
        ]
    )
    rlm = make(persistent=True)
    rlm.completion("c0")
    stored = len(rlm._persistent_env.locals["history_0"])
    rlm.completion("c1")
    assert rlm.completion("c2").response == f"{stored}|c0|c0"
    rlm.close()


def test_answer_is_reset_at_the_start_of_every_turn(scripted):
    scripted(
        [
            [submit('"first"')],
            [repl('print(answer["ready"], repr(answer["content"]))'), submit('"second"')],
        ]
    )
    rlm = make(persistent=True)
    rlm.completion("c0")
    result = rlm.completion("c1")
    assert result.response == "second"
    history = rlm._persistent_env.locals["history_1"]
    outputs = [
        m["content"] for m in history if m["role"] == "user" and "REPL output" in m["content"]
    ]
    assert "False ''" in outputs[0]
    rlm.close()


def test_failed_turn_keeps_contexts_and_histories_aligned(scripted):
    scripted([[submit('"ok"')], [repl("1/0"), repl("1/0")], [submit("str(len(history_1))")]])
    rlm = make(persistent=True, max_errors=2)
    rlm.completion("c0")
    with pytest.raises(ErrorThresholdExceededError) as info:
        rlm.completion("c1")
    assert info.value.partial_answer
    env = rlm._persistent_env
    assert env.get_context_count() == env.get_history_count() == 2
    assert env.locals["final_answer_1"] is None
    # the session is still usable and sees the failed turn's history
    assert int(rlm.completion("c2").response) > 2
    assert env.get_context_count() == env.get_history_count() == 3
    rlm.close()


def test_close_releases_the_environment(scripted):
    scripted([[submit('"a"')]])
    rlm = make(persistent=True)
    rlm.completion("c0")
    env = rlm._persistent_env
    temp_dir = env.temp_dir
    rlm.close()
    assert rlm._persistent_env is None
    import os

    assert not os.path.exists(temp_dir)
    rlm.close()  # idempotent


def test_context_manager_releases_the_environment(scripted):
    scripted([[submit('"a"')], [submit('"b"')]])
    with make(persistent=True) as rlm:
        rlm.completion("c0")
        env = rlm._persistent_env
        assert isinstance(env, LocalREPL)
    assert rlm._persistent_env is None
    assert env.locals == {} or "context_0" not in env.locals


def test_a_closed_session_starts_fresh(scripted):
    scripted([[repl("secret = 1"), submit('"a"')], [submit("str('secret' in globals())")]])
    rlm = make(persistent=True)
    rlm.completion("c0")
    rlm.close()
    assert rlm.completion("c1").response == "False"
    assert rlm._persistent_env.get_context_count() == 1
    rlm.close()


def test_non_persistent_calls_get_a_fresh_environment(scripted):
    scripted([[repl("leftover = 42"), submit('"a"')], [submit("str('leftover' in globals())")]])
    rlm = make()
    rlm.completion("c0")
    assert rlm.completion("c1").response == "False"
    assert rlm._persistent_env is None


def test_persistent_with_unsupported_environment_fails_at_construction(monkeypatch):
    # Every built-in environment supports persistence now: pretend one does not.
    monkeypatch.setattr(
        "rlm.core.rlm.environment_supports_persistence", lambda name: name != "modal"
    )
    with pytest.raises(ValueError, match="persistent=True is not supported for environment"):
        RLM(backend="openai", environment="modal", persistent=True)


def test_unknown_environment_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown environment"):
        RLM(backend="openai", environment="nope")


def test_persistence_checks_keep_their_names():
    rlm = make(persistent=True)
    rlm._validate_persistent_environment_support()
    env = LocalREPL()
    assert RLM._env_supports_persistence(env)
    env.cleanup()
    rlm.close()


def test_three_turn_conversation(scripted):
    script, _lm, made = scripted(
        [
            [repl("words = context.split()\nprint(len(words))"), submit("str(len(words))")],
            [repl("both = len(context_0.split()) + len(context_1.split())"), submit("str(both)")],
            [
                repl("prev = [final_answer_0, final_answer_1]\nprint(prev)"),
                submit("'|'.join(prev) + '|' + str(len(history_1))"),
            ],
        ]
    )
    with make(persistent=True) as rlm:
        r1 = rlm.completion("one two three", root_prompt="How many words?")
        r2 = rlm.completion("four five", root_prompt="And now in total?")
        r3 = rlm.completion("six", root_prompt="Summarise the answers")
        assert (r1.response, r2.response) == ("3", "5")
        first, second, hist_len = r3.response.split("|")
        assert (first, second) == ("3", "5")
        assert int(hist_len) >= 4
        for r in (r1, r2, r3):
            assert isinstance(r, RLMChatCompletion)
            assert r.usage_summary.total_calls == 2
    assert len(made) == 1  # one client for the whole session
    assert len(script.calls) == 6
    assert "How many words?" in script.calls[0][1]["content"]


def test_rlms_style_legacy_client_with_mock_works_unchanged():
    """A client written for rlms: completion() + get_last_usage(), built with Mock."""
    replies = iter([repl("x = len(context)"), submit("str(x)")])
    client = mock.Mock(spec=BaseLM)
    client.model_name = "legacy"
    client.completion.side_effect = lambda prompt: next(replies)
    client.get_last_usage.return_value = ModelUsageSummary(1, 10, 5)
    client.get_usage_summary.return_value = UsageSummary({"legacy": ModelUsageSummary(2, 20, 10)})
    # Mock(spec=BaseLM) also mocks complete(): use the base implementation, as a subclass would
    client.complete.side_effect = lambda prompt: BaseLM.complete(client, prompt)
    with mock.patch.object(core_rlm, "get_client", return_value=client):
        rlm = RLM(backend="openai", backend_kwargs={"model_name": "legacy"}, persistent=True)
        result = rlm.completion("abcdef")
        rlm.close()
    assert result.response == "6"
    assert client.completion.call_count == 2
    assert result.usage_summary.model_usage_summaries["legacy"].total_input_tokens == 20


def test_model_is_told_about_final_answers_of_earlier_turns(scripted):
    script, _, _ = scripted([[submit('"A"')], [submit('"B"')]])
    rlm = make(persistent=True)
    rlm.completion("c0")
    rlm.completion("c1")
    assert re.search(r"final_answer_0\b", script.calls[-1][1]["content"])
    rlm.close()
