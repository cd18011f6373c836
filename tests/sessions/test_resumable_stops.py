"""Every limit error carries a checkpoint; resuming goes on after the last completed
iteration without calling the model again for the iterations already done."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from session_support import Program, durable_rlm, repl, run_child, submit

from rlm import (
    RLM,
    BudgetExceededError,
    CancellationError,
    ErrorThresholdExceededError,
    LLMCallLimitExceededError,
    TimeoutExceededError,
    TokenLimitExceededError,
)
from rlm.base.errors import ConfigurationError, RLMLimitError
from rlm.sessions import Checkpoint, show

STEPS = [repl("a = 1"), repl("b = a + 1"), submit("str(a + b)")]


def scripted(program: Program, **kw: Any) -> RLM:
    backend_kwargs = {"model_name": "root", "responder": program}
    backend_kwargs.update(kw.pop("backend_kwargs", {}))
    return RLM(backend="scripted", backend_kwargs=backend_kwargs, **kw)


LIMITS: list[tuple[type[RLMLimitError], dict[str, Any], list[str]]] = [
    (LLMCallLimitExceededError, {"max_llm_calls": 2}, STEPS),
    (TimeoutExceededError, {"max_timeout": 0.3},
     [repl("import time; time.sleep(0.2); a = 1"), repl("time.sleep(0.2); b = a + 1"),
      STEPS[2]]),
    (TokenLimitExceededError, {"max_tokens": 2500}, STEPS),
    (BudgetExceededError, {"max_budget": 0.0025, "backend_kwargs": {"cost_per_token": 1e-6}},
     STEPS),
    (ErrorThresholdExceededError, {"max_errors": 2},
     [repl("a = 1; 1 / 0"), repl("b = a + 1; undefined_name"), STEPS[2]]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("error", "limits", "steps"), LIMITS, ids=lambda v: getattr(v, "__name__", "")
)
def test_every_limit_error_carries_a_resumable_checkpoint(
    error: type[RLMLimitError], limits: dict[str, Any], steps: list[str]
) -> None:
    program = Program({"q": steps})
    rlm = scripted(program, persistent=True, **limits)
    with pytest.raises(error) as info:
        rlm.completion("the context", root_prompt="q")
    checkpoint = info.value.checkpoint
    assert isinstance(checkpoint, Checkpoint)
    done = checkpoint.iteration
    assert done >= 1
    assert program.calls[:done] == [("q", i) for i in range(1, done + 1)]
    assert checkpoint.usage.total_calls == len(program.calls)
    assert checkpoint.context_index == 0

    program.calls.clear()
    program.prompts.clear()
    fresh = scripted(program, persistent=True)  # another RLM, without the limit
    result = fresh.completion("the context", root_prompt="q", resume=checkpoint)
    assert result.response == "3"
    # No iteration that had completed is asked again.
    assert program.calls == [("q", i) for i in range(done + 1, 4)]
    assert program.prompts[0][: len(checkpoint.messages)] == checkpoint.messages
    assert fresh.environment is not None and fresh.environment.locals["a"] == 1
    rlm.close()
    fresh.close()


def test_cancellation_carries_a_checkpoint_and_resumes() -> None:
    # completion() notices a cancel between steps: the cell running at that moment
    # finishes, so iteration 2 completes and the model is not asked for iteration 3.
    steps = [repl("a = 1"), repl("import time; time.sleep(0.5); b = 2"), submit("'done'")]
    program = Program({"q": steps})
    rlm = scripted(program, persistent=True)
    timer = threading.Timer(0.25, rlm.cancel)
    timer.start()
    with pytest.raises(CancellationError) as info:
        rlm.completion("ctx", root_prompt="q")
    timer.cancel()
    checkpoint = info.value.checkpoint
    assert checkpoint.iteration == 2
    assert program.calls == [("q", 1), ("q", 2)]
    program.calls.clear()
    assert rlm.completion("ctx", root_prompt="q", resume=checkpoint).response == "done"
    assert program.calls == [("q", 3)]
    env = rlm.environment
    assert env is not None and env.get_context_count() == 1  # the stopped turn's slot
    assert env.locals["final_answer_0"] == "done"
    rlm.close()


def test_one_shot_run_resumes_with_its_variables() -> None:
    program = Program({"q": [repl("secret = 41"), submit("str(secret + 1)")]})
    with pytest.raises(LLMCallLimitExceededError) as info:
        scripted(program, max_llm_calls=1).completion("ctx", root_prompt="q")
    checkpoint = info.value.checkpoint
    assert checkpoint.snapshot is not None  # the environment is gone: the variables travel
    result = scripted(program).completion("ctx", root_prompt="q", resume=checkpoint)
    assert result.response == "42"


def test_resume_true_and_false_in_memory() -> None:
    program = Program({"q": STEPS})
    rlm = scripted(program, persistent=True, max_llm_calls=2)
    with pytest.raises(LLMCallLimitExceededError):
        rlm.completion("ctx", root_prompt="q")
    program.calls.clear()
    assert rlm.completion("ctx", root_prompt="q", resume=True).response == "3"
    assert program.calls == [("q", 3)]
    with pytest.raises(ConfigurationError, match="no stopped turn"):
        rlm.completion("ctx", root_prompt="q", resume=True)
    program.calls.clear()
    with pytest.raises(LLMCallLimitExceededError):  # resume=False (and None) start over
        rlm.completion("ctx", root_prompt="q", resume=False)
    assert program.calls[0] == ("q", 1)
    rlm.close()


def test_durable_session_continues_a_stopped_turn_by_itself(tmp_path: Path) -> None:
    program = Program({"q": STEPS, "other": [submit("'other'")]})
    store = tmp_path / "s.db"
    rlm = durable_rlm(program, store, "s", max_llm_calls=2)
    with pytest.raises(LLMCallLimitExceededError):
        rlm.completion("ctx", root_prompt="q")
    assert [(t.index, t.status) for t in show("s", store).turns] == [(0, "stopped")]
    program.calls.clear()
    assert rlm.completion("ctx", root_prompt="q").response == "3"  # asked the same again
    assert program.calls == [("q", 3)]
    turns = show("s", store).turns
    assert [(t.index, t.status, t.answer) for t in turns] == [(0, "completed", "3")]
    assert turns[0].usage["model_usage_summaries"]["root"]["total_calls"] == 3
    # A different request after a stop is a new turn; the stopped one stays in the thread.
    with pytest.raises(LLMCallLimitExceededError):
        rlm.completion("ctx", root_prompt="q", resume=False)
    assert rlm.completion("new", root_prompt="other").response == "other"
    assert [(t.index, t.status) for t in show("s", store).turns] == [
        (0, "completed"), (1, "stopped"), (2, "completed")
    ]  # fmt: skip
    rlm.close()


CHILD = """
import json, sys
from session_support import Program, durable_rlm
from test_resumable_stops import STEPS
program = Program({"q": STEPS})
limit = {"max_llm_calls": 1} if sys.argv[2] == "stop" else {}
rlm = durable_rlm(program, sys.argv[1], "s", **limit)
try:
    answer = rlm.completion("ctx", root_prompt="q").response
except Exception as exc:
    answer = type(exc).__name__
env = rlm.environment
print(json.dumps({"answer": answer, "calls": program.calls, "contexts": env.get_context_count(),
                  "vars": [env.locals.get("a"), env.locals.get("b")]}))
rlm.close()
"""


def test_a_stopped_durable_turn_resumes_in_the_next_process(tmp_path: Path) -> None:
    store = str(tmp_path / "s.db")
    first = json.loads(run_child(CHILD, store, "stop").stdout)
    assert first["answer"] == "LLMCallLimitExceededError"
    assert first["calls"] == [["q", 1]]
    second = json.loads(run_child(CHILD, store, "go").stdout)
    assert second == {"answer": "3", "calls": [["q", 2], ["q", 3]], "contexts": 1, "vars": [1, 2]}
    (turn,) = show("s", store).turns
    assert (turn.status, turn.iterations) == ("completed", 3)


def test_checkpoints_survive_the_store_round_trip() -> None:
    program = Program({"q": STEPS})
    with pytest.raises(LLMCallLimitExceededError) as info:
        scripted(program, persistent=True, max_llm_calls=1).completion("c", root_prompt="q")
    checkpoint = info.value.checkpoint
    record = json.loads(json.dumps(checkpoint.to_record()))
    again = Checkpoint.from_record(record, [*checkpoint.messages, {"role": "x"}], "sid")
    assert again.messages == checkpoint.messages
    assert again.iteration == checkpoint.iteration == 1
    assert again.usage.total_calls == 1
    time.sleep(0)
