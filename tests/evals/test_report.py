"""The report: statistics per cell, honest gaps, and the HTML page's content."""

from __future__ import annotations

import re
from typing import Any

import pytest

from rlm.evals.html import render_html
from rlm.evals.report import build_report, honesty_notes
from rlm.evals.stats import bootstrap_ci, mean, stdev


def row(
    method: str, family: str, label: str, seed: int, score: float | None, **extra: Any
) -> dict[str, Any]:
    tokens = {"1K": 1024, "8K": 8192}[label]
    base = {
        "key": f"{method}|{family}/{label}/s{seed}|r{seed}",
        "method": method,
        "family": family,
        "length_label": label,
        "length_tokens": tokens,
        "seed": seed,
        "score": score,
        "status": "ok" if score is not None else "failed",
        "error_kind": None,
        "input_tokens": 100,
        "output_tokens": 10,
        "calls": 2,
        "cost": 0.01,
        "wall_time": 1.5,
    }
    base.update(extra)
    return base


def test_stats() -> None:
    assert mean([]) is None and stdev([1.0]) is None and bootstrap_ci([1.0]) is None
    assert stdev([0.0, 1.0]) == pytest.approx(0.7071, abs=1e-4)
    low, high = bootstrap_ci([0.0, 1.0, 1.0, 1.0])  # type: ignore[misc]
    assert 0.0 <= low <= 0.75 <= high <= 1.0
    assert bootstrap_ci([0.0, 1.0, 1.0]) == bootstrap_ci([0.0, 1.0, 1.0])  # seeded


def test_cells_failures_and_gaps() -> None:
    rows = [
        row("rlm", "niah", "1K", 0, 1.0),
        row("rlm", "niah", "1K", 1, 0.0),
        row("rlm", "niah", "8K", 0, None, error_kind="provider", cost=None, input_tokens=None),
        row("base", "niah", "8K", 0, 0.5, status="partial", error_kind="limit"),
    ]
    report = build_report(rows, {"methods": [{"name": "base"}, {"name": "rlm"}]}, planned=5)
    cells = {(c["method"], c["length_label"]): c for c in report["cells"]}
    ok = cells[("rlm", "1K")]
    assert (ok["n"], ok["n_scored"], ok["mean"], ok["seed_means"]) == (
        2,
        2,
        0.5,
        {"0": 1.0, "1": 0.0},
    )
    assert ok["std"] == pytest.approx(0.7071, abs=1e-4) and ok["cost_total"] == pytest.approx(0.02)
    gap = cells[("rlm", "8K")]
    assert gap["mean"] is None and gap["n_failed"] == 1 and gap["failures"] == {"provider": 1}
    assert gap["cost_total"] is None and gap["input_tokens"] is None
    partial = cells[("base", "8K")]
    assert (
        partial["mean"] == 0.5 and partial["failures"] == {"limit": 1} and partial["n_failed"] == 0
    )
    assert [m["method"] for m in report["methods"]] == ["base", "rlm"]
    assert report["items"] == {"planned": 5, "with_result": 4, "missing": 1}
    page = render_html(report)
    assert "no score" in page and "provider: 1" in page


def test_honesty_notes() -> None:
    notes = honesty_notes(
        [
            {"name": "tiny", "backend": "llama_cpp", "backend_kwargs": {}},
            {"name": "mine", "backend": "llama_cpp", "backend_kwargs": {"model_path": "/m.gguf"}},
            {"name": "s", "backend": "scripted"},
            {"name": "real", "backend": "openai"},
        ]
    )
    assert len(notes) == 2 and "tiny" in notes[0] and "mean nothing" in notes[0]
    assert "mine" not in notes[0] and "s" in notes[1]


def test_html_is_self_contained_and_escaped() -> None:
    evil = "<script>alert(1)</script>"
    rows = [row(evil, "niah", "1K", 0, 1.0), row(evil, "niah", "8K", 0, 0.0)]
    report = build_report(
        rows, {"title": evil, "methods": [{"name": evil, "kind": "rlm", "backend": evil}]}
    )
    page = render_html(report)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert not re.search(r"""(src|href)=["']?https?:""", page)
    assert "default-src 'none'" in page
    assert page.count('<svg class="plot"') == 2  # one family + cost vs score
    assert 'data-x="cost"' in page  # every item reported its cost


def test_cost_plot_falls_back_to_tokens() -> None:
    rows = [row("a", "niah", "1K", 0, 1.0, cost=None), row("b", "niah", "1K", 0, 0.0)]
    page = render_html(build_report(rows))
    assert 'data-x="tokens"' in page and "cost not reported" in page
