"""Shared by the load tests: the harness of ``benchmarks/serve_load.py`` (imported from
its folder, which is not a package) and the CI-sized options.

``RLM_LOAD_RLM_PATH=<dir>`` makes the replicas serve the ``rlm`` package in ``<dir>``
(e.g. ``git archive <commit> rlm | tar -x -C <dir>``) instead of this repo's: the same
tests then measure an older or newer version of the server."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"
SESSION_TESTS = REPO / "tests" / "sessions"  # postgres_support: a private PostgreSQL server
for folder in (BENCHMARKS, SESSION_TESTS):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import pytest  # noqa: E402
import serve_load  # noqa: E402
import serve_load_upstream  # noqa: E402
import serve_load_workload  # noqa: E402
from serve_load import LoadOptions  # noqa: E402

__all__ = ["LoadOptions", "ci_options", "postgres_database", "serve_load",
           "serve_load_upstream", "serve_load_workload", "summary"]  # fmt: skip


def ci_options(**overrides: Any) -> LoadOptions:
    """50 clients x 300 requests (half one-shot, half 5-turn conversations) against an
    upstream answering in 0-10 ms: no warm-up, no idle wait."""
    options: dict[str, Any] = {
        "clients": 50,
        "requests": 300,
        "upstream_delay": "0:0.01",
        "warmup": 0,
        "idle_wait": 0.0,
        "client_timeout": 60.0,
        "seed": 19,
        "rlm_path": os.environ.get("RLM_LOAD_RLM_PATH") or None,
        **overrides,
    }
    return LoadOptions(**options)


def summary(report: dict[str, Any]) -> str:
    """What an assertion message needs: the table row and what went wrong."""
    keys = ("sessions", "verdicts", "statuses", "details", "examples", "killed")
    lines = [serve_load.table([report])]
    lines += [f"{key}: {report.get(key)}" for key in keys]
    lines += [f"replica {r['index']} metrics: {r['metrics']}" for r in report["replicas"]]
    return "\n".join(lines)


def postgres_database() -> Iterator[str]:
    """A private PostgreSQL server (``tests/sessions/postgres_support.py``) with an empty
    database; yields its URL. Skips, saying how to install them, without PostgreSQL's
    server binaries or psycopg."""
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install 'rlmx[postgres]'")
    from postgres_support import INSTALL, Cluster, find_bindir

    bindir = find_bindir()
    if bindir is None:
        pytest.skip(INSTALL)
    cluster = Cluster(bindir)
    try:
        cluster.start()
        cluster.admin("CREATE DATABASE rlm_load")
        yield cluster.url("rlm_load")
    finally:
        cluster.destroy()
