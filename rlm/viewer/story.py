"""What a run did, in words and numbers: iteration titles, the question, where time and
tokens went, the final "answer now" call, and variable summaries as one line.

Pure functions over view-model pieces and raw log records; nothing here escapes text
(the page only assigns ``textContent``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

from rlm.viewer.usage import Usage

TITLE_CHARS = 160
# REPL functions that reach a model: a line calling one says what the iteration did.
_SUBCALL = re.compile(r"\b(?:llm_query|rlm_query)(?:_batched)?\s*\(")
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
# The engine's "answer now" prompt (rlm.core.prompts.FINAL_ANSWER_PROMPT), for logs
# written before iteration lines carried ``final_call``.
_FINAL_PROMPT = "You have used all your turns."


class Timing(TypedDict):
    """Seconds spent on the model's reply, on code, and on sub-calls made by the code.
    ``model`` is None when the log holds neither ``model_time`` nor ``iteration_time``;
    ``estimated`` when it was derived (iteration time minus code time)."""

    model: float | None
    code: float
    sub: float
    estimated: bool


class Tokens(TypedDict):
    model: int | None  # the root model's own call; None when the log did not record it
    sub: int
    derived: bool  # ``model`` is the run total minus everything the log did record


def _clip(line: str) -> str:
    line = " ".join(line.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1] + "…"


def _code_lines(code: str) -> list[str]:
    return [s for s in (raw.strip() for raw in code.splitlines()) if s and not s.startswith("#")]


def iteration_title(
    response: str, codes: Sequence[str], calls: int, final_call: bool
) -> tuple[str, str]:
    """``(kind, title)``: what the iteration did, for its card header.

    ``final`` for the "answer now" call; ``code``: with sub-calls, the first code line
    that makes one, else the first code line that is not a comment; ``text``: the first
    prose line of a reply without code; ``empty`` for an empty reply.
    """
    if final_call:
        return "final", "Final answer call (the iteration limit was reached)"
    lines = [line for code in codes for line in _code_lines(code)]
    if calls:
        for line in lines:
            if _SUBCALL.search(line):
                return "code", _clip(line)
    if lines:
        return "code", _clip(lines[0])
    in_fence = False
    for raw in response.splitlines():
        if _FENCE.match(raw):
            in_fence = not in_fence
            continue
        if raw.strip() and not in_fence:
            return "text", _clip(raw.lstrip("#> ").strip() or raw)
    return "empty", "(empty reply)"


def is_final_call(record: Mapping[str, Any], position: int, max_iterations: Any) -> bool:
    """The "answer now" call: marked by a newer logger, else recognised by its place
    past ``max_iterations`` or by the engine's prompt."""
    if "final_call" in record:
        return record["final_call"] is True
    if isinstance(max_iterations, int) and max_iterations > 0 and position > max_iterations:
        return True
    prompt = record.get("prompt")
    if isinstance(prompt, list) and prompt and isinstance(prompt[-1], Mapping):
        content = prompt[-1].get("content")
        return isinstance(content, str) and content.startswith(_FINAL_PROMPT)
    return False


# The engine's first user message (rlm.core.prompts.build_metadata_prompt): "Answer the
# following: ROOT_PROMPT", then the contexts described. Greedy: a root prompt may itself
# hold a blank line, and the engine's description comes after it.
_ROOT_PROMPT = re.compile(
    r"\AAnswer the following: (?P<q>.*)\n\n(?:Your context is an? |You have \d+ contexts )",
    re.DOTALL,
)
_TASK_PREFIX = "Answer the following: "


_DESCRIPTION = re.compile(r"\A(?:Your context is an? |You have \d+ contexts )")


def root_prompt_from_message(content: str) -> str | None:
    """The user's root prompt inside the engine's first user message; None when the
    message is only the engine's description of the context (no root prompt was
    given). A message in another shape (another logger's) is the task as it stands."""
    found = _ROOT_PROMPT.match(content)
    if found:
        return found["q"]
    if content.startswith(_TASK_PREFIX):  # a shorter template (older logs): up to the end
        return content.removeprefix(_TASK_PREFIX).strip() or None
    if _DESCRIPTION.match(content):
        return None
    return content or None


def question_from_prompt(prompt: Any) -> str | None:
    """For logs without a ``run_started`` record: the root prompt the first user
    message states (never the system prompt or the engine's description of the
    context); None when the run had no root prompt."""
    if isinstance(prompt, str):
        return root_prompt_from_message(prompt)
    if not isinstance(prompt, list):
        return None
    for message in prompt:
        if isinstance(message, Mapping) and message.get("role") == "user":
            content = message.get("content")
            return root_prompt_from_message(content) if isinstance(content, str) else None
    return None


def _tokens(usage: Usage | None) -> int:
    return (usage.get("input", 0) + usage.get("output", 0)) if usage else 0


def timing(
    model_time: float | None,
    iteration_time: float | None,
    blocks: Sequence[tuple[float | None, Sequence[float | None]]],
) -> Timing:
    """Split an iteration's time. ``blocks`` holds each code block's time and its
    sub-calls' times. Sub-calls run inside the code (concurrently when batched), so
    each block's sub-call time is capped at the block's and code time excludes it."""
    code_total = sub = 0.0
    for block_time, call_times in blocks:
        calls = sum(t for t in call_times if t is not None)
        spent = block_time if block_time is not None else calls
        code_total += spent
        sub += min(calls, spent)
    estimated = False
    if model_time is None and iteration_time is not None:
        model_time, estimated = max(iteration_time - code_total, 0.0), True
    return {
        "model": model_time,
        "code": max(code_total - sub, 0.0),
        "sub": sub,
        "estimated": estimated,
    }


def tokens(own: Usage | None, calls: Sequence[Usage | None]) -> Tokens:
    return {
        "model": _tokens(own) if own else None,
        "sub": sum(_tokens(u) for u in calls),
        "derived": False,
    }


def fill_missing_tokens(total: Usage, per_iteration: Sequence[Tokens]) -> None:
    """When a run's total is known and exactly one iteration lacks the root model's own
    tokens (the final "answer now" call, whose reply the engine does not report), the
    difference is that call's: fill it in, marked ``derived``."""
    missing = [t for t in per_iteration if t["model"] is None]
    if len(missing) != 1:
        return
    known = sum((t["model"] or 0) + t["sub"] for t in per_iteration)
    rest = _tokens(total) - known
    if rest >= 0:
        missing[0]["model"], missing[0]["derived"] = rest, True


def describe_value(value: Any, contexts: Mapping[str, str]) -> Any:
    """A logged variable for display: a summary becomes ``type · length · sha256`` and
    its preview on the next line; a value from an older log is returned as it is.
    ``contexts`` maps a digest to the name of the context record it is."""
    if not (
        isinstance(value, Mapping)
        and isinstance(value.get("type"), str)
        and isinstance(value.get("preview"), str)
        and isinstance(value.get("sha256"), str)
    ):
        return value
    parts = [str(value["type"])]
    length = value.get("length")
    if isinstance(length, int) and not isinstance(length, bool):
        unit = "chars" if value["type"] == "str" else "items"
        parts.append(f"{length:,} {unit}")
    digest = str(value["sha256"])
    parts.append(f"sha256 {digest[:12]}")
    if digest in contexts:
        parts.append(f"= the run's {contexts[digest]}")
    preview = str(value["preview"]) + ("…" if value.get("clipped") else "")
    return " · ".join(parts) + "\n" + preview


def context_line(summary: Any) -> str | None:
    """A ``context`` record's summary as one line for a run header."""
    if not isinstance(summary, Mapping) or not isinstance(summary.get("type"), str):
        return None
    length = summary.get("length")
    size = (
        f"{length:,} {'chars' if summary['type'] == 'str' else 'items'}"
        if isinstance(length, int)
        else ""
    )
    digest = summary.get("sha256")
    bits = [str(summary["type"]), size, f"sha256 {digest[:12]}" if isinstance(digest, str) else ""]
    return " · ".join(b for b in bits if b)
