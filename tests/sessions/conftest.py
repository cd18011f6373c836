"""Fixtures of the session tests: a real PostgreSQL server (``postgres_support``) and
``store_spec``, which runs a test once per store: SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from postgres_support import pg_cluster, pg_url

__all__ = ["pg_cluster", "pg_url", "store_spec"]


@pytest.fixture(params=["sqlite", "postgres"])
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A spec ``open_store`` and ``RLM(session_store=...)`` take: a SQLite file's path,
    or the URL of a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "sessions.db")
    url: str = request.getfixturevalue("pg_url")
    return url
