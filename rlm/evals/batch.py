"""``rlm batch``: answer many (context, question) rows with one method, resumably.

Input: JSON Lines, one row per question: ``question`` and either ``context`` (a
string or a list of strings) or ``context_file`` (a text file, relative to the input
file's directory); ``id`` names the row (default: its line number). Output: JSON
Lines, one row per answered input row, in the order they finish: ``id``, ``answer``,
``status`` (``ok``, ``partial`` or ``failed``), ``error_kind``/``error``, tokens,
calls, cost, wall time, and the ``key``/``fingerprint`` that let a rerun skip rows
already answered. The engines are the evaluation's (``local`` or ``ray``).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from rlm.evals.engines import Engine, make_engine
from rlm.evals.methods import MethodSpec
from rlm.evals.progress import Progress
from rlm.evals.records import WorkItem
from rlm.evals.store import ResultStore, is_done
from rlm.evals.suite import batch_spec

OUTPUT_FIELDS = (
    "id",
    "key",
    "fingerprint",
    "answer",
    "status",
    "error_kind",
    "error_type",
    "error",
    "input_tokens",
    "output_tokens",
    "calls",
    "cost",
    "wall_time",
    "engine",
    "worker",
)


class BatchInputError(ValueError):
    """The input file is missing or a row is not usable."""


@dataclass
class BatchRun:
    output: Path
    rows: int
    ran: int
    skipped: int
    failed: int
    facts: dict[str, Any]


def read_batch(path: str | Path) -> list[tuple[str, Any, str]]:
    """(id, context, question) of every input row."""
    source = Path(path).expanduser()
    if not source.is_file():
        raise BatchInputError(f"input file not found: {source}")
    rows: list[tuple[str, Any, str]] = []
    seen: set[str] = set()
    with source.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{source}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BatchInputError(f"{where}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("question"), str):
                raise BatchInputError(f"{where}: each row needs a string 'question'")
            if "context_file" in row:
                file = source.parent / str(row["context_file"])
                if not file.is_file():
                    raise BatchInputError(f"{where}: context_file not found: {file}")
                context: Any = file.read_text(encoding="utf-8")
            elif isinstance(row.get("context"), str) or (
                isinstance(row.get("context"), list)
                and all(isinstance(c, str) for c in row["context"])
            ):
                context = row["context"]
            else:
                raise BatchInputError(
                    f"{where}: each row needs 'context' (text or a list of texts) or 'context_file'"
                )
            row_id = str(row.get("id", number))
            if row_id in seen:
                raise BatchInputError(f"{where}: duplicate id {row_id!r}")
            seen.add(row_id)
            rows.append((row_id, context, row["question"]))
    if not rows:
        raise BatchInputError(f"{source}: no rows")
    return rows


def run_batch(
    input_path: str | Path,
    output_path: str | Path,
    method: MethodSpec,
    engine: str | Engine = "local",
    engine_options: dict[str, Any] | None = None,
    retry_failed: bool = False,
    quiet: bool = False,
    stream: IO[str] | None = None,
) -> BatchRun:
    """Answer every row of ``input_path`` into ``output_path`` (see the module docstring)."""
    rows = read_batch(input_path)
    items = {
        f"{method.name}|batch/{rid}|r0": (rid, WorkItem(method, batch_spec(rid, ctx, q), 0))
        for rid, ctx, q in rows
    }
    runner = make_engine(engine, **(engine_options or {})) if isinstance(engine, str) else engine
    out = Path(output_path)
    stream = stream or sys.stderr
    started = time.perf_counter()
    with ResultStore(out.parent if str(out.parent) else ".", out.name) as store:
        latest = store.latest()
        todo = [
            item
            for _, item in items.values()
            if not is_done(latest.get(item.key), item.fingerprint, retry_failed)
        ]
        progress = Progress(len(todo), stream, quiet=quiet, label="rows")
        failed = 0

        def on_result(row: dict[str, Any]) -> None:
            nonlocal failed
            slim = {k: row.get(k) for k in OUTPUT_FIELDS}
            slim["id"] = items[row["key"]][0]
            store.append(slim)
            failed += row.get("status") == "failed"
            progress.advance(row)

        if not quiet:
            print(
                f"rlm batch: {len(rows)} rows ({len(rows) - len(todo)} already answered) "
                f"on the {runner.name} engine -> {out}",
                file=stream,
                flush=True,
            )
        facts: dict[str, Any] = {"engine": runner.name}
        try:
            if todo:
                facts = runner.run(todo, on_result)
        finally:
            progress.close()
    facts["elapsed"] = round(time.perf_counter() - started, 3)
    return BatchRun(out, len(rows), progress.done, len(rows) - len(todo), failed, facts)
