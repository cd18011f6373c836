"""``rlm eval`` and ``rlm batch``: measure answer quality; answer many rows.

``rlm eval`` runs task families x context lengths x seeds (and dataset rows) with
several methods on one model, writes ``results.jsonl`` as items finish (rerun the
same command to resume), then ``report.json`` and ``report.html``. Without a model it
runs a small suite on the embedded SmolLM2-135M model and says its scores mean
nothing. ``rlm batch`` answers every row of a JSON Lines file. Both run locally or on
Ray (``--engine ray``). Settings: flags > ``--config`` TOML (``rlm.evals.config``) >
defaults. Exit codes: 0 done, 1 some items could not run (setup errors) or the
self-check failed, 2 bad usage or input, 130 interrupted (results so far are kept).

Run as ``rlm eval ...`` or ``python -m rlm.cli.eval_cmd eval ...``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import IO, Any

from rlm.cli.settings import json_object
from rlm.logger.verbose import plural

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EVAL_EXAMPLES = """examples:
  rlm eval                                   # tiny offline run on the embedded model
  rlm eval --self-check                      # the harness scores a reference solver 100 %
  rlm eval --backend openai --model gpt-5-mini --lengths 8k,32k,128k --seeds 3
  rlm eval --config paper.toml --out runs/paper --engine ray --address auto
  rlm eval --dataset longbench-v2=data.json,limit=20,where.domain=Code\\ Repository\\ Understanding
  rlm eval --report-only --out runs/paper     # rebuild the report from stored rows
"""
BATCH_EXAMPLES = """examples:
  rlm batch questions.jsonl --backend openai --model gpt-5-mini
  rlm batch questions.jsonl -o answers.jsonl --engine ray --address auto
  rlm batch questions.jsonl --model gpt-5 --overwrite   # answer again with another model
input rows: {"id": "q1", "context": "...", "question": "..."} (or "context_file": "doc.txt")

rerunning over the same output writes each id once: rows answered with the same
settings are skipped (failed ones too, unless --retry-failed); rows answered with other
settings (another method, model, limit) or from a changed input row stop the command
with exit 2 naming them, before anything runs: pass --overwrite to answer them again
and replace their rows, or -o to write a new file.
"""


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _seeds(text: str) -> list[int]:
    """``3`` -> [0, 1, 2]; ``0,5,7`` -> those; ``2-4`` -> [2, 3, 4]."""
    try:
        if "," not in text and "-" not in text:
            return list(range(int(text)))
        seeds: list[int] = []
        for part in _csv(text):
            low, dash, high = part.partition("-")
            seeds += list(range(int(low), int(high) + 1)) if dash else [int(part)]
        return seeds
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad seeds {text!r}: use N, A,B,C or A-B") from None


def _model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--config", metavar="FILE.toml", help="suite, model and methods (see docs/evals.md)"
    )
    g.add_argument("--backend", help="client backend (default: the embedded llama_cpp model)")
    g.add_argument("--model", help="model name (backend_kwargs.model_name)")
    g.add_argument("--base-url", help="endpoint of an OpenAI-compatible server")
    g.add_argument(
        "--backend-kwargs", metavar="JSON|@FILE", help="more backend_kwargs, as a JSON object"
    )
    g.add_argument(
        "--env",
        "--environment",
        dest="environment",
        help="REPL environment (default: sandbox where bubblewrap exists)",
    )
    g.add_argument("--max-iterations", type=int, help="RLM iterations per item")
    g.add_argument("--max-timeout", type=float, help="seconds per item (RLM max_timeout)")
    g.add_argument("--max-budget", type=float, help="USD per item (RLM max_budget)")


def _engine_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine")
    g.add_argument("--engine", choices=("local", "ray"), help="where items run (default: local)")
    g.add_argument("--address", help="Ray cluster address (default: start a local one)")
    g.add_argument("--concurrency", type=int, help="local engine: items at once (default 4)")
    g.add_argument("--num-cpus", type=int, help="ray engine: CPUs of a cluster it starts itself")
    g.add_argument(
        "--max-inflight-llm-calls",
        type=int,
        metavar="N",
        help="LM calls in flight across the whole run / cluster",
    )
    g.add_argument("--retry-failed", action="store_true", help="rerun items that failed before")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def add_eval_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "eval",
        help="measure answer quality (tasks x methods x seeds)",
        description="Run task families x context lengths x seeds with several methods on one "
        "model; resumable; writes report.json and report.html.",
        epilog=EVAL_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("suite")
    g.add_argument("--families", type=_csv, help="niah,oolong,pairs,codeqa (see --list)")
    g.add_argument("--lengths", type=_csv, help="context lengths in tokens: 8k,32k,128k,1M")
    g.add_argument("--seeds", type=_seeds, help="N (0..N-1), A,B,C or A-B")
    g.add_argument("--methods", type=_csv, help="base,rlm-d1,rlm-d2,rlms or [methods.*] names")
    g.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="NAME=PATH[,k=v]",
        help="a public dataset on disk (repeatable; see --list)",
    )
    g.add_argument("--haystack", metavar="FILE", help="S-NIAH prose (default: the sample book)")
    g.add_argument(
        "--rlms-python", metavar="PATH", help="an interpreter with rlms: adds method rlms"
    )
    g.add_argument("--title", help="the report's title")
    g.add_argument(
        "--out",
        help="results directory (default: ./rlm-eval; ./rlm-eval-selfcheck for --self-check, "
        "so a self-check never mixes its rows into a real run's report)",
    )
    g.add_argument(
        "--self-check",
        action="store_true",
        help="run a reference solver (scripted model); fail unless it scores 100 %%",
    )
    g.add_argument("--report-only", action="store_true", help="rebuild the report of --out")
    g.add_argument("--list", action="store_true", help="list families, datasets and methods")
    _model_options(p)
    _engine_options(p)
    p.set_defaults(handler=eval_command)


def add_batch_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "batch",
        help="answer many (context, question) rows from a JSONL file",
        description="Answer every row of INPUT.jsonl with one method; resumable.",
        epilog=BATCH_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", metavar="INPUT.jsonl")
    p.add_argument("-o", "--output", metavar="OUT.jsonl", help="default: INPUT.answers.jsonl")
    p.add_argument("--method", default="rlm-d1", help="base, rlm-d1, rlm-d2 or a [methods.*] name")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="answer again the rows the output holds from other settings or changed input "
        "rows, replacing them (without it such a rerun is an error)",
    )
    _model_options(p)
    _engine_options(p)
    p.set_defaults(handler=batch_command)


def add_parser(subparsers: Any) -> None:
    """Register ``eval`` and ``batch`` (the ``rlm.cli`` convention)."""
    add_eval_parser(subparsers)
    add_batch_parser(subparsers)


# -- shared setup --------------------------------------------------------------------


class _Usage(Exception):
    """A usage or input error: print it, exit 2."""


def _setup(args: argparse.Namespace) -> tuple[Any, Any]:
    """(config, model setup) from the flags and the ``--config`` file. Its notices
    (``setup.notices``) are the caller's to print, once every argument is checked."""
    from rlm.evals.config import EvalConfig, load_config
    from rlm.evals.setup import resolve_model

    config = load_config(args.config) if args.config else EvalConfig()
    extra: dict[str, Any] = {}
    if args.backend_kwargs:
        try:
            extra = json_object(args.backend_kwargs)
        except ValueError as exc:
            raise _Usage(f"--backend-kwargs: {exc}") from None
    setup = resolve_model(
        config,
        backend=args.backend,
        model=args.model,
        base_url=args.base_url,
        backend_kwargs=extra,
        environment=args.environment,
        limits={
            "max_iterations": args.max_iterations,
            "max_timeout": args.max_timeout,
            "max_budget": args.max_budget,
        },
        self_check=getattr(args, "self_check", False),
    )
    if setup.kind == "model":  # a missing extra or API key: one line now, not N failed items
        _check_client(setup.backend, setup.backend_kwargs)
    return config, setup


def _notices(setup: Any, err: IO[str], scored: Sequence[Any] = ()) -> None:
    """The setup's notices and, for ``scored`` methods, the honesty notes (the embedded
    model's scores mean nothing...): printed only once every argument is checked."""
    from rlm.evals.report import honesty_notes

    for notice in setup.notices:
        print(f"rlm: {notice}", file=err, flush=True)
    for note in honesty_notes([m.describe() for m in scored]):
        print(f"rlm: note: {note}", file=err, flush=True)


def _check_client(backend: str, backend_kwargs: dict[str, Any]) -> None:
    """Build the model's client once and close it (no model call); ``_Usage`` naming
    the fix when it cannot be built."""
    from rlm.base.errors import RLMError
    from rlm.cli.factory import build_client_once

    try:
        build_client_once(backend, backend_kwargs)
    except RLMError as exc:
        raise _Usage(str(exc)) from None


def _engine(args: argparse.Namespace, config: Any, setup: Any) -> tuple[str, dict[str, Any]]:
    from rlm.evals.setup import resolve_engine

    return resolve_engine(
        config,
        engine=args.engine,
        embedded=setup.kind == "embedded",
        address=args.address,
        concurrency=args.concurrency,
        num_cpus=args.num_cpus,
        max_inflight_llm_calls=args.max_inflight_llm_calls,
    )


def _fail(err: IO[str], message: str, code: int = EXIT_USAGE) -> int:
    from rlm.base.redact import redact_text

    print(f"rlm: error: {redact_text(message)}", file=err, flush=True)
    return code


# -- rlm eval ------------------------------------------------------------------------


def _list(out: IO[str]) -> int:
    from rlm.evals import DATASETS, FAMILIES
    from rlm.evals.methods import PRESETS

    print("task families (generated offline):", file=out)
    for fam in FAMILIES.values():
        print(f"  {fam.name:<16} {fam.description} [scorer: {fam.scorer}]", file=out)
    print("datasets (--dataset NAME=PATH; layouts in docs/evals.md):", file=out)
    for ds in DATASETS.values():
        print(f"  {ds.name:<16} {ds.description}", file=out)
    print(
        f"methods: {', '.join(PRESETS)}, rlms (with --rlms-python), or [methods.NAME] tables",
        file=out,
    )
    return EXIT_OK


def _summary(report: dict[str, Any], out: IO[str]) -> None:
    for m in report.get("methods", []):
        score = "no score" if m["mean"] is None else f"{m['mean']:.3f}"
        if m.get("std") is not None:
            score += f" ± {m['std']:.3f}"
        fails = ", ".join(f"{k}: {v}" for k, v in m["failures"].items()) or "none"
        cost = "unknown" if m["cost_total"] is None else f"${m['cost_total']:.4f}"
        print(
            f"{m['method']:<16} score {score:<16} n={m['n']:<4} cost {cost:<10} failures: {fails}",
            file=out,
        )


def eval_command(
    args: argparse.Namespace, out: IO[str] | None = None, err: IO[str] | None = None
) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    from rlm.evals import ConfigError, DatasetError, MethodError, SuiteError
    from rlm.evals.runner import write_report

    if args.list:
        return _list(out)
    if getattr(args, "out", "") is None:
        args.out = "rlm-eval-selfcheck" if args.self_check else "rlm-eval"
    if args.report_only:
        try:
            report = write_report(args.out)
        except (OSError, ValueError) as exc:
            return _fail(err, str(exc))
        _summary(report, out)
        print(f"report: {args.out}/report.html", file=out)
        return EXIT_OK
    try:
        run = _run_eval(args, err)
    except (_Usage, ConfigError, DatasetError, MethodError, SuiteError, ValueError, OSError) as exc:
        return _fail(err, str(exc))
    except KeyboardInterrupt:
        print(
            f"rlm: interrupted; finished items are kept in {args.out} (rerun to resume)",
            file=err,
            flush=True,
        )
        return EXIT_INTERRUPTED
    _summary(run.report, out)
    print(f"report: {run.report_html}", file=out, flush=True)
    if args.self_check:
        scores = [c for c in run.report["cells"] if c["n"]]
        perfect = all(c["mean"] == 1.0 and c["n_scored"] == c["n"] for c in scores)
        print(
            f"self-check {'passed' if perfect else 'FAILED'}: every item must score 1.0",
            file=out,
            flush=True,
        )
        if not perfect:
            return EXIT_INCOMPLETE
    if run.failed_config:
        return _fail(
            err,
            f"{plural(run.failed_config, 'item')} could not run (setup errors; see report)",
            EXIT_INCOMPLETE,
        )
    return EXIT_OK


def _run_eval(args: argparse.Namespace, err: IO[str]) -> Any:
    from rlm.evals import DatasetSource, Suite, build_methods, parse_length, run_eval

    config, setup = _setup(args)
    defaults = setup.suite_defaults
    datasets = [*config.datasets, *(DatasetSource.parse(d) for d in args.dataset)]
    families = args.families or config.families
    if families is None:
        families = [] if datasets else defaults["families"]
    lengths = [parse_length(x) for x in args.lengths or config.lengths or defaults["lengths"]]
    names = args.methods or config.methods
    tables = {} if setup.kind == "self_check" else config.method_tables
    if names is None and not tables:
        names = defaults["methods"]
    rlms_python = args.rlms_python or config.rlms_python
    methods = build_methods(
        names, setup.backend, setup.backend_kwargs, setup.rlm, tables, rlms_python
    )
    options = {k: dict(v) for k, v in config.family_options.items()}
    if args.haystack:
        options.setdefault("niah", {})["haystack"] = args.haystack
    seeds = args.seeds or config.seeds or defaults["seeds"]
    title = args.title or config.title
    suite = Suite(methods, families, lengths, seeds, datasets, options, title)
    suite.validate()  # families, lengths, seeds, haystack: before any note
    engine, engine_options = _engine(args, config, setup)
    _notices(setup, err, methods)
    return run_eval(suite, args.out, engine, engine_options, args.retry_failed, args.quiet, err)


# -- rlm batch -----------------------------------------------------------------------


def batch_command(
    args: argparse.Namespace, out: IO[str] | None = None, err: IO[str] | None = None
) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    from rlm.evals import ConfigError, MethodError, build_methods
    from rlm.evals.batch import BatchInputError, read_batch, run_batch_rows

    try:
        config, setup = _setup(args)
        (method,) = build_methods(
            [args.method],
            setup.backend,
            setup.backend_kwargs,
            setup.rlm,
            config.method_tables,
            config.rlms_python,
        )
        engine, options = _engine(args, config, setup)
        rows = read_batch(args.input)  # the input's errors before any notice
        _notices(setup, err)
        output = args.output or str(args.input).removesuffix(".jsonl") + ".answers.jsonl"
        run = run_batch_rows(
            rows, output, method, engine, options, args.retry_failed, args.quiet, err,
            overwrite=args.overwrite,
        )  # fmt: skip
    except (_Usage, ConfigError, MethodError, BatchInputError, ValueError, OSError) as exc:
        return _fail(err, str(exc))
    except KeyboardInterrupt:
        print("rlm: interrupted; answered rows are kept (rerun to resume)", file=err, flush=True)
        return EXIT_INTERRUPTED
    replaced = f" ({run.replaced} replacing older answers)" if run.replaced else ""
    print(
        f"{run.rows} rows: {run.ran} answered now{replaced}, {run.skipped} before, "
        f"{run.failed} failed -> {run.output}",
        file=out,
        flush=True,
    )
    return EXIT_INCOMPLETE if run.failed else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rlm.cli.eval_cmd {eval,batch} ...`` (the same as ``rlm eval``)."""
    parser = argparse.ArgumentParser(prog="rlm")
    add_parser(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
