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
