"""Shared helpers for the worker-environment tests: which transports exist here, how
to build each one with test-sized limits, and a scripted LM route."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from rlm.clients.scripted import ScriptedLM
from rlm.core.budget import BudgetNode, Limits
from rlm.core.lm_handler import LMHandler, LMRoute
from rlm.environments import BaseEnv, LocalREPL
from rlm.environments.sandbox_repl import SandboxREPL


def _bwrap_problem() -> str | None:
    """Why no bubblewrap sandbox can run here (None if one can)."""
    bwrap = shutil.which("bwrap") or "/usr/bin/bwrap"
    if not os.access(bwrap, os.X_OK):
        return "bubblewrap (bwrap) is not installed: apt-get install bubblewrap"
    probe = [bwrap, "--unshare-all", "--unshare-user", "--ro-bind", "/", "/", "true"]
    done = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        return f"bubblewrap cannot create a sandbox here: {done.stderr.strip()}"
    return None


BWRAP_PROBLEM = _bwrap_problem()
needs_bwrap = pytest.mark.skipif(BWRAP_PROBLEM is not None, reason=str(BWRAP_PROBLEM))

# Small limits keep the suite fast on a 2-core CI machine.
FAST = {"cell_timeout": 1.5, "interrupt_grace": 1.0, "start_timeout": 30.0}
SMALL_LIMITS = {"memory_mb": 1024, "max_processes": 32, "max_file_size_mb": 16, "tmp_size_mb": 32}

# (id, kind) of every transport the conformance suite runs on.
TRANSPORTS = [
    pytest.param("local", id="local"),
    pytest.param("sandbox", id="sandbox", marks=needs_bwrap),
    pytest.param("process", id="sandbox-process"),
]
WORKER_TRANSPORTS = TRANSPORTS[1:]


def make_env(kind: str, **kwargs: Any) -> BaseEnv:
    """An environment of ``kind`` ("local", "sandbox" or "process")."""
    if kind == "local":
        for key in (*FAST, *SMALL_LIMITS):
            kwargs.pop(key, None)
        return LocalREPL(**kwargs)
    options = {**FAST, **kwargs}
    if kind == "sandbox":
        return SandboxREPL(**{**SMALL_LIMITS, **options})
    with pytest.warns(RuntimeWarning, match="isolation='process'"):
        return SandboxREPL(isolation="process", **options)


@contextmanager
def env_of(kind: str, **kwargs: Any) -> Iterator[Any]:
    env = make_env(kind, **kwargs)
    try:
        yield env
    finally:
        env.cleanup()


def echo_reply(prompt: Any) -> str:
    """The scripted model's answer: ``echo:<prompt>``, failing on "boom"."""
    if "boom" in str(prompt):
        raise RuntimeError("provider down")
    return f"echo:{prompt}"


@contextmanager
def scripted_route(limits: Limits | None = None) -> Iterator[tuple[LMRoute, BudgetNode]]:
    """A real LMHandler over a ScriptedLM, routed with a budget node as its sink."""
    handler = LMHandler(ScriptedLM(model_name="scripted", responder=echo_reply))
    node = BudgetNode(limits or Limits())
    try:
        yield handler.route(1, sink=node), node
    finally:
        handler.close()
