"""``import rlm`` loads ``.env`` from the working directory, as rlms does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("dotenv")

PROBE = "import os, rlm; print(os.environ.get('RLMX_DOTENV_PROBE', '<unset>'))"


def _run(cwd: Path, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("RLMX_DOTENV_PROBE", "RLM_NO_DOTENV")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=cwd, env={**clean, **env},
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return out.stdout.strip()


def test_dotenv_in_the_working_directory_is_loaded(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("RLMX_DOTENV_PROBE=from-dotenv\n")
    nested = tmp_path / "project" / "src"
    nested.mkdir(parents=True)
    assert _run(tmp_path) == "from-dotenv"
    assert _run(nested) == "from-dotenv"  # the nearest .env upwards


def test_the_environment_wins_and_it_can_be_turned_off(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("RLMX_DOTENV_PROBE=from-dotenv\n")
    assert _run(tmp_path, RLMX_DOTENV_PROBE="from-env") == "from-env"
    assert _run(tmp_path, RLM_NO_DOTENV="1") == "<unset>"
