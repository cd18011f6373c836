"""Recorded runs for the replay tests: an ``openai`` client against a loopback
OpenAI-compatible server (``loopback_model``) whose replies depend on the request's
content only, so concurrent calls (a batch, children) get the same reply whatever
order they arrive in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loopback_model import LoopbackModel

from rlm import RLM
from rlm.logger import RLMLogger

ROOT_Q = "ROOTQ: what do the parts say?"


def fence(*lines: str) -> str:
    return "```repl\n" + "\n".join(lines) + "\n```"


def tree_reply(n: int, body: dict[str, Any]) -> str:
    """A depth-2 run: the root asks one ``rlm_query`` child, which batches three
    ``llm_query`` calls; each plain sub-call is answered from its prompt."""
    messages = body["messages"]
    if len(messages) == 1 and messages[0]["role"] == "user":
        return "reply to " + str(messages[0]["content"])
    text = json.dumps(messages)
    answered = any(m["role"] == "assistant" for m in messages)
    if "ROOTQ" in text:  # the root run
        if not answered:
            return fence("kid = rlm_query('child: ask the parts')", "print('child said', kid)")
        return "FINAL_VAR(kid)"
    if not answered:  # the child run
        return fence(
            "parts = llm_query_batched(['p1', 'p2', 'p3'])",
            "joined = ' | '.join(parts)",
            "print(joined)",
        )
    return "FINAL_VAR(joined)"


def file_reply(path: Path, *, subcall: bool = False) -> Any:
    """A depth-1 run whose first cell prints ``path``'s text (or asks ``llm_query``
    with it), then answers."""

    def reply(n: int, body: dict[str, Any]) -> str:
        messages = body["messages"]
        if len(messages) == 1:
            return "sub: " + str(messages[0]["content"])
        if not any(m["role"] == "assistant" for m in messages):
            read = f"open({str(path)!r}).read()"
            code = f"print(llm_query({read}))" if subcall else f"print({read})"
            return fence("x = 6 * 7", code)
        return "FINAL(the answer is 42)"

    return reply


def backend(server: LoopbackModel) -> dict[str, Any]:
    return {"model_name": "m", "base_url": server.url, "api_key": "sk-test-secret-123"}


def record(
    server: LoopbackModel, log_dir: Path, context: Any = "the context", **kwargs: Any
) -> tuple[str, Any]:
    """Run one recorded completion; (the log's path, the result)."""
    logger = RLMLogger(log_dir=str(log_dir))
    with RLM(
        backend="openai",
        backend_kwargs=backend(server),
        logger=logger,
        record=True,
        max_iterations=4,
        **kwargs,
    ) as rlm:
        result = rlm.completion(context, root_prompt=ROOT_Q)
    assert logger.log_file_path is not None
    return logger.log_file_path, result
