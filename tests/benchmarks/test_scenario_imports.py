"""Every ``rlm`` name the benchmark scenarios import exists (they run in subprocesses, so
a moved module would otherwise show up only as an ERROR row in a benchmark table)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_benchmark_scenarios_import_only_existing_names() -> None:
    missing: list[str] = []
    checked = 0
    for path in sorted((REPO / "benchmarks" / "scenarios").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rlm"):
                module = importlib.import_module(node.module or "")
                for alias in node.names:
                    checked += 1
                    if not hasattr(module, alias.name):
                        try:
                            importlib.import_module(f"{node.module}.{alias.name}")
                        except ImportError:
                            missing.append(f"{path.name}: from {node.module} import {alias.name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("rlm"):
                        checked += 1
                        importlib.import_module(alias.name)
    assert checked > 0
    assert not missing, missing
