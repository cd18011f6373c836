"""A depth-2 script with a batch, shared by the OpenTelemetry tests.

The root cell makes one ``llm_query_batched`` of three prompts and one ``rlm_query``;
the child's cell makes one ``llm_query``. Leaf prompts are answered ``leaf:<prompt>``.
"""

from __future__ import annotations

from typing import Any

from rlm.base.types import Prompt

ROOT = "ROOT TASK"
ROOT_CODE = (
    "r = llm_query_batched(['a', 'b', 'c'])\n"
    "c = rlm_query('sub task')\n"
    "answer['content'] = c + '|' + ','.join(r)\n"
    "answer['ready'] = True"
)
CHILD_CODE = "x = llm_query('leaf q')\nanswer['content'] = 'child:' + x\nanswer['ready'] = True"
ANSWER = "child:leaf:leaf q|leaf:a,leaf:b,leaf:c"


def block(code: str) -> str:
    return f"```repl\n{code}\n```"


def respond(prompt: Prompt) -> str:
    if isinstance(prompt, str):
        if prompt == "boom":
            raise RuntimeError("leaf failed")
        return "leaf:" + prompt
    assert isinstance(prompt, list)
    if f"Answer the following: {ROOT}" in str(prompt[1]["content"]):
        return block(ROOT_CODE)
    return block(CHILD_CODE)


def rlm_kwargs(**extra: Any) -> dict[str, Any]:
    """``RLM(**rlm_kwargs(tracing=...))``: the scripted backend, depth 2."""
    return {
        "backend": "scripted",
        "backend_kwargs": {"responder": respond, "model_name": "m1"},
        "max_depth": 2,
        **extra,
    }
