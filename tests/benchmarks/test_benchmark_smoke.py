"""The benchmark command still runs (numbers are never judged here: that is for people)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_benchmark_smoke_run_produces_a_table(tmp_path: Path) -> None:
    """From a plain clone: the vendored harness is found without any set-up."""
    env = {k: v for k, v in os.environ.items() if k != "RLM_BENCH_DIR"}
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
        env=env,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "S1" in out.stdout
    latest = tmp_path / "latest.json"
    assert latest.exists()
    data = json.loads(latest.read_text())
    assert data  # a combined result was written
