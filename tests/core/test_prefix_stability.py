"""Root prompts a model server can serve from its prefix cache (issue 18).

A server (llama.cpp, vLLM, every hosted provider's prompt cache) re-evaluates only the
prompt after the longest prefix it has already seen. So each root call of a turn must
send the previous call's messages again, byte for byte, followed by what is new: the
model's reply, the REPL output and the next turn prompt. A counter in an early message,
old outputs truncated again or metadata re-rendered would throw the cache away on every
call. The exceptions: a compaction (the history is replaced by a summary; the system and
metadata messages stay) and a new turn of a persistent session (each turn opens a fresh
conversation, as in rlms: earlier turns are in the REPL's ``history``; the system
message stays the same).

These run the real engine (``RLM`` on its ``scripted`` backend and local REPL) and
record every root call's messages. ``benchmarks/prefix_cache.py`` replays the same
sequences to a real llama.cpp server and reads how many tokens it re-evaluates.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from rlm import RLM
from rlm.core.prompts import COMPACTION_PROMPT

Messages = list[dict[str, Any]]


class Script:
    """Replies to root calls and records their messages; the iteration is counted from
    the assistant messages of the current conversation."""

    def __init__(self, submit_at: int | None, by_calls: bool = False) -> None:
        self.submit_at = submit_at
        self.by_calls = by_calls
        self.calls: list[Messages] = []
        self.turns: list[int] = []
        self.turn = 0
        self.replies: list[str] = []

    def __call__(self, prompt: Any) -> str:
        if not (isinstance(prompt, list) and prompt and prompt[0].get("role") == "system"):
            return "sub-call reply"
        self.calls.append(copy.deepcopy(prompt))
        self.turns.append(self.turn)
        if prompt[-1].get("content") == COMPACTION_PROMPT:
            reply = f"Summary {len(self.calls)}: read lines so far; next: keep reading."
        else:
            i = 1 + sum(1 for m in prompt if m["role"] == "assistant")
            if self.by_calls:  # compaction resets the conversation: count every call
                i = len(self.calls)
            if self.submit_at is not None and i >= self.submit_at:
                reply = '```repl\nanswer["content"] = "3"\nanswer["ready"] = True\n```'
            else:
                reply = f"Step {i}.\n```repl\nprint(context.splitlines()[{i}:{i + 3}])\n```"
        self.replies.append(reply)
        return reply


CONTEXT = "".join(f"line {i}: {'abc' * (i % 5)}\n" for i in range(60))


def engine(script: Script, **kwargs: Any) -> RLM:
    backend_kwargs = {"responder": script, **kwargs.pop("backend_kwargs", {})}
    return RLM(backend="scripted", backend_kwargs=backend_kwargs, max_iterations=20, **kwargs)


def assert_extends(prev: Messages, cur: Messages, where: str) -> None:
    """``cur`` starts with every message of ``prev``, byte for byte."""
    assert len(cur) > len(prev), f"{where}: the conversation did not grow"
    for j, (a, b) in enumerate(zip(prev, cur, strict=False)):
        assert b["role"] == a["role"], f"{where}: message {j} changed role"
        assert b["content"].encode() == a["content"].encode(), (
            f"{where}: message {j} ({a['role']}) was rewritten: the server's cached "
            f"prefix ends there\n--- before\n{a['content'][:300]}\n--- after\n"
            f"{b['content'][:300]}"
        )


def check_turn(calls: list[Messages], replies: list[str], label: str) -> None:
    """Within a turn each call extends the previous one by the model's reply, verbatim,
    and the messages after it (REPL output, the next turn prompt)."""
    for k in range(1, len(calls)):
        prev, cur = calls[k - 1], calls[k]
        assert_extends(prev, cur, f"{label}, call {k + 1}")
        assert cur[len(prev)] == {"role": "assistant", "content": replies[k - 1]}
        assert all(m["role"] == "user" for m in cur[len(prev) + 1 :])


def test_15_iterations_each_root_call_extends_the_previous() -> None:
    script = Script(submit_at=15)
    rlm = engine(script)
    try:
        result = rlm.completion(CONTEXT, root_prompt="How many lines?")
    finally:
        rlm.close()
    assert result.response == "3"
    assert len(script.calls) == 15
    check_turn(script.calls, script.replies, "one-shot")
    # what grows per call is bounded by the new messages: nothing old is re-sent changed
    assert [len(c) for c in script.calls] == [3 + 3 * k for k in range(15)]


def test_the_out_of_iterations_call_extends_the_last_iteration() -> None:
    script = Script(submit_at=None)  # never submits: 15 iterations, then the final call
    rlm = RLM(backend="scripted", backend_kwargs={"responder": script}, max_iterations=15)
    try:
        rlm.completion(CONTEXT, root_prompt="How many lines?")
    finally:
        rlm.close()
    assert len(script.calls) == 16
    for k in range(1, 16):
        assert_extends(script.calls[k - 1], script.calls[k], f"call {k + 1}")


def test_async_completion_sends_the_same_byte_stable_sequence() -> None:
    sync_script, async_script = Script(submit_at=15), Script(submit_at=15)
    rlm = engine(sync_script)
    try:
        rlm.completion(CONTEXT, root_prompt="How many lines?")
    finally:
        rlm.close()

    async def run() -> None:
        arlm = engine(async_script)
        try:
            await arlm.acompletion(CONTEXT, root_prompt="How many lines?")
        finally:
            arlm.close()

    asyncio.run(run())
    check_turn(async_script.calls, async_script.replies, "async one-shot")
    assert async_script.calls == sync_script.calls


def test_persistent_session_5_turns() -> None:
    script = Script(submit_at=3)
    rlm = engine(script, persistent=True)
    try:
        for turn in range(5):
            script.turn = turn
            out = rlm.completion(f"turn {turn}\n{CONTEXT}", root_prompt=f"Question {turn}?")
            assert out.response == "3"
    finally:
        rlm.close()
    assert script.turns == [t for t in range(5) for _ in range(3)]
    system = script.calls[0][0]
    for turn in range(5):
        calls = script.calls[3 * turn : 3 * turn + 3]
        replies = script.replies[3 * turn : 3 * turn + 3]
        check_turn(calls, replies, f"turn {turn + 1}")
        # a new turn opens a fresh conversation behind the same system message, so a
        # server still serves the system prompt from its cache
        opening = calls[0]
        assert opening[0]["content"].encode() == system["content"].encode()
        assert [m["role"] for m in opening] == ["system", "user", "user"]
        assert f"Question {turn}?" in opening[1]["content"]
        if turn:
            assert f"{turn} prior conversation histor" in opening[2]["content"]


def test_compaction_is_the_only_rewrite() -> None:
    script = Script(submit_at=15, by_calls=True)
    rlm = engine(
        script,
        compaction=True,
        backend_kwargs={"context_window": 2000},
    )
    try:
        assert rlm.completion(CONTEXT, root_prompt="How many lines?").response == "3"
    finally:
        rlm.close()
    asks = [k for k, c in enumerate(script.calls) if c[-1]["content"] == COMPACTION_PROMPT]
    assert asks, "the run never compacted: lower the context window"
    after = {k + 1 for k in asks}
    for k in range(1, len(script.calls)):
        prev, cur = script.calls[k - 1], script.calls[k]
        if k in after:  # the summary replaces the history; system and metadata stay
            assert cur[:2] == prev[:2]
            assert cur[2] == {"role": "assistant", "content": script.replies[k - 1]}
        else:
            assert_extends(prev, cur, f"call {k + 1}")


def test_a_rewritten_early_message_is_caught() -> None:
    """The check itself: a per-call counter in the system message is reported."""
    calls = [
        [{"role": "system", "content": f"call {k}"}, {"role": "user", "content": "q"}]
        + [{"role": "user", "content": str(j)} for j in range(k)]
        for k in range(3)
    ]
    with pytest.raises(AssertionError, match="message 0 \\(system\\) was rewritten"):
        assert_extends(calls[0], calls[1], "call 2")
