"""The context-window guard in a run: a sub-call that cannot fit is never sent.

The root is a ``ScriptedLM`` (``backend="scripted"``); sub-calls go to the ``openai``
backend pointed at a loopback server speaking the OpenAI wire, which counts every
request. The model sees the refusal, naming the sizes, in its next prompt; a batch
loses only the oversized slot; ``budget()`` reports the windows; the root's
compaction measures against the same window.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "clients"))
from window_server import WindowServer, client_kwargs

from rlm import RLM
from rlm.base.types import Prompt
from rlm.core.prompts import COMPACTION_PROMPT

needs_openai = pytest.mark.skipif(
    importlib.util.find_spec("openai") is None, reason="needs the openai package"
)

BIG = 600_000  # characters: 150,000 estimated tokens, over gpt-4o's 128,000


def block(code: str) -> str:
    return f"```repl\n{code}\n```"


def submit(expr: str, before: str = "") -> str:
    return block(f"{before}answer['content'] = {expr}\nanswer['ready'] = True")


class Root:
    """A scripted root: replies in order, remembering every prompt it was sent."""

    def __init__(self, *replies: str) -> None:
        self.replies = list(replies)
        self.prompts: list[Prompt] = []

    def __call__(self, prompt: Prompt) -> str:
        self.prompts.append(prompt)
        return self.replies[min(len(self.prompts), len(self.replies)) - 1]


def run(root: Root, sub: dict[str, Any], **kwargs: Any) -> str:
    with RLM(
        backend="scripted",
        backend_kwargs={"responder": root, **kwargs.pop("root_kwargs", {})},
        other_backends=["openai"],
        other_backend_kwargs=[sub],
        **kwargs,
    ) as r:
        return r.completion("the context", root_prompt="ROOT").response


@needs_openai
def test_oversized_subcall_is_not_sent_and_the_model_sees_why() -> None:
    root = Root(
        block(f"r = llm_query('x' * {BIG})\nprint(r)"),
        block(f"print(rlm_query('w' * {BIG + 4}))"),  # at the depth limit: a plain call
        submit("'done'"),
    )
    with WindowServer() as server:  # says no window: gpt-4o's is the table's
        assert run(root, client_kwargs(server), max_iterations=4) == "done"
        assert server.posts == 0  # nothing was sent
    seen = str(root.prompts[1])  # the next iteration's prompt holds the REPL output
    assert "Error: prompt is 150,000 tokens (estimated), gpt-4o takes 128,000" in seen
    assert "split it" in seen
    assert "Error: prompt is 150,001 tokens (estimated), gpt-4o takes" in str(root.prompts[2])


@needs_openai
def test_a_batch_loses_only_its_oversized_slot() -> None:
    code = (
        f"rs = llm_query_batched(['alpha one', 'y' * {BIG}, 'gamma three'])\n"
        "answer['content'] = json.dumps(rs)\nanswer['ready'] = True"
    )
    root = Root(block("import json\n" + code))
    with WindowServer() as server:
        results = json.loads(run(root, client_kwargs(server)))
        assert server.posts == 2
    assert results[0] == "ok:alpha one" and results[2] == "ok:gamma three"
    assert results[1].startswith("Error: prompt is 150,000 tokens (estimated), gpt-4o takes")


@needs_openai
def test_the_provider_window_guards_the_subcalls() -> None:
    props = {"default_generation_settings": {"n_ctx": 2048}}
    root = Root(
        block(
            "import json\n"
            "small = llm_query('short question')\n"
            "big = llm_query('z' * 12000)\n"
            "answer['content'] = json.dumps([small, big, budget()])\n"
            "answer['ready'] = True"
        )
    )
    with WindowServer(props=props) as server:
        sub = client_kwargs(server, sampling_args={"max_tokens": 48})
        small, big, budget = json.loads(run(root, sub))
        assert server.hits["POST /v1/chat/completions"] == 1
        assert server.hits["GET /props"] == 1  # asked once for the whole run
    assert small == "ok:short questi"
    assert big.startswith("Error: prompt is 3,000 tokens (estimated), gpt-4o takes 2,000 ")
    assert "(2,048 less 48 kept for the reply)" in big
    assert budget["sub_context_window"] == 2000
    assert budget["context_window"] is None  # the scripted root's model is in no table


def test_budget_reports_both_windows() -> None:
    root = Root(submit("json.dumps(budget())", before="import json\n"))
    with RLM(
        backend="scripted",
        backend_kwargs={"responder": root, "model_name": "gpt-5-mini"},
        other_backends=["scripted"],
        other_backend_kwargs=[{"model_name": "sub", "responses": ["x"], "context_window": 50_000}],
    ) as r:
        budget = json.loads(r.completion("ctx", root_prompt="ROOT").response)
    assert budget["context_window"] == 272_000  # gpt-5-mini's input limit, from the table
    assert budget["sub_context_window"] == 50_000  # the override
    assert budget["calls"] is None  # the limits are still there


def test_compaction_measures_against_the_clients_window() -> None:
    compactions: list[Prompt] = []

    def respond(prompt: Prompt) -> str:
        if isinstance(prompt, list) and prompt[-1].get("content") == COMPACTION_PROMPT:
            compactions.append(prompt)
            return "summary of the work"
        return submit("'done'")

    for window, expected in ((500, 1), (None, 0)):
        # "scripted" is in no table (128K by default): only the override makes the
        # system prompt alone cross 85% of the window.
        kwargs: dict[str, Any] = {"responder": respond}
        if window is not None:
            kwargs["context_window"] = window
        compactions.clear()
        with RLM(backend="scripted", backend_kwargs=kwargs, compaction=True) as r:
            assert r.completion("ctx", root_prompt="ROOT").response == "done"
        assert len(compactions) == expected


@needs_openai
def test_async_runs_guard_the_same_way() -> None:
    props = {"default_generation_settings": {"n_ctx": 1024}}
    code = (
        "import json\n"
        "one = llm_query('q' * 8000)\n"
        "many = llm_query_batched(['fine', 'r' * 8000])\n"
        "answer['content'] = json.dumps([one, many])\nanswer['ready'] = True"
    )
    root = Root(block(code))
    with (
        WindowServer(props=props) as server,
        RLM(
            backend="scripted",
            backend_kwargs={"responder": root},
            other_backends=["openai"],
            other_backend_kwargs=[client_kwargs(server)],
        ) as r,
    ):
        reply = asyncio.run(r.acompletion("ctx", root_prompt="ROOT")).response
        assert server.hits["POST /v1/chat/completions"] == 1  # only 'fine'
        assert server.hits["GET /props"] == 1
    one, many = json.loads(reply)
    assert one.startswith("Error: prompt is 2,000 tokens (estimated), gpt-4o takes 1,024:")
    assert many[0] == "ok:fine" and many[1].startswith("Error: prompt is 2,000 tokens")
