"""One iteration as a log entry: ``RLMIteration.to_dict()`` with bounded values.

The layout is ``RLMIteration.to_dict()``'s (what the reference visualizer reads), with
three differences that keep a log small whatever the data size:

- ``result.locals`` maps each name to a summary (``summary.summarize``), never to the
  value itself;
- a code block's ``stdout``/``stderr`` and a sub-call's ``prompt``/``response`` longer
  than ``max_text_chars`` keep their head and tail (``summary.clip_text``); what was cut
  is listed under the owner's ``"clipped"`` key (``{"stdout": {"length", "sha256"}}``);
- a sub-call's child trajectory (``metadata``) is kept as its own logger wrote it.

The root model's prompt, reply and final answer are kept whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from rlm.base.types import CodeBlock, RLMChatCompletion, RLMIteration
from rlm.logger.summary import ValueHasher, clip_text, summarize

# The REPL binds each context payload to ``context_<n>`` and the latest to ``context``.
CONTEXT_NAME = re.compile(r"context(?:_\d+)?")


@dataclass
class ContextSeen:
    """A context variable met in an iteration's locals: its name, value and summary."""

    name: str
    value: Any
    summary: dict[str, Any]


@dataclass
class EntryBuilder:
    """Builds iteration entries; the settings are the logger's."""

    preview_chars: int
    max_text_chars: int | None
    hasher: ValueHasher = field(default_factory=ValueHasher)

    def iteration(self, iteration: RLMIteration) -> tuple[dict[str, Any], list[ContextSeen]]:
        """The entry body and the context variables found in its code blocks."""
        memo: dict[int, dict[str, Any]] = {}  # one summary per object within an entry
        contexts: list[ContextSeen] = []
        blocks = [self._block(b, memo, contexts) for b in iteration.code_blocks]
        body = {
            "prompt": iteration.prompt,
            "response": iteration.response,
            "code_blocks": blocks,
            "final_answer": iteration.final_answer,
            "iteration_time": iteration.iteration_time,
        }
        return body, contexts

    def _block(
        self, block: CodeBlock, memo: dict[int, dict[str, Any]], contexts: list[ContextSeen]
    ) -> dict[str, Any]:
        result = block.result
        out: dict[str, Any] = {
            "execution_time": result.execution_time,
            "rlm_calls": [self.call(c) for c in result.rlm_calls],
            "final_answer": result.final_answer,
        }
        clipped: dict[str, Any] = {}
        for key in ("stdout", "stderr"):
            text, info = clip_text(str(getattr(result, key) or ""), self.max_text_chars)
            out[key] = text
            if info is not None:
                clipped[key] = info
        names: dict[str, Any] = {}
        for name, value in result.locals.items():
            summary = memo.get(id(value))
            if summary is None or summary.get("_of") is not value:
                summary = {**summarize(value, self.preview_chars, self.hasher), "_of": value}
                memo[id(value)] = summary
            names[str(name)] = {k: v for k, v in summary.items() if k != "_of"}
            if CONTEXT_NAME.fullmatch(str(name)):
                contexts.append(ContextSeen(str(name), value, names[str(name)]))
        out["locals"] = names
        if clipped:
            out["clipped"] = clipped
        ordered = {k: out[k] for k in ("stdout", "stderr", "locals")}
        ordered.update(out)
        return {"code": block.code, "result": ordered}

    def call(self, call: RLMChatCompletion) -> dict[str, Any]:
        """A sub-call's ``to_dict()`` with its prompt and response bounded."""
        data = call.to_dict()
        clipped: dict[str, Any] = {}
        response, info = clip_text(str(data.get("response") or ""), self.max_text_chars)
        data["response"] = response
        if info is not None:
            clipped["response"] = info
        prompt = data.get("prompt")
        if isinstance(prompt, str):
            data["prompt"], info = clip_text(prompt, self.max_text_chars)
            if info is not None:
                clipped["prompt"] = info
        elif isinstance(prompt, list):
            data["prompt"] = [self._message(m, clipped) for m in prompt]
        if clipped:
            data["clipped"] = clipped
        return data

    def _message(self, message: Any, clipped: dict[str, Any]) -> Any:
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            return message
        content, info = clip_text(message["content"], self.max_text_chars)
        if info is None:
            return message
        clipped.setdefault("prompt_messages", []).append(info)
        return {**message, "content": content}
