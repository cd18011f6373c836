"""SandboxREPL specifics: construction errors, limits, the registry, and the engine
driving it end to end with a scripted model."""

from __future__ import annotations

import warnings
from typing import Any
from unittest import mock

import pytest
from worker_env_support import env_of, needs_bwrap

import rlm.core.rlm as core_rlm
from rlm import RLM
from rlm.base.errors import EnvironmentError_
from rlm.clients.scripted import ScriptedLM
from rlm.environments import environment_supports_persistence, get_environment
from rlm.environments.sandbox_repl import SandboxREPL


def test_missing_bubblewrap_says_how_to_install_it() -> None:
    with pytest.raises(EnvironmentError_, match="apt-get install bubblewrap"):
        SandboxREPL(bwrap_path="/nonexistent/bwrap")


def test_unknown_isolation_is_rejected() -> None:
    with pytest.raises(ValueError, match="isolation"):
        SandboxREPL(isolation="vm")  # type: ignore[arg-type]


def test_process_isolation_warns_and_works() -> None:
    with pytest.warns(RuntimeWarning, match="no filesystem, network or process isolation"):
        env = SandboxREPL(isolation="process")
    try:
        assert env.execute_code("print(6 * 7)").stdout == "42\n"
    finally:
        env.cleanup()


def test_registry_knows_sandbox_as_persistent() -> None:
    assert environment_supports_persistence("sandbox")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        env = get_environment("sandbox", {"isolation": "process", "context_payload": "c"})
    try:
        assert isinstance(env, SandboxREPL)
        assert env.execute_code("print(context)").stdout == "c\n"
    finally:
        env.cleanup()


@needs_bwrap
def test_cpu_rlimit_kills_only_the_worker() -> None:
    with env_of("sandbox", cpu_seconds=1, cell_timeout=30) as env:
        env.execute_code("kept = 1")
        result = env.execute_code("while True:\n    pass")
        assert "SIGXCPU" in result.stderr.strip().splitlines()[-1]
        assert env.execute_code("print(kept)").stdout == "1\n"


@needs_bwrap
def test_failing_sandbox_start_reports_bwrap_stderr() -> None:
    with pytest.raises(EnvironmentError_, match="could not start the worker"):
        SandboxREPL(ro_binds=["/nonexistent-path-for-rlmx"], start_timeout=10)


# -- end to end through RLM ----------------------------------------------------------------


def repl(code: str) -> str:
    return f"Working.\n```repl\n{code}\n```"


class TurnScript:
    """Root replies per turn; sub-calls (plain string prompts) are echoed."""

    def __init__(self, turns: list[list[str]]) -> None:
        self.turns = turns
        self.turn, self.step = -1, 0

    def __call__(self, prompt: Any) -> str:
        if isinstance(prompt, str):
            return f"sub:{prompt}"
        if prompt[-1]["content"].startswith("You have not looked"):
            self.turn, self.step = self.turn + 1, 0
        reply = self.turns[self.turn][self.step]
        self.step += 1
        return reply


@needs_bwrap
def test_rlm_persistent_sandbox_end_to_end() -> None:
    script = TurnScript(
        [
            [
                repl("notes = [context_0, llm_query('q1')]\nimport os\nwhere = os.getcwd()"),
                repl("answer['content'] = '|'.join(notes) + where\nanswer['ready'] = True"),
            ],
            [
                repl(
                    "notes.append(context_1)\n"
                    "answer['content'] = f'{len(notes)}:{final_answer_0}:{len(history_0)}'\n"
                    "answer['ready'] = True"
                )
            ],
        ]
    )
    lm = ScriptedLM(model_name="root-model", responder=script)
    with mock.patch.object(core_rlm, "get_client", lambda backend, kwargs: lm):
        rlm = RLM(
            backend="openai",
            backend_kwargs={"model_name": "root-model"},
            environment="sandbox",
            environment_kwargs={"cell_timeout": 30},
            persistent=True,
        )
        try:
            first = rlm.completion("alpha")
            assert first.response == "alpha|sub:q1/tmp"
            assert first.usage_summary.model_usage_summaries["root-model"].total_calls == 3
            env = rlm._persistent_env
            assert isinstance(env, SandboxREPL)
            second = rlm.completion("beta")
            assert second.response.startswith("3:alpha|sub:q1/tmp:")
            assert rlm._persistent_env is env
            assert env.get_context_count() == 2 and env.get_history_count() == 2
        finally:
            rlm.close()
        assert env.transport.poll() is not None  # the worker went with the session


@needs_bwrap
def test_rlm_one_shot_sandbox_with_child_rlm() -> None:
    # Root and child run the same code, each in its own sandbox: the root (whose
    # context is "root context") delegates, the child answers from its own context.
    code = (
        "answer['content'] = rlm_query('child task') if context == 'root context' "
        "else 'child saw ' + context\nanswer['ready'] = True"
    )
    lm = ScriptedLM(model_name="root-model", responder=lambda prompt: repl(code))
    with mock.patch.object(core_rlm, "get_client", lambda backend, kwargs: lm):
        rlm = RLM(
            backend="openai",
            backend_kwargs={"model_name": "root-model"},
            environment="sandbox",
            max_depth=2,
        )
        try:
            assert rlm.completion("root context").response == "child saw child task"
        finally:
            rlm.close()
