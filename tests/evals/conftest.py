"""Fixtures for the ``rlm.evals`` tests: method builders and the ``slow`` marker."""

from __future__ import annotations

import shutil
import sys
from typing import Any

import pytest

from rlm.evals import MethodSpec, preset

ORACLE = {"responder": "rlm.evals.oracle:respond"}
WRONG = {"responder": "rlm.evals.oracle:respond_wrong"}
# REPL code runs in the isolated sandbox where the machine has bubblewrap, as by default.
ENVIRONMENT = "sandbox" if sys.platform.startswith("linux") and shutil.which("bwrap") else "local"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: starts a real Ray cluster (runs in CI)")


def methods(responder: dict[str, Any], **rlm: Any) -> list[MethodSpec]:
    """base, rlm-d1 and rlm-d2 on the scripted backend with ``responder``."""
    defaults = {"environment": ENVIRONMENT, "max_iterations": 3, **rlm}
    return [
        preset(name, "scripted", dict(responder), defaults) for name in ("base", "rlm-d1", "rlm-d2")
    ]
