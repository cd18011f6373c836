"""``rlm batch``: answer many (context, question) rows with one method, resumably.

Input: JSON Lines, one row per question: ``question`` and either ``context`` (a
string or a list of strings) or ``context_file`` (a text file, relative to the input
file's directory); ``id`` names the row (default: its line number). Output: JSON
Lines, one row per input id, in the order they first finished: ``id``, ``answer``,
``status`` (``ok``, ``partial`` or ``failed``), ``error_kind``/``error``, tokens,
calls, cost, wall time, ``method`` and ``settings`` (the method's fingerprint), and the
``key``/``fingerprint`` that let a rerun skip rows already answered. The engines are
the evaluation's (``local`` or ``ray``).

Rerunning over the same output, an id is never written twice:

- a row answered with the same method, settings and input row is skipped (a failed
  one too, unless ``retry_failed``; a setup failure always runs again);
- a row answered with other settings (another method, model, limit or option) or
  from an input row that has since changed is a conflict: ``BatchConflictError``
  names the ids and what changed, before anything runs and with the output left as
  it was, unless ``overwrite``, which answers those rows again;
- a row that runs again replaces its old row: rows are appended as they finish (a
  killed run loses at most the rows in flight), and the file is then rewritten with
  the newest row per id (also at the start, after a run that was killed).
"""

from __future__ import annotations

import json
import os
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
    "method",
    "settings",
)
CONFLICTS_NAMED = 5  # ids a conflict error names before "and N more"


class BatchInputError(ValueError):
    """The input file is missing or a row is not usable."""


class BatchConflictError(BatchInputError):
    """The output holds rows for these ids answered with other settings (or from input
    rows that changed since); ``overwrite=True`` (``--overwrite``) replaces them."""


@dataclass
class BatchRun:
    output: Path
    rows: int
    ran: int
    skipped: int
    failed: int
    facts: dict[str, Any]
    replaced: int = 0  # rows answered before with other settings, answered again


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


def _conflict(prev: dict[str, Any], item: WorkItem) -> str | None:
    """What differs between a stored row and ``item`` (None: nothing; it is the same)."""
    if prev.get("key") == item.key and prev.get("fingerprint") == item.fingerprint:
        return None
    before, now = prev.get("method"), item.method.name
    if before is None and isinstance(prev.get("key"), str):
        before = str(prev["key"]).split("|", 1)[0]
    if before != now:
        return f"made with method {before!r}, this run uses {now!r}"
    if prev.get("settings") == item.method.fingerprint:
        return "their input row changed since (context or question)"
    if prev.get("settings") is None:
        return "made with other settings, or their input row changed since"
    return "made with other settings (backend, model, limits or method options)"


def _conflict_message(out: Path, conflicts: list[tuple[str, str]]) -> str:
    named = ", ".join(repr(rid) for rid, _ in conflicts[:CONFLICTS_NAMED])
    more = len(conflicts) - CONFLICTS_NAMED
    named += f" and {more} more" if more > 0 else ""
    reasons = sorted({why for _, why in conflicts})
    return (
        f"{out} already holds answers for {len(conflicts)} of these rows ({named}) that "
        f"this run cannot reuse: {'; '.join(reasons)}. Pass --overwrite to answer them "
        "again and replace those rows, or -o NEW.jsonl to write elsewhere"
    )


def _compact(store: ResultStore) -> None:
    """Rewrite the output with the newest row per id, in the order ids first appear;
    nothing is written when no id repeats. Atomic: a temporary file replaces it."""
    rows = store.rows()
    newest: dict[str, dict[str, Any]] = {}
    for row in rows:
        newest[str(row.get("id"))] = row  # dicts keep the first position of a key
    if len(newest) == len(rows):
        return
    tmp = store.path.with_name(store.path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for row in newest.values():
            handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    store.replace_with(tmp)


def run_batch(
    input_path: str | Path,
    output_path: str | Path,
    method: MethodSpec,
    engine: str | Engine = "local",
    engine_options: dict[str, Any] | None = None,
    retry_failed: bool = False,
    quiet: bool = False,
    stream: IO[str] | None = None,
    overwrite: bool = False,
) -> BatchRun:
    """Answer every row of ``input_path`` into ``output_path`` (see the module
    docstring: rows done with the same settings are skipped; rows done with other
    settings raise ``BatchConflictError`` unless ``overwrite``)."""
    return run_batch_rows(
        read_batch(input_path), output_path, method, engine, engine_options, retry_failed,
        quiet, stream, overwrite=overwrite,
    )  # fmt: skip


def run_batch_rows(
    rows: list[tuple[str, Any, str]],
    output_path: str | Path,
    method: MethodSpec,
    engine: str | Engine = "local",
    engine_options: dict[str, Any] | None = None,
    retry_failed: bool = False,
    quiet: bool = False,
    stream: IO[str] | None = None,
    overwrite: bool = False,
) -> BatchRun:
    """``run_batch`` for rows already read (``read_batch``)."""
    items = {
        f"{method.name}|batch/{rid}|r0": (rid, WorkItem(method, batch_spec(rid, ctx, q), 0))
        for rid, ctx, q in rows
    }
    runner = make_engine(engine, **(engine_options or {})) if isinstance(engine, str) else engine
    out = Path(output_path)
    stream = stream or sys.stderr
    started = time.perf_counter()
    with ResultStore(out.parent if str(out.parent) else ".", out.name) as store:
        _compact(store)  # a run killed before it could rewrite the file
        by_id = {str(row.get("id")): row for row in store.rows()}
        todo: list[WorkItem] = []
        conflicts: list[tuple[str, str]] = []
        for rid, item in items.values():
            prev = by_id.get(rid)
            why = None if prev is None else _conflict(prev, item)
            if prev is None or (why is None and not is_done(prev, item.fingerprint, retry_failed)):
                todo.append(item)
            elif why is not None:
                conflicts.append((rid, why))
                if overwrite:
                    todo.append(item)
        if conflicts and not overwrite:
            raise BatchConflictError(_conflict_message(out, conflicts))
        progress = Progress(len(todo), stream, quiet=quiet, label="rows")
        failed = 0

        def on_result(row: dict[str, Any]) -> None:
            nonlocal failed
            rid, item = items[row["key"]]
            slim = {k: row.get(k) for k in OUTPUT_FIELDS}
            slim.update(id=rid, method=item.method.name, settings=item.method.fingerprint)
            store.append(slim)
            failed += row.get("status") == "failed"
            progress.advance(row)

        if not quiet:
            again = f", {len(conflicts)} to answer again (--overwrite)" if conflicts else ""
            print(
                f"rlm batch: {len(rows)} rows ({len(rows) - len(todo)} already answered"
                f"{again}) on the {runner.name} engine -> {out}",
                file=stream,
                flush=True,
            )
        facts: dict[str, Any] = {"engine": runner.name}
        try:
            if todo:
                facts = runner.run(todo, on_result)
        finally:
            progress.close()
            _compact(store)
    facts["elapsed"] = round(time.perf_counter() - started, 3)
    skipped = len(rows) - len(todo)
    return BatchRun(out, len(rows), progress.done, skipped, failed, facts, len(conflicts))
