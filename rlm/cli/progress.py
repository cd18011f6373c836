"""Progress for ``rlm run`` and ``rlm chat`` in plain lines on stderr.

``RunTracker`` follows one run's events (subscribe it per run) and keeps the root run's
iteration count and usage for the summary and ``--json``; the rich live display in
``rlm.cli.live`` replaces its lines in a terminal but keeps the same counts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import IO, Any

from rlm.base.events import Event, EventBus
from rlm.base.redact import redact_text
from rlm.base.types import REPLResult, UsageSummary
from rlm.logger.verbose import format_duration, format_usage, one_line


class RunTracker:
    """Follows the event stream: prints progress lines (unless quiet) and keeps the
    root run's iteration count and usage for the summary and ``--json``."""

    def __init__(self, err: IO[str], quiet: bool = False) -> None:
        self.err = err
        self.quiet = quiet
        self.iterations = 0
        self.usage: UsageSummary | None = None
        self._root: str | None = None
        self._root_depth = 0
        self._max_iterations: int | None = None
        self.subcalls = 0  # sub-calls started anywhere in the tree
        self.spent: dict[str, Any] = {}  # the root's last budget_update (whole tree)
        self._lock = threading.Lock()  # batched sub-calls emit from several threads

    def attach(self, bus: EventBus) -> Callable[[], None]:
        """Follow ``bus``; returns the function that stops following it."""
        return bus.subscribe(self.on_event)

    def __enter__(self) -> RunTracker:  # the live display starts and stops here
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def say(self, text: str, level: int = 0) -> None:
        if self.quiet:
            return
        indent = f"  [depth {level}] " if level else ""
        with self._lock:
            print(f"rlm: {indent}{text}", file=self.err, flush=True)

    def on_event(self, event: Event) -> None:
        if self._root is None and event.parent_id is None:
            self._root, self._root_depth = event.run_id, event.depth
        is_root = event.run_id == self._root
        level = max(event.depth - self._root_depth, 0) if not is_root else 0
        data = event.data
        it = data.get("iteration")
        if event.type == "run_started" and is_root:
            self._max_iterations = getattr(data.get("metadata"), "max_iterations", None)
        elif event.type == "iteration_started":
            if is_root and self._max_iterations and (it or 0) > self._max_iterations:
                self.say("iterations used up: asking the model for its final answer")
                return
            if is_root:
                self.iterations = max(self.iterations, it or 0)
            self.say(f"iteration {it} started", level)
        elif event.type == "model_reply":
            reply = data.get("response") or ""
            took = format_duration(data.get("duration"))
            self.say(f"iteration {it}: model replied {len(reply):,} chars in {took}", level)
        elif event.type == "code_cell_finished":
            self.say(f"iteration {it}: {_cell_line(data)}", level)
        elif event.type in ("subcall_started", "subcall_finished"):
            if event.type == "subcall_started":
                self.subcalls += int(data.get("count") or 1)
            self.say(_subcall_line(event), level)
        elif event.type == "budget_update" and is_root:
            self.spent = dict(data)
        elif event.type == "final_answer":
            if is_root:
                self.iterations = data.get("iterations") or self.iterations
            source, n = data.get("source"), data.get("iterations")
            self.say(f"final answer from {source} after {n} iteration(s)", level)
        elif event.type == "run_finished" and is_root:
            self.usage = data.get("usage")


def _cell_line(data: dict[str, Any]) -> str:
    code = str(data.get("code") or "")
    first = one_line(code.strip().splitlines()[0] if code.strip() else "", 60)
    result = data.get("result")
    errors = result.stderr.strip() if isinstance(result, REPLResult) else ""
    status = f"error: {one_line(redact_text(errors.splitlines()[-1]), 100)}" if errors else "ok"
    took = format_duration(data.get("duration"))
    return f"cell {int(data.get('index') or 0) + 1} `{first}` {status} ({took})"


def _subcall_line(event: Event) -> str:
    data = event.data
    head = f"↳ {data.get('kind', 'llm')} sub-call → {data.get('model') or 'default model'}"
    if event.type == "subcall_started":
        count = data.get("count") or 1
        batch = f" ×{count}" if count > 1 else ""
        return f"{head}{batch}: {one_line(data.get('prompt_preview') or '', 60)}"
    extra = [format_duration(data.get("duration")), format_usage(data.get("usage"))]
    if data.get("error"):
        extra.append(f"error: {one_line(redact_text(str(data['error'])), 100)}")
    return f"{head} done " + ", ".join(e for e in extra if e)


def print_summary(tracker: RunTracker, wall: float, log_path: str | None) -> None:
    tracker.say(f"{tracker.iterations} iteration(s), wall time {format_duration(wall)}")
    usage = tracker.usage.model_usage_summaries if tracker.usage else {}
    for model, u in usage.items():
        cost = f", ${u.total_cost:.6f}" if u.total_cost is not None else ""
        tracker.say(
            f"usage {model}: {u.total_calls} call(s), {u.total_input_tokens:,} tokens in / "
            f"{u.total_output_tokens:,} out{cost}"
        )
    if log_path:
        tracker.say(f"trajectory: {log_path}")
