"""The report of a run: result rows aggregated per method, task family and length.

``build_report(rows, ...)`` returns a JSON-able dict. Each cell (method x family x
context length) has ``n`` items, ``n_scored`` with a score, the mean score with its
sample standard deviation and 95 % bootstrap interval (over the scored items), the
per-seed means, mean tokens and calls, the summed cost (``None`` when no item reported
one; ``cost_known`` counts those that did), wall time, failures by kind, and how many direct (``base``) prompts had their context
cut to fit the model's window (``n_truncated``). Rows
without a score (failed runs, items without a gold answer) never enter a mean: a cell
with no scored item has ``mean`` ``None``, shown as "no score", never as 0.
"""

from __future__ import annotations

import datetime
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from rlm.evals.stats import bootstrap_ci, mean, stdev

EMBEDDED_NOTE = (
    "{Subject} {use} the embedded SmolLM2-135M model: it runs the whole loop offline "
    "but cannot do these tasks. {Their} scores show that the harness works, and mean nothing "
    "about answer quality."
)
SCRIPTED_NOTE = (
    "{Subject} {use} the scripted backend: {their} replies come from a script, so {their} "
    "scores measure the script (and the harness), not a model."
)


def _grammar(names: Sequence[str]) -> dict[str, str]:
    """The words of a note about ``names``: "Method a uses ... its" for one method,
    "Methods a, b and c use ... their" for several."""
    if len(names) == 1:
        return {"Subject": f"Method {names[0]}", "use": "uses", "Their": "Its", "their": "its"}
    listed = f"{', '.join(names[:-1])} and {names[-1]}"
    return {"Subject": f"Methods {listed}", "use": "use", "Their": "Their", "their": "their"}


def _numbers(rows: Iterable[dict[str, Any]], field: str) -> list[float]:
    return [float(r[field]) for r in rows if isinstance(r.get(field), int | float)]


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The statistics of one group of rows (see the module docstring)."""
    scores = _numbers(rows, "score")
    interval = bootstrap_ci(scores)
    by_seed: dict[int, list[float]] = defaultdict(list)
    for row in rows:
        if isinstance(row.get("score"), int | float):
            by_seed[int(row["seed"])].append(float(row["score"]))
    seed_means = {str(s): sum(v) / len(v) for s, v in sorted(by_seed.items())}
    costs = _numbers(rows, "cost")
    failures = Counter(str(r.get("error_kind")) for r in rows if r.get("status") != "ok")
    return {
        "n": len(rows),
        "n_scored": len(scores),
        "n_failed": sum(1 for r in rows if r.get("status") == "failed"),
        "mean": mean(scores),
        "std": stdev(scores),
        "ci95": list(interval) if interval else None,
        "seed_means": seed_means,
        "seed_std": stdev(list(seed_means.values())),
        "length_tokens": mean(_numbers(rows, "length_tokens")),
        "input_tokens": mean(_numbers(rows, "input_tokens")),
        "output_tokens": mean(_numbers(rows, "output_tokens")),
        "calls": mean(_numbers(rows, "calls")),
        "cost_total": sum(costs) if costs else None,
        "cost_mean": mean(costs),
        "cost_known": len(costs),
        "wall_mean": mean(_numbers(rows, "wall_time")),
        "wall_total": sum(_numbers(rows, "wall_time")),
        "failures": dict(sorted(failures.items())),
        "n_truncated": sum(
            1 for r in rows if ((r.get("notes") or {}).get("window") or {}).get("truncated")
        ),
    }


def honesty_notes(methods: Sequence[dict[str, Any]]) -> list[str]:
    """Warnings that belong on every report of these methods."""
    embedded = [
        m["name"]
        for m in methods
        if m.get("backend") == "llama_cpp" and not (m.get("backend_kwargs") or {}).get("model_path")
    ]
    scripted = [m["name"] for m in methods if m.get("backend") == "scripted"]
    notes = []
    if embedded:
        notes.append(EMBEDDED_NOTE.format(**_grammar(embedded)))
    if scripted:
        notes.append(SCRIPTED_NOTE.format(**_grammar(scripted)))
    return notes


def _length_order(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    sizes: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        sizes[str(row.get("length_label"))].append(float(row.get("length_tokens") or 0))
    return {label: sum(v) / len(v) for label, v in sizes.items()}


def build_report(
    rows: Sequence[dict[str, Any]],
    suite: dict[str, Any] | None = None,
    planned: int | None = None,
    run: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report of ``rows`` (the newest row per planned item)."""
    suite = suite or {}
    methods = list(suite.get("methods") or [])
    method_order = [m["name"] for m in methods] or sorted({str(r["method"]) for r in rows})
    for name in sorted({str(r["method"]) for r in rows} - set(method_order)):
        method_order.append(name)
    lengths = _length_order(rows)
    cells_by: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    families_by: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    methods_by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        method, family = str(row["method"]), str(row["family"])
        cells_by[(method, family, str(row.get("length_label")))].append(row)
        families_by[(method, family)].append(row)
        methods_by[method].append(row)

    def order(key: tuple[str, ...]) -> tuple[Any, ...]:
        first = method_order.index(key[0]) if key[0] in method_order else len(method_order)
        rest = [key[1]] + ([lengths.get(key[2], 0.0), key[2]] if len(key) > 2 else [])
        return (first, *rest)

    cells = [
        {"method": m, "family": f, "length_label": label, **summarize(group)}
        for (m, f, label), group in sorted(cells_by.items(), key=lambda kv: order(kv[0]))
    ]
    families = [
        {"method": m, "family": f, **summarize(group)}
        for (m, f), group in sorted(families_by.items(), key=lambda kv: order(kv[0]))
    ]
    per_method = [
        {"method": m, **summarize(methods_by[m])} for m in method_order if m in methods_by
    ]
    return {
        "title": suite.get("title") or "rlmx evaluation",
        "generated_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "notes": honesty_notes(methods),
        "suite": suite,
        "run": run or {},
        "items": {
            "planned": planned if planned is not None else len(rows),
            "with_result": len(rows),
            "missing": (planned - len(rows)) if planned is not None else 0,
        },
        "cells": cells,
        "families": families,
        "methods": per_method,
    }
