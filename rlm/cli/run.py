"""``rlm run``: answer one question over a context, with progress on stderr.

stdout carries only the answer (or ``--json``), so the command composes in pipelines.
``--schema FILE.json`` (a JSON Schema) makes the answer JSON that matches it: stdout is
that JSON, ``--json`` adds it as ``parsed``; an answer that never matches exits 1 with
the schema errors on stderr (``--json``: ``schema_errors`` in the payload).
Exit codes (``rlm.cli.failures``): 0 answered, 2 bad usage, input or setup (an empty
context or question without ``--allow-empty``, a missing extra or API key), 3 a limit
stopped the run, 4 the model provider failed, 1 any other rlmx error. Files a directory
or glob context leaves out (not UTF-8 text, unreadable) are named on stderr.

A run that started and then stopped without an answer (a limit, a provider failing
mid-run) still reports what it spent and where its log is on stderr, and prints its
best partial answer on stdout (``--json``: in the payload), before the error line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import IO, Any

from rlm.base.errors import ConfigurationError, RLMError, RLMLimitError, SchemaValidationError
from rlm.base.redact import redact_text
from rlm.cli.config import CLIUsageError, SkipLister, is_empty, load_context
from rlm.cli.factory import ModelSetup, SettingsFactory, environment_notice, model_setup
from rlm.cli.failures import (
    EXIT_LIMIT,
    EXIT_OK,
    EXIT_USAGE,
    describe,
    key_hint,
    public_name,
)
from rlm.cli.live import LiveDisplay, use_live
from rlm.cli.progress import RunTracker, print_summary
from rlm.cli.settings import Settings, add_model_options, resolve
from rlm.core.output_schema import OutputSchema

EXAMPLES = """examples:
  rlm run -c book.txt "Who finds the key?"
  rlm run -c 'notes/**/*.md' --json "List every open question"
  cat log.txt | rlm run -c - --max-budget 0.05 "Which error came first?"
  rlm run -c src/ --base-url http://127.0.0.1:8080/v1 --model qwen "Where is auth done?"
  rlm run -c invoice.txt --schema invoice.schema.json "Extract the invoice"
"""


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run",
        help="answer a question over a context",
        description="Answer QUESTION over a context with a Recursive Language Model.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("question", nargs="?", help="the question (root prompt)")
    p.add_argument(
        "--context",
        "-c",
        required=True,
        metavar="PATH|DIR|GLOB|-",
        help="a text file, a directory or glob (a list, one item per file, sorted by "
        "path; hidden files are left out, and files that are not UTF-8 text are named on "
        "stderr and left out), or - for stdin",
    )
    p.add_argument(
        "--allow-empty",
        action="store_true",
        help="run even with no question or an empty context (else exit 2: a paid model "
        "would be billed for nothing)",
    )
    add_model_options(p)
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument(
        "--schema",
        metavar="FILE.json",
        help="a JSON Schema the answer must match: the model repairs a refused answer, "
        "stdout is the answer's JSON (with --json, also as 'parsed')",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress or summary lines")
    cache = p.add_argument_group("sub-call cache (rlm cache stats|clear)")
    cache.add_argument(
        "--cache",
        action="store_true",
        help="answer repeated model calls from the cache file, and store new ones "
        "(calls at temperature 0 only, unless --cache-sampled)",
    )
    cache.add_argument(
        "--cache-path", metavar="PATH", help="the cache file (implies --cache; default: "
        "$RLM_CACHE_PATH, else the user's cache folder)"
    )  # fmt: skip
    cache.add_argument(
        "--cache-sampled",
        action="store_true",
        help="also cache calls made at a temperature above 0 (implies --cache)",
    )
    p.set_defaults(handler=run)


# -- the command ---------------------------------------------------------------------


def _fail(err: IO[str], message: str, code: int) -> int:
    print(f"rlm: error: {redact_text(message)}", file=err, flush=True)
    return code


def _check_input(args: argparse.Namespace, context: str | list[str]) -> None:
    """An empty question or context is an error unless ``--allow-empty``."""
    if args.allow_empty:
        return
    if is_empty(context):
        if args.context == "-":
            what = "stdin is empty (nothing was piped in)"
        else:
            what = "every file is empty" if isinstance(context, list) else "the file is empty"
        raise CLIUsageError(f"--context {args.context}: {what}; pass --allow-empty to run "
                            "anyway")  # fmt: skip


def _no_question(args: argparse.Namespace) -> bool:
    return not args.allow_empty and not (args.question or "").strip()


def run(
    args: argparse.Namespace,
    stdin: IO[str] | None = None,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    stdin, out, err = stdin or sys.stdin, out or sys.stdout, err or sys.stderr
    started = time.perf_counter()
    if _no_question(args):  # before reading stdin: nothing to wait for
        return _fail(err, 'no question: rlm run -c CONTEXT "QUESTION" (pass --allow-empty '
                     "to run without one)", EXIT_USAGE)  # fmt: skip
    skipped = SkipLister(err)
    try:
        settings = resolve(args)
        context = load_context(args.context, stdin, on_skip=skipped)
        skipped.finish()
        _check_input(args, context)
        schema = _load_schema(getattr(args, "schema", None))
        setup = model_setup(settings)
    except CLIUsageError as exc:
        return _fail(err, str(exc), EXIT_USAGE)
    if setup.notice:
        print(setup.notice, file=err, flush=True)
    if not args.quiet:
        print(environment_notice(settings.env, "this process"), file=err, flush=True)

    cache = _cache_spec(args)
    try:
        rlm = SettingsFactory(settings, setup, cache=cache)()
    except RLMError as exc:
        return _fail(err, *_failure(exc, settings, setup))
    if cache is not None and not cache["nondeterministic"] and not args.quiet:
        sampling = setup.backend_kwargs.get("sampling_args")
        if not (isinstance(sampling, dict) and sampling.get("temperature") == 0):
            print(
                "rlm: --cache stores only calls made at temperature 0, and this model "
                "samples: add --cache-sampled, or --backend-kwargs "
                """'{"sampling_args": {"temperature": 0}}'""",
                file=err,
                flush=True,
            )
    logger = rlm.logger
    tracker = (
        LiveDisplay(err, max_iterations=setup.max_iterations)
        if use_live(err, args.quiet)
        else RunTracker(err, args.quiet)
    )
    tracker.attach(rlm.events)
    try:
        with rlm, tracker:
            result = rlm.completion(context, root_prompt=args.question, output_schema=schema)
    except RLMError as exc:
        message, code = (
            (str(exc), EXIT_LIMIT)
            if isinstance(exc, RLMLimitError)
            else _failure(exc, settings, setup)
        )
        if not tracker.started:  # nothing ran: the error line says it all
            return _fail(err, message, code)
        print_summary(
            tracker, time.perf_counter() - started, getattr(logger, "log_file_path", None)
        )
        partial = getattr(exc, "partial_answer", None)
        partial = partial if isinstance(partial, str) and partial else None
        if args.json:
            _print_json(out, _stopped_payload(exc, partial, tracker))
        elif partial:
            print(partial, file=out, flush=True)
        return _fail(err, f"{message} (partial answer {'printed' if partial else 'empty'})", code)

    if args.json:
        _print_json(out, {**result.to_dict(), "iterations": tracker.iterations})
    else:
        print(result.response, file=out, flush=True)
    print_summary(tracker, time.perf_counter() - started, getattr(logger, "log_file_path", None))
    return EXIT_OK


def _cache_spec(args: argparse.Namespace) -> dict[str, Any] | None:
    """``RLM(cache=...)`` for ``--cache``, ``--cache-path`` and ``--cache-sampled``."""
    path = getattr(args, "cache_path", None)
    sampled = bool(getattr(args, "cache_sampled", False))
    if not (getattr(args, "cache", False) or path or sampled):
        return None
    return {"path": path, "nondeterministic": sampled}


def _load_schema(path: str | None) -> dict[str, Any] | None:
    """``--schema``'s JSON Schema, checked before any model is called."""
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as file:
            schema = json.load(file)
    except OSError as exc:
        raise CLIUsageError(f"--schema {path}: cannot read it ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise CLIUsageError(f"--schema {path}: not JSON ({exc})") from None
    try:
        OutputSchema.of(schema)
    except ConfigurationError as exc:
        raise CLIUsageError(f"--schema {path}: {exc}") from None
    assert isinstance(schema, dict)
    return schema


def _failure(exc: RLMError, settings: Settings, setup: ModelSetup) -> tuple[str, int]:
    hint = key_hint(settings, setup.backend, setup.backend_kwargs, os.environ)
    code, message = describe(exc, hint, settings.env)
    return message, code


def _stopped_payload(exc: RLMError, partial: str | None, tracker: RunTracker) -> dict[str, Any]:
    return {
        "error": redact_text(str(exc)),
        "error_type": public_name(exc),
        "partial_answer": partial,
        "iterations": tracker.iterations,
        "usage_summary": tracker.usage.to_dict() if tracker.usage else None,
        **(
            {"schema_errors": exc.errors, "invalid_answer": exc.answer}
            if isinstance(exc, SchemaValidationError)
            else {}
        ),
    }


def _print_json(out: IO[str], payload: dict[str, Any]) -> None:
    # default=str: contexts and metadata may hold values json cannot encode.
    print(json.dumps(payload, default=str, ensure_ascii=False), file=out, flush=True)
