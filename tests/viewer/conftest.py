"""Fixtures: the real run log (session-wide, it is read only) and a big synthetic log."""

from __future__ import annotations

from pathlib import Path

import pytest
from viewer_data import run_logged, write_big_log

from rlm.base.types import RLMChatCompletion


@pytest.fixture(scope="session")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RLMChatCompletion]:
    return run_logged(tmp_path_factory.mktemp("viewer-logs"))


@pytest.fixture(scope="session")
def real_log(real_run: tuple[Path, RLMChatCompletion]) -> Path:
    return real_run[0]


@pytest.fixture
def big_log(tmp_path: Path) -> Path:
    return write_big_log(tmp_path / "big.jsonl")
