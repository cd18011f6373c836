"""acompletion, stream and astream run the same loop as completion."""

from __future__ import annotations

import asyncio
import time
from unittest import mock

import pytest

import rlm.core.rlm as core_rlm
from rlm import RLM, ErrorThresholdExceededError
from rlm.clients.scripted import ScriptedLM


def repl(code: str) -> str:
    return f"```repl\n{code}\n```"


def answering_lm(latency: float = 0.0) -> ScriptedLM:
    """Root: look, then submit len(context); sub-calls echo."""

    def respond(prompt):
        if isinstance(prompt, str):
            return "sub:" + prompt
        if prompt[-1]["content"].startswith("You have not looked"):
            return repl("n = len(context)\nprint(llm_query('hi'))")
        return repl('answer["content"] = str(n)\nanswer["ready"] = True')

    return ScriptedLM(model_name="m", responder=respond, latency=latency)


@pytest.fixture
def patched():
    active = []

    def install(lm: ScriptedLM) -> None:
        active.append(mock.patch.object(core_rlm, "get_client", lambda b, k: lm))
        active[-1].start()

    yield install
    for patch in active:
        patch.stop()


def make(**kw) -> RLM:
    return RLM(backend="openai", backend_kwargs={"model_name": "m"}, **kw)


def test_acompletion_matches_completion(patched):
    patched(answering_lm())
    rlm = make()
    sync = rlm.completion("abcd")
    result = asyncio.run(rlm.acompletion("abcd"))
    assert result.response == sync.response == "4"
    assert result.usage_summary.total_calls == sync.usage_summary.total_calls == 3


def test_concurrent_acompletions_overlap(patched):
    patched(answering_lm(latency=0.1))

    async def main() -> float:
        rlms = [make() for _ in range(10)]
        started = time.perf_counter()
        results = await asyncio.gather(*(r.acompletion("xyz") for r in rlms))
        assert [r.response for r in results] == ["3"] * 10
        return time.perf_counter() - started

    elapsed = asyncio.run(main())
    # one run is 3 sequential 0.1 s calls; ten sequential runs would take 3 s
    assert elapsed < 2.0


def test_completion_works_inside_a_running_event_loop(patched):
    patched(answering_lm())

    async def notebook_cell() -> str:
        return make().completion("ab").response  # sync call from inside a loop, as in Jupyter

    assert asyncio.run(notebook_cell()) == "2"


def test_persistent_session_through_both_apis(patched):
    patched(answering_lm())
    with make(persistent=True) as rlm:
        rlm.completion("a")
        asyncio.run(rlm.acompletion("bb"))
        env = rlm._persistent_env
        assert env.get_context_count() == env.get_history_count() == 2
        assert env.locals["final_answer_1"] == "1"  # `context` is context_0 ("a")
        assert env.locals["context_1"] == "bb"


def test_stream_yields_events_in_order_then_result(patched):
    patched(answering_lm())
    rlm = make()
    stream = rlm.stream("abc", root_prompt="how long?")
    kinds = [e.type for e in stream]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert (
        kinds.index("iteration_started")
        < kinds.index("model_reply")
        < kinds.index("code_cell_finished")
    )
    assert "final_answer" in kinds
    assert stream.result is not None and stream.result.response == "3"


def test_stream_reraises_the_run_error(patched):
    patched(ScriptedLM(model_name="m", responses=[repl("1/0")]))
    stream = make(max_errors=1).stream("x")
    with pytest.raises(ErrorThresholdExceededError):
        for _ in stream:
            pass


def test_astream(patched):
    patched(answering_lm())

    async def main():
        stream = make().astream("abcde")
        kinds = [e.type async for e in stream]
        return kinds, stream.result

    kinds, result = asyncio.run(main())
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert result.response == "5"
