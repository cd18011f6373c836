"""``run_eval``: plan a suite, skip what is done, run the rest, write the report.

Files in the output directory: ``results.jsonl`` (one row per finished item, written
as it finishes: see ``store``), ``suite.json`` (the suite, its methods and the planned
item keys), ``report.json`` and ``report.html``. Running the same suite again into the
same directory resumes it: items whose stored row matches (same key and fingerprint)
are not run again. Interrupted (Ctrl-C), the report of what finished is still written
before ``KeyboardInterrupt`` propagates.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rlm.evals.engines import Engine, make_engine
from rlm.evals.html import write_html
from rlm.evals.progress import Progress
from rlm.evals.report import build_report
from rlm.evals.store import ResultStore, is_done
from rlm.evals.suite import Suite

REPORT_JSON, REPORT_HTML = "report.json", "report.html"


@dataclass
class EvalRun:
    """What a run did and where it wrote it."""

    report: dict[str, Any]
    out_dir: Path
    planned: int
    ran: int
    skipped: int
    failed_config: int
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def report_html(self) -> Path:
        return self.out_dir / REPORT_HTML

    @property
    def report_json(self) -> Path:
        return self.out_dir / REPORT_JSON


def write_report(out_dir: str | Path, run: dict[str, Any] | None = None) -> dict[str, Any]:
    """(Re)build ``report.json`` and ``report.html`` from the stored rows of the suite
    last run in ``out_dir``."""
    store = ResultStore(out_dir)
    suite = store.read_suite()
    if suite is None:
        raise FileNotFoundError(f"{out_dir}: no suite.json (not an rlm eval output directory)")
    latest = store.latest()
    planned = [tuple(p) for p in suite.get("planned", [])]
    rows = [latest[k] for k, fp in planned if k in latest and latest[k].get("fingerprint") == fp]
    report = build_report(rows, suite, planned=len(planned), run=run or suite.get("last_run"))
    directory = Path(out_dir)
    (directory / REPORT_JSON).write_text(
        json.dumps(report, indent=2, ensure_ascii=False, default=str), encoding="utf-8"
    )
    write_html(report, directory / REPORT_HTML)
    return report


def run_eval(
    suite: Suite,
    out_dir: str | Path,
    engine: str | Engine = "local",
    engine_options: dict[str, Any] | None = None,
    retry_failed: bool = False,
    quiet: bool = False,
    stream: IO[str] | None = None,
) -> EvalRun:
    """Run ``suite`` into ``out_dir`` with ``engine`` (``"local"``, ``"ray"`` or an
    ``Engine``), resuming whatever an earlier run there finished."""
    items = suite.plan()
    runner = make_engine(engine, **(engine_options or {})) if isinstance(engine, str) else engine
    stream = stream or sys.stderr
    directory = Path(out_dir)
    started = time.perf_counter()
    with ResultStore(directory) as store:
        latest = store.latest()
        todo = [i for i in items if not is_done(latest.get(i.key), i.fingerprint, retry_failed)]
        description = suite.describe()
        description["planned"] = [[i.key, i.fingerprint] for i in items]
        store.write_suite(description)
        skipped = len(items) - len(todo)
        if not quiet:
            print(
                f"rlm eval: {len(items)} items ({skipped} already done, {len(todo)} to run) "
                f"on the {runner.name} engine -> {directory}",
                file=stream,
                flush=True,
            )
        progress = Progress(len(todo), stream, quiet=quiet)
        counts = {"ran": 0, "config": 0}

        def on_result(row: dict[str, Any]) -> None:
            store.append(row)
            counts["ran"] += 1
            counts["config"] += row.get("status") == "failed" and row.get("error_kind") == "config"
            progress.advance(row)

        facts: dict[str, Any] = {"engine": runner.name}
        try:
            if todo:
                facts = runner.run(todo, on_result)
        finally:
            progress.close()
            facts.update(
                ran=counts["ran"], skipped=skipped, elapsed=round(time.perf_counter() - started, 3)
            )
            description["last_run"] = facts
            store.write_suite(description)
            report = write_report(directory, facts)
    return EvalRun(report, directory, len(items), counts["ran"], skipped, counts["config"], facts)
