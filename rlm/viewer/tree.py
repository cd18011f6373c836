"""Group log records into the tree of runs the page shows.

A run's children come from two places:

- ``parent_id``: iteration lines stamped with ``run_id``/``parent_id``/``depth`` (a
  logger fed from the event bus, with several runs in one file);
- ``rlm_calls[].metadata``: a child RLM's own trajectory nested in the sub-call that
  spawned it (what ``RLM(logger=...)`` records).

A newer logger adds per-run records beside the iterations (``run_started``: the
question; ``context``: the context's summary; ``run_finished``: outcome and totals);
they attach to the run with the same ``run_id``, and a ``run_started`` line makes a
run even when it never got to an iteration. Lines without a ``run_id`` form one
anonymous run. A persistent session appends its
turns one after another with the iteration number restarting at 1, so each restart
starts a new top-level run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from rlm.base.redact import filter_sensitive_keys, redact_text
from rlm.viewer.model import (
    SIDE_TEXT_CAP,
    CallView,
    IterationView,
    Outcome,
    RunView,
    iteration_view,
    number,
    plain,
    text,
)
from rlm.viewer.story import context_line, fill_missing_tokens, question_from_prompt
from rlm.viewer.usage import add_usage, parse_usage

Record = dict[str, Any]


def _clean_meta(record: Record | None) -> dict[str, Any] | None:
    # The logger already drops secrets; a hand-made trajectory may not have.
    if record is None:
        return None
    cleaned = plain(filter_sensitive_keys({k: v for k, v in record.items() if k != "type"}))
    return cleaned if isinstance(cleaned, dict) else None


def _new_run(key: str | None, depth: int) -> RunView:
    return {
        "id": -1,
        "key": key,
        "label": "",
        "parent": None,
        "via": None,
        "depth": depth,
        "model": None,
        "metadata": None,
        "prompt": None,
        "question": None,
        "context": None,
        "outcome": None,
        "response": None,
        "error": None,
        "iterations": [],
        "children": [],
        "usage": {},
        "usage_reported": False,
    }


def _raw_calls(record: Mapping[str, Any]) -> Iterator[tuple[int, int, Any]]:
    """(block, call, raw call) in the order ``iteration_view`` builds them."""
    blocks = [b for b in record.get("code_blocks") or [] if isinstance(b, Mapping)]
    for b_index, block in enumerate(blocks):
        result = block.get("result")
        calls = result.get("rlm_calls") if isinstance(result, Mapping) else None
        for c_index, call in enumerate(calls or []):
            yield b_index, c_index, call


def nested_records(trajectory: Mapping[str, Any]) -> list[Record]:
    """``{"run_metadata", "iterations"}`` as log records."""
    records: list[Record] = []
    meta = trajectory.get("run_metadata")
    if isinstance(meta, Mapping):
        records.append({"type": "metadata", **meta})
    records += [
        {"type": "iteration", **i}
        for i in trajectory.get("iterations") or []
        if isinstance(i, Mapping)
    ]
    return records


class TreeBuilder:
    """Accumulates runs and iterations; ``add_log`` may recurse through sub-calls."""

    def __init__(self) -> None:
        self.runs: list[RunView] = []
        self.iters: list[IterationView] = []
        self._last_prompt: dict[int, Any] = {}
        self._linked: dict[int, list[int]] = {}  # parent run -> children found by parent_id
        self.contexts: dict[str, str] = {}  # context digest -> its name, from context records

    def _register(self, run: RunView, parent: int | None) -> RunView:
        run["id"] = len(self.runs)
        run["parent"] = parent
        self.runs.append(run)
        if parent is not None:
            self.runs[parent]["children"].append(run["id"])
        return run

    def add_log(self, records: list[Record], parent: int | None, depth: int) -> list[int]:
        """Add one log's runs under ``parent``; returns the ids of its top-level runs."""
        metadata = [r for r in records if r.get("type") == "metadata"]
        shared = _clean_meta(
            next((m for m in metadata if "run_id" not in m), metadata[0] if metadata else None)
        )
        groups: list[tuple[RunView, str | None, list[Record]]] = []
        by_key: dict[str, tuple[RunView, str | None, list[Record]]] = {}
        anonymous: list[Record] | None = None
        last_n = 0.0
        per_run = _run_records(records)
        for record in records:
            if record.get("type") == "context":
                summary = record.get("summary")
                if isinstance(summary, Mapping) and isinstance(summary.get("sha256"), str):
                    self.contexts.setdefault(
                        summary["sha256"], text(record.get("name")) or "context"
                    )
            kind = record.get("type")
            if kind not in ("iteration", "run_started"):
                continue
            key = record.get("run_id")
            if kind == "run_started" and not isinstance(key, str):
                continue
            if isinstance(key, str):
                if key not in by_key:
                    run = _new_run(key, int(number(record.get("depth")) or depth))
                    parent_key = record.get("parent_id")
                    # The file's one metadata line describes its root, not a child.
                    fallback = None if isinstance(parent_key, str) else shared
                    own = next((m for m in metadata if m.get("run_id") == key), None)
                    run["metadata"] = _clean_meta(own) if own is not None else fallback
                    by_key[key] = (run, parent_key if isinstance(parent_key, str) else None, [])
                    groups.append(by_key[key])
                if kind == "iteration":
                    by_key[key][2].append(record)
                continue
            n = number(record.get("iteration"))
            if anonymous is None or (n is not None and n <= last_n):
                anonymous = []
                run = _new_run(None, depth)
                run["metadata"] = shared
                groups.append((run, None, anonymous))
            last_n = n if n is not None else last_n + 1
            anonymous.append(record)
        if not groups and shared is not None:  # metadata only: the run made no iteration
            run = _new_run(None, depth)
            run["metadata"] = shared
            groups.append((run, None, []))

        # Register parents before children, whatever order the lines came in.
        roots: list[int] = []
        pending = list(groups)
        while pending:
            progressed = False
            for group in list(pending):
                run, parent_key, _ = group
                owner = by_key.get(parent_key) if parent_key else None
                if owner is not None and owner[0] is not run and owner[0]["id"] < 0:
                    continue  # its parent is not registered yet
                pending.remove(group)
                progressed = True
                if owner is not None and owner[0] is not run:
                    self._register(run, owner[0]["id"])
                    self._linked.setdefault(owner[0]["id"], []).append(run["id"])
                else:
                    self._register(run, parent)
                    roots.append(run["id"])
            if not progressed:  # a parent_id cycle: treat the rest as top-level
                for run, _, _ in pending:
                    roots.append(self._register(run, parent)["id"])
                pending = []
        anonymous_runs = [run for run, _, _ in groups if run["key"] is None]
        for run, _, lines in groups:
            key = run["key"] if run["key"] is not None else ""
            if key == "" and len(anonymous_runs) != 1:
                key = None  # several anonymous runs: the run records cannot be told apart
            _describe(run, per_run.get(key) if key is not None else None, lines)
            for record in lines:
                self._add_iteration(run, record)
        return roots

    def _add_iteration(self, run: RunView, record: Record) -> None:
        index = len(self.iters)
        view = iteration_view(
            record,
            run["id"],
            len(run["iterations"]) + 1,
            self._last_prompt.get(run["id"]),
            max_iterations=(run["metadata"] or {}).get("max_iterations"),
            contexts=self.contexts,
        )
        self._last_prompt[run["id"]] = record.get("prompt")
        self.iters.append(view)
        run["iterations"].append(index)
        for b_index, c_index, raw in _raw_calls(record):
            trajectory = raw.get("metadata") if isinstance(raw, Mapping) else None
            if isinstance(trajectory, Mapping) and "iterations" in trajectory:
                call = view["blocks"][b_index]["calls"][c_index]
                call["run"] = self._child(run, call, trajectory, [index, b_index, c_index])

    def _child(
        self, parent: RunView, call: CallView, trajectory: Mapping[str, Any], via: list[int]
    ) -> int:
        records = nested_records(trajectory)
        child_id = self._claim_linked(parent["id"], records)
        if child_id is None:
            roots = self.add_log(records, parent["id"], parent["depth"] + 1)
            child_id = (
                roots[0]
                if roots
                else self._register(_new_run(None, parent["depth"] + 1), parent["id"])["id"]
            )
        child = self.runs[child_id]
        child["via"], child["model"], child["error"] = via, call["model"], call["error"]
        child["prompt"], child["response"] = call["prompt"], call["response"]
        if call["usage"] is not None:
            child["usage"] = call["usage"]
            child["usage_reported"] = True
        return child_id

    def _claim_linked(self, parent: int, records: list[Record]) -> int | None:
        """A child logged both as ``parent_id`` lines and nested in its sub-call is
        shown once: match it by iteration count and first reply."""
        replies = [r.get("response") for r in records if r.get("type") == "iteration"]
        candidates = self._linked.get(parent) or []
        for run_id in candidates:
            mine = self.runs[run_id]["iterations"]
            if len(mine) == len(replies) and (
                not mine or self.iters[mine[0]]["response"] == (replies[0] or "")
            ):
                candidates.remove(run_id)
                return run_id
        return None

    def finish(self, root_usage: Any, extra: list[Record]) -> None:
        """Labels, models and usage totals, once every run is known. ``root_usage`` is
        the completion's own total, when the source was a completion."""
        reported = _reported_usage(extra)
        tops = [r for r in self.runs if r["parent"] is None]
        if len(tops) == 1 and root_usage is not None:
            reported.setdefault("", parse_usage(root_usage, with_models=True))
        for run in reversed(self.runs):  # children before parents
            meta = run["metadata"] or {}
            if run["model"] is None and isinstance(meta.get("root_model"), str):
                run["model"] = meta["root_model"]
            usage = reported.get(run["key"]) if run["key"] is not None else None
            if usage is None and run["parent"] is None and len(tops) == 1:
                usage = reported.get("")  # the completion's total, or an unkeyed record
            if usage is not None:
                run["usage"], run["usage_reported"] = usage, True
                if all(self.runs[c]["via"] is not None for c in run["children"]):
                    fill_missing_tokens(usage, [self.iters[i]["tokens"] for i in run["iterations"]])
            elif not run["usage_reported"]:
                # Sub-call usage already contains the children made through sub-calls;
                # children found only by parent_id are added on top.
                linked = [
                    self.runs[c]["usage"] for c in run["children"] if self.runs[c]["via"] is None
                ]
                run["usage"] = add_usage(
                    [*(self.iters[i]["usage"] for i in run["iterations"]), *linked]
                )
            run["label"] = _label(run)
        if len(tops) > 1:
            for turn, run in enumerate(tops, start=1):
                run["label"] = f"turn {turn}"


def _label(run: RunView) -> str:
    if run["parent"] is None:
        return "root run"
    if run["via"] is not None:
        return "child RLM"
    return f"run {run['key']}" if run["key"] else "child run"


def _reported_usage(extra: list[Record]) -> dict[str, Any]:
    """Run totals from lines a newer logger may add (``{"type": ..., "run_id": ...,
    "usage_summary": ...}``); keyed by run_id, "" for a line without one."""
    out: dict[str, Any] = {}
    for record in extra:
        usage = parse_usage(record.get("usage_summary"), with_models=True)
        if usage is not None:
            key = record.get("run_id")
            out[key if isinstance(key, str) else ""] = usage
    return out


def _run_records(records: list[Record]) -> dict[str, dict[str, Record]]:
    """``run_started``/``context``/``run_finished`` lines by run_id ("" for none); the
    first of each kind counts."""
    out: dict[str, dict[str, Record]] = {}
    for record in records:
        kind = record.get("type")
        if kind in ("run_started", "context", "run_finished"):
            key = record.get("run_id")
            out.setdefault(key if isinstance(key, str) else "", {}).setdefault(str(kind), record)
    return out


def _describe(run: RunView, found: dict[str, Record] | None, lines: list[Record]) -> None:
    """The run's question, context and outcome, from its run records; the question of
    a log without them is the first task message of its first prompt."""
    found = found or {}
    started, context, finished = (found.get(k) for k in ("run_started", "context", "run_finished"))
    summary = context.get("summary") if context else None
    run["context"] = context_line(summary)
    question = started.get("question") if started else None
    if question is None and started is not None:  # no separate question: the prompt is it
        preview = summary.get("preview") if isinstance(summary, Mapping) else None
        question = preview if isinstance(preview, str) else started.get("prompt_preview")
    if question is None and lines:
        question = question_from_prompt(lines[0].get("prompt"))
    run["question"] = text(question, SIDE_TEXT_CAP) if question is not None else None
    if finished is not None:
        run["outcome"] = _outcome(finished)
        if run["response"] is None and finished.get("response") is not None:
            run["response"] = text(finished.get("response"))


def _outcome(record: Record) -> Outcome:
    iterations = number(record.get("iterations"))
    error = record.get("error")
    return {
        "outcome": text(record.get("outcome")) or "unknown",
        "source": text(record.get("answer_source")) or None,
        "limit": text(record.get("limit")) or None,
        "iterations": int(iterations) if iterations is not None else None,
        "final_call": record.get("final_call") is True,
        "time": number(record.get("execution_time")),
        "error": redact_text(text(error)) if error else None,
    }
