"""Progress for ``rlm run`` and ``rlm chat`` in plain lines on stderr.

``RunTracker`` follows one run's events (subscribe it per run) and keeps the root run's
iteration count and usage for the summary and ``--json``; the rich live display in
``rlm.cli.live`` replaces its lines in a terminal but keeps the same counts.

Lines are in plain words: how the answer came (``answer submitted in iteration 2``, or
``no answer submitted after 4 iterations; the final-answer request replied: ...``), and
each retry of a failing model call as it happens (which call, the error, the wait).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import IO, Any

from rlm.base.events import Event, EventBus
from rlm.base.redact import redact_text
from rlm.base.types import REPLResult, UsageSummary
from rlm.logger.verbose import format_duration, format_usage, one_line, plural


class RunTracker:
    """Follows the event stream: prints progress lines (unless quiet) and keeps the
    root run's iteration count and usage for the summary and ``--json``.

    ``iterations`` counts the root's *completed* iterations (a run stopped by a limit
    before its first one ends has 0; the final "answer now" call is not one);
    ``current`` is the iteration in progress, for a live display."""

    def __init__(self, err: IO[str], quiet: bool = False) -> None:
        self.err = err
        self.quiet = quiet
        self.iterations = 0
        self.current = 0
        self.usage: UsageSummary | None = None
        self._root: str | None = None
        self._root_depth = 0
        self._max_iterations: int | None = None
        self.subcalls = 0  # sub-calls started anywhere in the tree
        self.spent: dict[str, Any] = {}  # the root's last budget_update (whole tree)
        self.started = False  # the root run started (its usage is then worth a summary)
        self._current: dict[str, int] = {}  # run id -> the iteration it is in
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
            self.started = True
            self._max_iterations = getattr(data.get("metadata"), "max_iterations", None)
        elif event.type == "iteration_started":
            self._current[event.run_id] = int(it or 0)
            if is_root and self._final_call(it, data):
                limit = self._max_iterations
                early = isinstance(it, int) and limit is not None and it <= limit
                used = "schema repairs" if early else "iterations"
                self.say(f"{used} used up: asking the model for its final answer")
                return
            if is_root:
                self.current = max(self.current, it or 0)
            self.say(f"iteration {it} started", level)
        elif event.type == "iteration_finished":
            if is_root and not self._final_call(it, data):
                self.iterations = max(self.iterations, int(it or 0))
        elif event.type == "model_reply":
            reply = data.get("response") or ""
            took = format_duration(data.get("duration"))
            final = is_root and self._final_call(it, data)
            what = "final-answer request" if final else f"iteration {it}"
            self.say(f"{what}: model replied {len(reply):,} chars in {took}", level)
        elif event.type == "call_retry":
            self.say(self._retry_line(event), level)
        elif event.type == "schema_repair":
            errors = data.get("errors") or ["?"]
            more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
            self.say(f"iteration {it}: answer refused by the output schema: {errors[0]}{more}; "
                     f"repair {data.get('repair')} of {data.get('repairs')}", level)  # fmt: skip
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
            self.say(_answer_line(data), level)
        elif event.type == "run_finished":
            self._current.pop(event.run_id, None)
            if is_root:
                self.usage = data.get("usage")

    def _final_call(self, iteration: Any, data: dict[str, Any] | None = None) -> bool:
        """The root's "answer now" call, made once its iterations (or its schema
        repairs) are used up; events of older logs lack ``final_call``."""
        if data is not None and data.get("final_call"):
            return True
        limit = self._max_iterations
        return limit is not None and isinstance(iteration, int) and iteration > limit

    def _retry_line(self, event: Event) -> str:
        """``iteration 7: model call failed (ProviderConnectionError: ...); retry 1 of 4
        in 0.50s``"""
        data = event.data
        purpose, model = data.get("purpose"), data.get("model") or "the model"
        it = self._current.get(event.run_id, 0)
        if purpose == "subcall":
            call = f"iteration {it}: sub-call to {model}" if it else f"sub-call to {model}"
        elif purpose == "final_answer":
            call = "final-answer request"
        elif purpose == "compaction":
            call = f"iteration {it}: history summary call"
        else:
            call = f"iteration {it}: model call"
        error = one_line(redact_text(str(data.get("error") or "")), 160)
        retry, retries = int(data.get("attempt") or 1), int(data.get("attempts") or 1) - 1
        wait = format_duration(data.get("wait"))
        return f"{call} failed ({error}); retry {retry} of {retries} in {wait}"


def _answer_line(data: dict[str, Any]) -> str:
    """How the run's answer came about, in plain words."""
    source, n = data.get("source"), data.get("iterations")
    if source == "default":
        reply = one_line(redact_text(str(data.get("answer") or "")), 100) or "(nothing)"
        return (
            f"no answer submitted after {plural(int(n or 0), 'iteration')}; "
            f"the final-answer request replied: {reply}"
        )
    how = {"FINAL": " with FINAL(...)", "FINAL_VAR": " with FINAL_VAR(...)"}.get(str(source), "")
    return f"answer submitted{how} in iteration {n}"


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
    """The run's completed iterations, wall time and usage per model, and where its
    log is."""
    done = plural(tracker.iterations, "iteration")
    tracker.say(f"{done}, wall time {format_duration(wall)}")
    usage = tracker.usage.model_usage_summaries if tracker.usage else {}
    for model, u in usage.items():
        cost = f", ${u.total_cost:.6f}" if u.total_cost is not None else ""
        cached = getattr(u, "cached_calls", 0) or 0
        hits = (
            f"; {cached:,} from the cache ({getattr(u, 'saved_input_tokens', 0):,} tokens "
            f"in / {getattr(u, 'saved_output_tokens', 0):,} out saved)"
            if cached
            else ""
        )
        tracker.say(
            f"usage {model}: {plural(u.total_calls, 'call')}, {u.total_input_tokens:,} tokens "
            f"in / {u.total_output_tokens:,} out{cost}{hits}"
        )
    if log_path:
        tracker.say(f"trajectory: {log_path}")
