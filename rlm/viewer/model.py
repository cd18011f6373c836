"""The view model's shapes, and the conversion of one logged iteration into them.

The page script reads these as JSON; keep the keys short and stable. Model text stays
plain here: escaping is the page's job (it only ever assigns ``textContent``) and the
JSON embedding's (``page.py``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, TypedDict

from rlm.base.redact import redact_text
from rlm.viewer.story import (
    Timing,
    Tokens,
    describe_value,
    is_final_call,
    iteration_title,
    timing,
    tokens,
)
from rlm.viewer.usage import Usage, add_usage, parse_usage

# Text the page can show in full on demand (it truncates for display itself). The cap
# only keeps a pathological multi-megabyte print from making the page unusable.
FULL_TEXT_CAP = 500_000
# Inputs that are rarely read and repeat a lot: prompts and sub-call prompts.
SIDE_TEXT_CAP = 20_000
LOCAL_CAP = 600


class Message(TypedDict):
    role: str
    content: str


class CallView(TypedDict):
    model: str
    prompt: str
    response: str
    time: float | None
    usage: Usage | None
    error: str | None
    run: int | None  # index of the child run, when the sub-call was a logged RLM


class BlockView(TypedDict):
    code: str
    stdout: str
    stderr: str
    time: float | None
    final: str | None
    locals: dict[str, str]
    calls: list[CallView]


class IterationView(TypedDict):
    run: int
    n: int
    title: str  # what the iteration did (story.iteration_title)
    title_kind: str  # code | text | final | empty
    final_call: bool  # the "answer now" call made when the iterations ran out
    ts: str | None
    time: float | None
    timing: Timing
    tokens: Tokens
    prompt: list[Message]
    prompt_skipped: int  # leading messages already shown in the previous iteration
    response: str
    final: str | None
    blocks: list[BlockView]
    usage: Usage  # the reply's own usage (when logged) plus every sub-call's
    error: bool
    cached: bool  # the reply itself came from the call cache (RLM(cache=...))


class Outcome(TypedDict):
    """A run's closing record (``run_finished``), when the log has one."""

    outcome: str  # answer | max_iterations | limit | cancelled | error
    source: str | None
    limit: str | None
    iterations: int | None  # the final "answer now" call not counted
    final_call: bool
    time: float | None
    error: str | None


class RunView(TypedDict):
    id: int
    key: str | None  # the log's run_id, when it had one
    label: str
    parent: int | None
    via: list[int] | None  # [iteration index, block, call] of the spawning sub-call
    depth: int
    model: str | None
    metadata: dict[str, Any] | None
    prompt: str | None  # the sub-call prompt that started a child run
    question: str | None  # what the run was asked (root_prompt, or the task message)
    context: str | None  # its context record, as one line
    outcome: Outcome | None
    response: str | None
    error: str | None
    iterations: list[int]
    children: list[int]
    usage: Usage
    usage_reported: bool  # False: summed from what the log recorded


class ViewModel(TypedDict):
    title: str
    source: str | None
    roots: list[int]
    runs: list[RunView]
    iters: list[IterationView]
    summary: dict[str, Any]


def text(value: Any, cap: int = FULL_TEXT_CAP) -> str:
    """Any logged value as display text, with an explicit mark where it was cut."""
    if value is None:
        return ""
    out = value if isinstance(value, str) else json.dumps(value, default=str, indent=1)
    if len(out) <= cap:
        return out
    half = cap // 2
    hidden = len(out) - 2 * half
    return f"{out[:half]}\n… [{hidden:,} characters not included in this page] …\n{out[-half:]}"


def number(value: Any) -> float | None:
    """A finite number, else None (JSON has no NaN, and the page embeds strict JSON)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def plain(value: Any) -> Any:
    """Arbitrary logged structure as strict JSON data (no NaN, no foreign objects)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return str(value)


def _call(data: Any) -> CallView:
    data = data if isinstance(data, Mapping) else {}
    error = data.get("error")
    return {
        "model": text(data.get("root_model")) or "?",
        "prompt": text(data.get("prompt"), SIDE_TEXT_CAP),
        "response": text(data.get("response")),
        "time": number(data.get("execution_time")),
        "usage": parse_usage(data.get("usage_summary")),
        "error": redact_text(text(error)) if error else None,
        "run": None,
    }


def _block(data: Mapping[str, Any], contexts: Mapping[str, str]) -> BlockView:
    result = data.get("result")
    result = result if isinstance(result, Mapping) else {}
    names = result.get("locals")
    return {
        "code": text(data.get("code")),
        "stdout": text(result.get("stdout")),
        "stderr": text(result.get("stderr")),
        "time": number(result.get("execution_time")),
        "final": None if result.get("final_answer") is None else text(result["final_answer"]),
        "locals": {str(k): text(describe_value(v, contexts), LOCAL_CAP) for k, v in names.items()}
        if isinstance(names, Mapping)
        else {},
        "calls": [_call(c) for c in result.get("rlm_calls") or []],
    }


def messages(prompt: Any) -> list[Message]:
    """A logged prompt (message list, string or anything) as role/content pairs."""
    if isinstance(prompt, list):
        return [
            {"role": text(m.get("role")) or "?", "content": text(m.get("content"), SIDE_TEXT_CAP)}
            if isinstance(m, Mapping)
            else {"role": "?", "content": text(m, SIDE_TEXT_CAP)}
            for m in prompt
        ]
    if prompt is None:
        return []
    return [{"role": "prompt", "content": text(prompt, SIDE_TEXT_CAP)}]


def prompt_delta(prompt: Any, before: Any) -> tuple[list[Message], int]:
    """Only the messages added since ``before`` (the previous iteration's prompt): each
    prompt repeats the whole history, so embedding it every time grows the page
    quadratically. The prefix test compares the first and the last shared message,
    which is enough to notice a rewritten history (compaction) without O(n²) work."""
    if (
        isinstance(prompt, list)
        and isinstance(before, list)
        and before
        and len(prompt) >= len(before)
        and prompt[0] == before[0]
        and prompt[len(before) - 1] == before[-1]
    ):
        return messages(prompt[len(before) :]), len(before)
    return messages(prompt), 0


def iteration_view(
    record: Mapping[str, Any],
    run: int,
    position: int,
    before: Any,
    *,
    max_iterations: Any = None,
    contexts: Mapping[str, str] | None = None,
) -> IterationView:
    """One ``{"type": "iteration", ...}`` record (the ``position``-th of its run);
    unknown keys are ignored. ``contexts`` maps a context digest to its name."""
    raw_blocks = [b for b in record.get("code_blocks") or [] if isinstance(b, Mapping)]
    blocks = [_block(b, contexts or {}) for b in raw_blocks]
    prompt, skipped = prompt_delta(record.get("prompt"), before)
    n = number(record.get("iteration"))
    stamp = record.get("timestamp")
    own = parse_usage(record.get("usage") or record.get("usage_summary"))
    calls = [c for b in blocks for c in b["calls"]]
    final_call = is_final_call(record, position, max_iterations)
    response = text(record.get("response"))
    kind, title = iteration_title(response, [b["code"] for b in blocks], len(calls), final_call)
    spent = [(b["time"], [c["time"] for c in b["calls"]]) for b in blocks]
    return {
        "run": run,
        "n": int(n) if n is not None else position,
        "title": title,
        "title_kind": kind,
        "final_call": final_call,
        "ts": stamp if isinstance(stamp, str) else None,
        "time": number(record.get("iteration_time")),
        "timing": timing(
            number(record.get("model_time")), number(record.get("iteration_time")), spent
        ),
        "tokens": tokens(own, [c["usage"] for c in calls]),
        "prompt": prompt,
        "prompt_skipped": skipped,
        "response": response,
        "final": None if record.get("final_answer") is None else text(record["final_answer"]),
        "blocks": blocks,
        "usage": add_usage([own, *(c["usage"] for c in calls)]),
        "error": any(b["stderr"].strip() or any(c["error"] for c in b["calls"]) for b in blocks),
        "cached": bool(own and own.get("cached")),
    }
