"""Shared helpers for the worker-environment tests: which transports exist here, how
to build each one with test-sized limits, and a scripted LM route."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
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


def _docker_problem() -> str | None:
    """Why no real Docker engine can run containers here (None if one can)."""
    docker = shutil.which("docker")
    if docker is None:
        return "no Docker engine: the docker CLI is not installed"
    try:
        done = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"no Docker engine: `docker info` failed ({exc})"
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return f"no Docker engine: `docker info` failed ({lines[-1] if lines else 'no output'})"
    return None


DOCKER_ENGINE_PROBLEM = _docker_problem()
needs_docker_engine = pytest.mark.skipif(
    DOCKER_ENGINE_PROBLEM is not None, reason=str(DOCKER_ENGINE_PROBLEM)
)
_fake_docker: str | None = None


def fake_docker() -> str:
    """A ``docker`` command that runs the worker locally (``fake_docker.py``): it lets
    DockerREPL's own code run where no engine is. Not isolated."""
    global _fake_docker
    if _fake_docker is None:
        state = tempfile.mkdtemp(prefix="rlmx-fake-docker-")
        script = Path(state, "docker")
        source = Path(__file__).with_name("fake_docker.py")
        script.write_text(f'#!/bin/sh\nexec {sys.executable} {source} {state} "$@"\n')
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        _fake_docker = str(script)
    return _fake_docker


# Small limits keep the suite fast on a 2-core CI machine.
FAST = {"cell_timeout": 1.5, "interrupt_grace": 1.0, "start_timeout": 30.0}
SMALL_LIMITS = {"memory_mb": 1024, "max_processes": 32, "max_file_size_mb": 16, "tmp_size_mb": 32}

# (id, kind) of every transport the conformance suite runs on. "docker" uses the real
# engine when one runs, else the fake CLI (same DockerREPL code, no container).
TRANSPORTS = [
    pytest.param("local", id="local"),
    pytest.param("sandbox", id="sandbox", marks=needs_bwrap),
    pytest.param("process", id="sandbox-process"),
    pytest.param("docker", id="docker" if DOCKER_ENGINE_PROBLEM is None else "docker-fake"),
]
WORKER_TRANSPORTS = TRANSPORTS[1:]
# Run on a representative subset (tests/environments/test_remote_transports.py):
# the cloud providers through fakes of their SDKs, and a real Jupyter kernel.
PROVIDERS = ["modal", "e2b", "daytona", "prime"]


def make_env(kind: str, **kwargs: Any) -> BaseEnv:
    """An environment of ``kind``: "local", "sandbox", "process", "docker", "ipython",
    or a provider of ``PROVIDERS`` (its SDK faked, its processes local)."""
    if kind == "local":
        for key in (*FAST, *SMALL_LIMITS):
            kwargs.pop(key, None)
        return LocalREPL(**kwargs)
    options = {**FAST, **kwargs}
    if kind == "sandbox":
        return SandboxREPL(**{**SMALL_LIMITS, **options})
    if kind == "docker":
        from rlm.environments.docker_repl import DockerREPL

        if DOCKER_ENGINE_PROBLEM is None:
            return DockerREPL(**options)
        return DockerREPL(docker_command=fake_docker(), **options)
    if kind == "ipython":
        from rlm.environments.ipython_repl import IPythonREPL

        return IPythonREPL(**options)
    if kind in PROVIDERS:
        return make_provider_env(kind, **options)
    with pytest.warns(RuntimeWarning, match="isolation='process'"):
        return SandboxREPL(isolation="process", **options)


def make_provider_env(kind: str, **options: Any) -> BaseEnv:
    """A cloud-provider REPL whose SDK is faked (``fake_sdks``): its sandbox commands
    run as local subprocesses of this interpreter."""
    import importlib

    from fake_sdks import installed

    module = importlib.import_module(f"rlm.environments.{kind}_repl")
    cls = {"modal": "ModalREPL", "e2b": "E2BREPL", "daytona": "DaytonaREPL"}.get(kind, "PrimeREPL")
    with installed(kind):
        env: BaseEnv = getattr(module, cls)(python=sys.executable, **options)
    return env


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
