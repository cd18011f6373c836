"""The benchmark command still runs (numbers are never judged here: that is for people)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HARNESS = Path(os.environ.get("RLM_BENCH_DIR", REPO.parent / "shared" / "bench"))


@pytest.mark.skipif(
    not (HARNESS / "rlm_bench.py").exists(),
    reason=f"the shared benchmark harness is not at {HARNESS} (set RLM_BENCH_DIR)",
)
def test_benchmark_smoke_run_produces_a_table(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "run.py"),
            "--smoke",
            "--out-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "S1" in out.stdout
    latest = tmp_path / "latest.json"
    assert latest.exists()
    data = json.loads(latest.read_text())
    assert data  # a combined result was written
