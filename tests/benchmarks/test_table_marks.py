"""The benchmark table never marks a memory peak PASS that it could not see: a
sandbox worker's memory is only counted with psutil in the rlmx interpreter."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from bench.table import build_rows


def _results(psutil: bool) -> dict[str, Any]:
    peak = {"median": 1.2, "unit": "x", "n": 1}
    scenario = {
        "status": "ok",
        "metrics": {"peak_over_ctx_x[10MB]": peak, "ttfi_ms[10MB]": {"median": 5.0}},
        "samples": {"10MB": [{"ok": True, "metrics": {"peak_over_ctx_x": 1.2}}]},
    }
    return {
        "interpreters": {"rlmx": {"psutil": psutil}},
        "packages": {"rlmx": {"scenarios": {"S4-sandbox": scenario}}},
    }


def _peak_row(psutil: bool) -> dict[str, Any]:
    rows = build_rows(_results(psutil))
    return next(r for r in rows if r["metric"].startswith("peak_over_ctx_x"))


def test_a_peak_without_psutil_is_not_judged() -> None:
    assert _peak_row(psutil=False)["mark"].startswith("NOT JUDGED: no psutil")
    assert _peak_row(psutil=True)["mark"] == "PASS"


def _row(results: dict[str, Any], scenario: str, metric: str) -> dict[str, Any]:
    rows = build_rows(results)
    return next(r for r in rows if r["scenario"] == scenario and r["metric"] == metric)


def _ttfi_results(ttfi_ms: float, copy_100mb_ms: float | None) -> dict[str, Any]:
    scenario = {
        "status": "ok",
        "metrics": {"ttfi_ms[500MB]": {"median": ttfi_ms, "unit": "ms"}},
        "samples": {"500MB": [{"ok": True, "metrics": {"ttfi_ms": ttfi_ms}}]},
    }
    packages: dict[str, Any] = {"rlmx": {"scenarios": {"S4-sandbox": scenario}}}
    if copy_100mb_ms is not None:
        c0 = {"metrics": {"str_copy_100MB_ms": {"median": copy_100mb_ms}}}
        packages["calibration"] = {"scenarios": {"C0": c0}}
    return {"interpreters": {"rlmx": {"psutil": True}}, "packages": packages}


def test_a_target_relative_to_the_floor_of_the_same_run() -> None:
    # one 500 MB str copy: 5 x the 100 MB one; the target is 1.1 x that
    ok = _row(_ttfi_results(540.0, 100.0), "S4-sandbox", "ttfi_ms[500MB]")
    assert ok["floor"] == 500.0 and ok["mark"] == "PASS"
    assert ok["target"] == "<= 1.1x floor = 550 ms" or ok["target"].startswith(
        "<= 1.1x floor = 550"
    )
    slow = _row(_ttfi_results(560.0, 100.0), "S4-sandbox", "ttfi_ms[500MB]")
    assert slow["mark"] == "MISS"
    unjudged = _row(_ttfi_results(540.0, None), "S4-sandbox", "ttfi_ms[500MB]")
    assert unjudged["mark"] == "NOT JUDGED: no floor in this run (C0 did not run)"


def test_a_floor_measured_beside_it_in_another_scenario() -> None:
    def d1(checkpoint_ms: float) -> dict[str, Any]:
        return {
            "status": "ok",
            "metrics": {"checkpoint_ms[static]": {"median": checkpoint_ms, "unit": "ms"}},
        }

    results = {
        "interpreters": {"rlmx": {"psutil": True}},
        "packages": {"rlmx": {"scenarios": {"D1": d1(1.5), "D1-sandbox": d1(2.5)}}},
    }
    row = _row(results, "D1-sandbox", "checkpoint_ms[static]")
    assert row["floor"] == 1.5 and "(local env, D1)" in row["floor_shown"]
    assert row["rlmx"] == 2.5 and row["mark"] == "PASS"  # <= 3 ms
    results["packages"]["rlmx"]["scenarios"]["D1-sandbox"] = d1(3.5)
    assert _row(results, "D1-sandbox", "checkpoint_ms[static]")["mark"] == "MISS"
