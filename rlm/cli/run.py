"""``rlm run``: answer one question over a context, with progress on stderr.

stdout carries only the answer (or ``--json``), so the command composes in pipelines.
Exit codes: 0 answered, 2 bad usage or input, 3 a limit stopped the run (the partial
answer is printed), 4 the model provider failed, 1 any other rlmx error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import IO, Any

from rlm.cli.config import CLIUsageError, choose_backend, load_context
from rlm.core.events import Event, EventBus
from rlm.core.rlm import RLM
from rlm.core.types import REPLResult, UsageSummary
from rlm.logger import RLMLogger
from rlm.logger.verbose import format_duration, format_usage, one_line
from rlm.utils.exceptions import ClientError, ConfigurationError, RLMError, RLMLimitError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_LIMIT, EXIT_PROVIDER = 0, 1, 2, 3, 4


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run",
        help="answer a question over a context",
        description="Answer QUESTION over a context with a Recursive Language Model.",
    )
    p.add_argument("question", nargs="?", help="the question (root prompt)")
    p.add_argument(
        "--context",
        "-c",
        required=True,
        metavar="PATH|DIR|GLOB|-",
        help="a text file, a directory or glob (a list, one item per file, sorted by "
        "path), or - for stdin",
    )
    p.add_argument("--backend", help="default: from --base-url / API keys, else embedded")
    p.add_argument("--model", help="model name (or a .gguf path for llama_cpp)")
    p.add_argument("--base-url", help="an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the key")
    p.add_argument("--env", default="local", help="execution environment (default: local)")
    p.add_argument(
        "--max-iterations", type=int, help="default 30 (4 for the embedded smoke-test model)"
    )
    p.add_argument("--max-depth", type=int, default=1, help="recursion depth (default: 1)")
    p.add_argument("--max-budget", type=float, metavar="USD", help="stop above this spend")
    p.add_argument("--max-timeout", type=float, metavar="SECONDS", help="stop after this long")
    p.add_argument("--max-tokens", type=int, help="stop above this many tokens in + out")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--log-dir", help="write the trajectory as JSONL into this directory")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress or summary lines")
    p.set_defaults(handler=run)


# -- progress ------------------------------------------------------------------------


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
        self._lock = threading.Lock()  # batched sub-calls emit from several threads

    def attach(self, bus: EventBus) -> None:
        bus.subscribe(self.on_event)

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
            self.say(_subcall_line(event), level)
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
    status = f"error: {one_line(errors.splitlines()[-1], 100)}" if errors else "ok"
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
        extra.append(f"error: {one_line(data['error'], 100)}")
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


# -- the command ---------------------------------------------------------------------


def _fail(err: IO[str], message: str, code: int) -> int:
    print(f"rlm: error: {message}", file=err, flush=True)
    return code


def _build_rlm(args: argparse.Namespace, choice: Any, logger: RLMLogger | None) -> RLM:
    return RLM(
        backend=choice.backend,
        backend_kwargs=choice.backend_kwargs,
        environment=args.env,
        max_iterations=args.max_iterations or choice.max_iterations,
        max_depth=args.max_depth,
        max_budget=args.max_budget,
        max_timeout=args.max_timeout,
        max_tokens=args.max_tokens,
        logger=logger,
    )


def run(
    args: argparse.Namespace,
    stdin: IO[str] | None = None,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    stdin, out, err = stdin or sys.stdin, out or sys.stdout, err or sys.stderr
    started = time.perf_counter()
    try:
        context = load_context(args.context, stdin)
        choice = choose_backend(
            args.backend, args.model, args.base_url, args.api_key_env, os.environ
        )
    except CLIUsageError as exc:
        return _fail(err, str(exc), EXIT_USAGE)
    if choice.notice:
        print(choice.notice, file=err, flush=True)

    tracker = RunTracker(err, args.quiet)
    logger = RLMLogger(log_dir=args.log_dir) if args.log_dir else None
    try:
        rlm = _build_rlm(args, choice, logger)
    except ConfigurationError as exc:
        return _fail(err, str(exc), EXIT_USAGE)
    tracker.attach(rlm.events)
    try:
        with rlm:
            result = rlm.completion(context, root_prompt=args.question)
    except RLMLimitError as exc:
        print_summary(
            tracker, time.perf_counter() - started, getattr(logger, "log_file_path", None)
        )
        partial = exc.partial_answer
        if args.json:
            _print_json(out, _limit_payload(exc, tracker))
        elif partial:
            print(partial, file=out, flush=True)
        return _fail(err, f"{exc} (partial answer {'printed' if partial else 'empty'})", EXIT_LIMIT)
    except ConfigurationError as exc:
        return _fail(err, str(exc), EXIT_USAGE)
    except ClientError as exc:
        return _fail(err, str(exc), EXIT_PROVIDER)
    except RLMError as exc:
        return _fail(err, f"{type(exc).__name__}: {exc}", EXIT_ERROR)

    if args.json:
        _print_json(out, {**result.to_dict(), "iterations": tracker.iterations})
    else:
        print(result.response, file=out, flush=True)
    print_summary(tracker, time.perf_counter() - started, getattr(logger, "log_file_path", None))
    return EXIT_OK


def _limit_payload(exc: RLMLimitError, tracker: RunTracker) -> dict[str, Any]:
    return {
        "error": str(exc),
        "error_type": type(exc).__name__,
        "partial_answer": exc.partial_answer,
        "iterations": tracker.iterations,
        "usage_summary": tracker.usage.to_dict() if tracker.usage else None,
    }


def _print_json(out: IO[str], payload: dict[str, Any]) -> None:
    # default=str: contexts and metadata may hold values json cannot encode.
    print(json.dumps(payload, default=str, ensure_ascii=False), file=out, flush=True)
