"""Human-readable console output of a run.

Uses ``rich`` when it is installed (an optional extra) and plain ``print`` otherwise.
The module-level ``truncate``/``one_line``/``format_*`` helpers hold no state, so a CLI
progress display can reuse exactly the same wording.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable
from typing import Any

from rlm.base.events import Event, EventBus
from rlm.base.redact import redact_text
from rlm.base.types import CodeBlock, REPLResult, RLMIteration, RLMMetadata, UsageSummary

# Tone -> colour (rich only). Tokyo-Night-ish, readable on dark and light terminals.
TONES = {
    "title": "bold #7AA2F7",
    "text": "#A9B1D6",
    "muted": "#565F89",
    "code": "#9ECE6A",
    "error": "#F7768E",
    "warning": "#E0AF68",
    "accent": "#BB9AF7",
}
LIMIT_TITLES = {  # rlms's names, and the error class a ``limit_exceeded`` event names
    "timeout": "Timeout Exceeded",
    "tokens": "Token Limit Exceeded",
    "errors": "Error Threshold Exceeded",
    "cancelled": "Execution Cancelled",
    "budget": "Budget Exceeded",
    "TimeoutExceededError": "Timeout Exceeded",
    "TokenLimitExceededError": "Token Limit Exceeded",
    "ErrorThresholdExceededError": "Error Threshold Exceeded",
    "CancellationError": "Execution Cancelled",
    "BudgetExceededError": "Budget Exceeded",
    "LLMCallLimitExceededError": "Model Call Limit Exceeded",
}
Part = tuple[str | None, str, str]  # (label, text, tone)


# -- formatting helpers (pure) ---------------------------------------------------


def truncate(text: Any, limit: int = 2000) -> str:
    """``text`` as a string of at most ``limit`` chars: head + "…" + tail."""
    s = text if isinstance(text, str) else str(text)
    if len(s) <= limit:
        return s
    if limit < 3:  # no room for head, marker and tail
        return s[: max(limit, 0)]
    keep = limit - 1
    head = keep * 2 // 3  # the start of a reply usually says more than its end
    return s[:head] + "…" + s[len(s) - (keep - head) :]


# What a terminal would act on rather than show: C0 and C1 controls (ESC starts colour,
# cursor, title and clipboard sequences; U+009B is a one-byte CSI), DEL, bidi overrides
# and isolates (they reorder what is shown) and the line/paragraph separators.
_UNPRINTABLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: Any) -> str:
    """``text`` safe to show in a terminal: every control character (newlines and tabs
    included), bidi override and line separator is written as a ``\\xNN``/``\\uNNNN``
    escape, so stored or model-written data cannot move the cursor, retitle the window,
    rewrite the clipboard or reorder the line it is on."""
    return _UNPRINTABLE.sub(_escape, text if isinstance(text, str) else str(text))


def one_line(text: Any, limit: int = 120) -> str:
    """Whitespace-collapsed, truncated single line (for previews and progress rows),
    with control characters escaped (``printable``)."""
    return truncate(printable(" ".join(str(text).split())), limit)


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 iteration``, ``2 iterations``, ``0 sub-calls``: never "iteration(s)"."""
    return f"{count} {word if count == 1 else (many or word + 's')}"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m {rest:02d}s"


def usage_totals(usage: UsageSummary | dict[str, Any] | None) -> tuple[int, int, float | None]:
    """(input tokens, output tokens, cost) from a UsageSummary or its ``to_dict()``."""
    if usage is None:
        return 0, 0, None
    if isinstance(usage, UsageSummary):
        return usage.total_input_tokens, usage.total_output_tokens, usage.total_cost
    models = (usage.get("model_usage_summaries") or {}).values()
    tokens_in = sum(m.get("total_input_tokens") or 0 for m in models)
    tokens_out = sum(m.get("total_output_tokens") or 0 for m in models)
    return tokens_in, tokens_out, usage.get("total_cost")


def format_usage(usage: UsageSummary | dict[str, Any] | None) -> str:
    tokens_in, tokens_out, cost = usage_totals(usage)
    text = f"{tokens_in:,} in / {tokens_out:,} out" if tokens_in or tokens_out else ""
    if cost is not None:
        text = f"{text} · ${cost:.6f}" if text else f"${cost:.6f}"
    return text


def limit_title(limit_type: str) -> str:
    return LIMIT_TITLES.get(limit_type, f"{limit_type.title()} Limit Exceeded")


_FENCE_LINE = re.compile(r"^\s*(`{3,}|~{3,})")


def reply_kind(text: Any) -> str:
    """``empty`` (nothing but whitespace), ``code`` (only fenced code blocks, an
    unclosed fence included, as a ```` ```repl ```` prefill leaves it) or ``text``."""
    s = text if isinstance(text, str) else str(text)
    if not s.strip():
        return "empty"
    fenced = in_fence = False
    for line in s.splitlines():
        if _FENCE_LINE.match(line):
            fenced, in_fence = True, not in_fence
        elif line.strip() and not in_fence:
            return "text"
    return "code" if fenced else "text"


def answer_title(answer: Any, source: str | None = None) -> tuple[str, str]:
    """``(title, tone)`` for a run's answer. A submitted answer (``FINAL``, the
    ``answer`` dict) is the final answer whatever it holds; the reply to the final
    "answer now" request (source ``default``) is one only when it is text: code or
    nothing is titled as what it is."""
    kind = reply_kind(answer)
    if source == "default" and kind == "empty":
        return "✗ No Answer: the final-answer request got an empty reply", "error"
    if source == "default" and kind == "code":
        return "✗ No Answer: the final-answer request got code, not an answer", "error"
    if kind == "empty":
        return "★ Final Answer (empty)", "warning"
    return "★ Final Answer", "warning"


# -- printer ------------------------------------------------------------------------


class VerbosePrinter:
    """Prints a run as it happens; with ``enabled=False`` nothing is ever printed
    (the two output primitives below are the only place that checks)."""

    max_response_chars = 3000
    max_code_chars = 2000
    max_output_chars = 1500
    max_preview_chars = 200

    def __init__(self, enabled: bool = True, console: Any = None) -> None:
        self.enabled = enabled
        self.console: Any = console
        if enabled and console is None:
            try:  # rich is an optional extra: fall back to plain text without it
                from rich.console import Console

                self.console = Console()
            except ImportError:
                self.console = None
        self._lock = threading.RLock()
        self._local = threading.local()  # per-thread title prefix for child runs
        self._iteration_count = 0

    @property
    def uses_rich(self) -> bool:
        return self.console is not None

    # -- output primitives ----------------------------------------------------------

    def _prefix(self) -> str:
        return getattr(self._local, "prefix", "")

    def _block(self, title: str, parts: list[Part], tone: str = "muted") -> None:
        """A titled box of labelled sections (a rich Panel, or indented plain text)."""
        if not self.enabled:
            return
        title = self._prefix() + title
        with self._lock:
            if self.console is None:
                lines = [f"[{title}]"]
                for label, text, _ in parts:
                    if label:
                        lines.append(f"  {label}:")
                    lines.extend(f"    {row}" for row in text.splitlines() or [""])
                print("\n".join(lines), file=sys.stdout, flush=True)
                return
            from rich.panel import Panel
            from rich.text import Text

            body = Text()
            for i, (label, text, part_tone) in enumerate(parts):
                if i:
                    body.append("\n")
                if label:
                    body.append(f"{label}:\n", style=TONES["muted"])
                body.append(text, style=TONES[part_tone])
            head = Text(title, style=TONES["title"])
            panel = Panel(body, title=head, title_align="left", border_style=TONES[tone])
            self.console.print(panel)

    def _line(self, text: str, tone: str = "muted", rule: bool = False) -> None:
        if not self.enabled:
            return
        text = self._prefix() + text
        with self._lock:
            if self.console is None:
                print(f"--- {text} ---" if rule else text, file=sys.stdout, flush=True)
                return
            from rich.rule import Rule
            from rich.text import Text

            if rule:
                self.console.print(Rule(Text(f" {text} ", style=TONES["title"]), style=TONES[tone]))
            else:
                self.console.print(Text(text, style=TONES[tone]))

    # -- rlms-compatible methods ----------------------------------------------------

    def print_metadata(self, metadata: RLMMetadata) -> None:
        model = metadata.backend_kwargs.get("model_name") or metadata.root_model
        rows = [
            f"backend: {metadata.backend}    model: {model}",
            f"environment: {metadata.environment_type}    max_iterations: "
            f"{metadata.max_iterations}    max_depth: {metadata.max_depth}",
        ]
        if metadata.other_backends:
            rows.append("sub-models: " + ", ".join(map(str, metadata.other_backends)))
        self._block("◆ RLM ━ Recursive Language Model", [(None, "\n".join(rows), "text")], "title")

    def print_iteration_start(self, iteration: int, final_call: bool = False) -> None:
        """The rule that opens an iteration; ``final_call`` for the "answer now" request
        made once the iterations are used up (it is not an iteration)."""
        self._iteration_count = iteration
        if final_call:
            self._line("Final-answer request (iterations used up)", rule=True)
        else:
            self._line(f"Iteration {iteration}", rule=True)

    def print_completion(self, response: Any, iteration_time: float | None = None) -> None:
        text = str(response)
        title = "◇ LLM Response"
        if iteration_time:
            title += f"  ({format_duration(iteration_time)})"
        footer = f"~{len(text.split())} words"
        parts: list[Part] = [(None, truncate(text, self.max_response_chars), "text")]
        self._block(title, [*parts, (None, footer, "muted")])

    def print_code_execution(self, code_block: CodeBlock) -> None:
        result = code_block.result
        title = "▸ Code Execution"
        if result.execution_time:
            title += f"  ({format_duration(result.execution_time)})"
        parts: list[Part] = [("Code", truncate(code_block.code, self.max_code_chars), "code")]
        if result.stdout.strip():
            parts.append(("Output", truncate(result.stdout, self.max_output_chars), "text"))
        if result.stderr.strip():
            parts.append(("Error", truncate(result.stderr, self.max_output_chars), "error"))
        if result.rlm_calls:
            parts.append((None, f"↳ {plural(len(result.rlm_calls), 'sub-call')}", "accent"))
        self._block(title, parts, "code")

    def print_subcall(
        self,
        model: str,
        prompt_preview: str,
        response_preview: str,
        execution_time: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """A finished sub-call; ``metadata`` (a child trajectory) marks a recursive one."""
        kind = "RLM" if metadata is not None else "LLM"
        title = f"↳ {kind} Sub-call: {model}"
        if execution_time:
            title += f"  ({format_duration(execution_time)})"
        parts: list[Part] = []
        if metadata is not None:
            parts.append((None, f"Iterations: {len(metadata.get('iterations') or [])}", "warning"))
        parts.append(("Prompt", one_line(prompt_preview, self.max_preview_chars), "text"))
        parts.append(("Response", one_line(response_preview, self.max_preview_chars), "text"))
        self._block(title, parts, "accent" if metadata is not None else "muted")

    def print_iteration(self, iteration: RLMIteration, iteration_num: int) -> None:
        self.print_iteration_start(iteration_num)
        self.print_completion(iteration.response, iteration.iteration_time)
        for block in iteration.code_blocks:
            self.print_code_execution(block)
            for call in block.result.rlm_calls:
                self.print_subcall(
                    call.root_model,
                    str(call.prompt or ""),
                    call.response or "",
                    call.execution_time,
                    call.metadata,
                )

    def print_budget_exceeded(self, spent: float, budget: float) -> None:
        self.print_limit_exceeded("budget", f"Spent: ${spent:.6f}\nBudget: ${budget:.6f}")

    def print_limit_exceeded(self, limit_type: str, details: str) -> None:
        self._block(f"⚠ {limit_title(limit_type)}", [(None, str(details), "error")], "error")

    def print_compaction_status(
        self, current_tokens: int, threshold_tokens: int, max_tokens: int
    ) -> None:
        pct = current_tokens / threshold_tokens * 100 if threshold_tokens else 0.0
        text = (
            f"Context: {current_tokens:,} / {threshold_tokens:,} tokens "
            f"({pct:.0f}% of compaction threshold; window {max_tokens:,})"
        )
        compacting = current_tokens >= threshold_tokens
        self._line(
            text + (" — compacting" if compacting else ""), "warning" if compacting else "muted"
        )

    def print_compaction(self) -> None:
        text = "Root context reached threshold. Summarizing and continuing."
        self._block("◐ Compaction", [(None, text, "text")])

    def print_final_answer(self, answer: Any, source: str | None = None) -> None:
        """The run's answer; ``source`` is the ``final_answer`` event's (``default``:
        the reply to the "answer now" request, titled by what it is, ``answer_title``)."""
        title, tone = answer_title(answer, source)
        body = truncate(answer, self.max_response_chars) if str(answer).strip() else "(nothing)"
        part_tone = "code" if reply_kind(answer) == "code" else "text"
        self._block(title, [(None, body, part_tone)], tone)

    def print_summary(
        self,
        total_iterations: int,
        total_time: float,
        usage_summary: UsageSummary | dict[str, Any] | None = None,
    ) -> None:
        rows = [f"Iterations: {total_iterations}", f"Total Time: {format_duration(total_time)}"]
        usage = format_usage(usage_summary)
        if usage:
            rows.append(f"Usage: {usage}")
        self._block("Summary", [(None, "\n".join(rows), "text")], "title")

    # -- extras ---------------------------------------------------------------------

    def print_subcall_progress(self, event: Event) -> None:
        """One line per ``subcall_started``/``subcall_finished`` event."""
        data = event.data
        head = f"↳ {data.get('kind', 'llm')} sub-call → {data.get('model') or '?'}"
        if event.type == "subcall_started":
            count = data.get("count") or 1
            batch = f" ×{count}" if count > 1 else ""
            self._line(f"{head}{batch}: {one_line(data.get('prompt_preview') or '', 80)}")
            return
        extra = [format_duration(data.get("duration")), format_usage(data.get("usage"))]
        if data.get("error"):
            extra.append(f"error: {one_line(redact_text(str(data['error'])), 120)}")
        self._line(
            f"{head} done  " + "  ".join(e for e in extra if e),
            "error" if data.get("error") else "muted",
        )

    def attach(self, bus: EventBus, *, include_children: bool = False) -> Callable[[], None]:
        """Print events from ``bus``. Child runs (deeper than the first run seen) are
        skipped unless ``include_children``, then shown with a depth prefix."""
        root_depth: list[int] = []
        iterations: dict[str, int] = {}  # run id -> its completed iterations
        limits: dict[str, int] = {}  # run id -> its max_iterations

        def on_event(event: Event) -> None:
            if not root_depth or event.depth < root_depth[0]:
                root_depth[:] = [event.depth]
            level = event.depth - root_depth[0]
            if level and not include_children:
                return
            self._local.prefix = f"[depth {event.depth}] " if level else ""
            try:
                self._dispatch(event, iterations, limits)
            finally:
                self._local.prefix = ""

        return bus.subscribe(on_event)

    def _dispatch(self, event: Event, iterations: dict[str, int], limits: dict[str, int]) -> None:
        data, kind = event.data, event.type
        if kind == "run_started" and isinstance(data.get("metadata"), RLMMetadata):
            limits[event.run_id] = data["metadata"].max_iterations
            self.print_metadata(data["metadata"])
        elif kind in ("iteration_started", "iteration_finished"):
            number = data.get("iteration", 0)
            limit = limits.get(event.run_id)
            final_call = bool(data.get("final_call")) or (
                isinstance(number, int) and limit is not None and number > limit
            )
            if kind == "iteration_started":
                self.print_iteration_start(number, final_call)
            elif not final_call and isinstance(number, int):  # completed ones count
                iterations[event.run_id] = max(iterations.get(event.run_id, 0), number)
        elif kind == "model_reply":
            self.print_completion(data.get("response", ""), data.get("duration"))
        elif kind == "code_cell_finished" and isinstance(data.get("result"), REPLResult):
            self.print_code_execution(CodeBlock(data.get("code", ""), data["result"]))
        elif kind in ("subcall_started", "subcall_finished"):
            self.print_subcall_progress(event)
        elif kind == "limit_exceeded":
            self.print_limit_exceeded(str(data.get("kind", "limit")), str(data.get("message", "")))
        elif kind == "final_answer":
            iterations[event.run_id] = data.get("iterations") or iterations.get(event.run_id, 0)
            source = data.get("source")
            self.print_final_answer(
                data.get("answer", ""), source if isinstance(source, str) else None
            )
        elif kind == "run_finished":
            if data.get("error"):
                self._line(
                    f"✗ Run failed: {one_line(redact_text(str(data['error'])), 300)}", "error"
                )
            total = iterations.pop(event.run_id, 0)
            limits.pop(event.run_id, None)
            self.print_summary(total, data.get("execution_time") or 0.0, data.get("usage"))
