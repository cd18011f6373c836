"""Snapshots carry who wrote them: a sandbox's variables never run in the host.

A durable session whose turns ran in an isolated worker (``sandbox``) or in an IPython
kernel can be resumed with ``environment="local"``. Restoring its variables there would
re-run its recorded ``class`` bodies and unpickle its values in the host process, all
written by code the host does not trust. The model code below plants both: a class
whose body writes a marker file, and an object whose ``__reduce__`` writes another,
each only when it runs in the host process (``os.getpid()`` of this test). Resumed
into ``local`` neither may run, and the model is told its variables are not back;
with ``trust_snapshots=True`` they are restored; into a sandbox they always are.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from session_support import Program, durable_rlm, repl, submit

from rlm.environments.host.state import WorkerState

PROBE = """present = []
for name in ['Planted', 'bomb', 'nums']:
    try:
        eval(name)
        present.append(name)
    except NameError:
        pass
answer['content'] = ','.join(present) + '|' + context_0
answer['ready'] = True"""


def _plant(tmp_path: Path) -> tuple[str, Path, Path]:
    """Cell code planting a class body and a ``__reduce__`` that write markers when run
    in this (the host) process; and the two marker paths."""
    class_marker, reduce_marker = tmp_path / "class_body_ran", tmp_path / "reduce_ran"
    pid = os.getpid()
    payload = (
        f"import os, pathlib\nif os.getpid() == {pid}: "
        f"pathlib.Path({str(reduce_marker)!r}).write_text('reduce ran')"
    )
    code = (
        "import os, pathlib\n"
        "nums = [1, 2, 3]\n"
        "class Planted:\n"
        f"    if os.getpid() == {pid}:\n"
        f"        pathlib.Path({str(class_marker)!r}).write_text('class body ran')\n"
        "class Bomb:\n"
        "    def __reduce__(self):\n"
        f"        return (exec, ({payload!r},))\n"
        "bomb = Bomb()\n"
    )
    return code, class_marker, reduce_marker


def _program(code: str) -> Program:
    return Program({"plant": [repl(code), submit("'planted'")], "probe": [repl(PROBE)]})


def _notes(program: Program) -> list[str]:
    return [
        str(m["content"])
        for prompt in program.prompts
        for m in prompt
        if m["role"] == "user" and "resumed from storage" in str(m["content"])
    ]


def _sandbox_problem() -> str | None:
    """Why the sandbox tests cannot run here: only a missing bubblewrap. Where bwrap is
    installed, a sandbox that does not start is a failure, never a skip."""
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed (apt-get install bubblewrap)"
    return None


@pytest.fixture
def sandbox_store(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A store whose session ``s`` has one turn, run in the sandbox, that planted both."""
    problem = _sandbox_problem()
    if problem:
        pytest.skip(problem)
    code, class_marker, reduce_marker = _plant(tmp_path)
    store = tmp_path / "s.db"
    rlm = durable_rlm(_program(code), store, "s", environment="sandbox")
    try:
        assert rlm.completion("ctx0", root_prompt="plant").response == "planted"
    finally:
        rlm.close()
    assert not class_marker.exists() and not reduce_marker.exists()  # they ran sandboxed
    return store, class_marker, reduce_marker


def _resume(store: Path, code: str = "", **kw: Any) -> tuple[str | None, Program]:
    program = _program(code)
    rlm = durable_rlm(program, store, "s", **kw)
    try:
        return rlm.completion("ctx1", root_prompt="probe").response, program
    finally:
        rlm.close()


def test_sandbox_session_resumed_locally_runs_nothing_it_wrote(
    sandbox_store: tuple[Path, Path, Path],
) -> None:
    store, class_marker, reduce_marker = sandbox_store
    with pytest.warns(RuntimeWarning, match="trust_snapshots=True"):
        response, program = _resume(store, environment="local")
    assert not class_marker.exists(), "a sandbox-written class body ran in the host"
    assert not reduce_marker.exists(), "a sandbox-written pickle was loaded in the host"
    assert response == "|ctx0"  # variables refused; the contexts are back
    (note,) = _notes(program)
    for name in ("Planted", "bomb", "nums"):
        assert name in note
    assert "isolated" in note and "not loaded" in note


def test_trust_snapshots_restores_a_sandbox_session_locally(
    sandbox_store: tuple[Path, Path, Path],
) -> None:
    store, class_marker, reduce_marker = sandbox_store
    response, program = _resume(
        store, environment="local", environment_kwargs={"trust_snapshots": True}
    )
    assert response == "Planted,bomb,nums|ctx0"  # bomb unpickled to exec()'s None
    assert class_marker.exists() and reduce_marker.exists()  # trusted: it did run here
    assert _notes(program) == []


def test_sandbox_session_resumed_in_a_sandbox_restores_everything(
    sandbox_store: tuple[Path, Path, Path],
) -> None:
    store, class_marker, reduce_marker = sandbox_store
    response, program = _resume(store, environment="sandbox")
    assert response == "Planted,bomb,nums|ctx0"
    assert not class_marker.exists() and not reduce_marker.exists()  # unpickled sandboxed
    assert _notes(program) == []


def test_a_local_session_still_resumes_locally(tmp_path: Path) -> None:
    code = "nums = [1, 2, 3]\nclass Planted:\n    pass\nbomb = Planted()"
    store = tmp_path / "s.db"
    rlm = durable_rlm(_program(code), store, "s")
    try:
        assert rlm.completion("ctx0", root_prompt="plant").response == "planted"
    finally:
        rlm.close()
    response, program = _resume(store, environment="local")
    assert response == "Planted,bomb,nums|ctx0"
    assert _notes(program) == []


def test_a_worker_blob_is_not_unpickled_by_local_restore(tmp_path: Path) -> None:
    """``LocalREPL.restore(bytes)`` (a one-shot checkpoint's path) refuses a blob an
    isolated worker wrote, and one that says nothing of its writer (older rlmx)."""
    problem = _sandbox_problem()
    if problem:
        pytest.skip(problem)
    from rlm.environments.local_repl import LocalREPL
    from rlm.environments.sandbox_repl import SandboxREPL

    code, class_marker, reduce_marker = _plant(tmp_path)
    sandbox = SandboxREPL(persistent=True)
    try:
        assert not sandbox.execute_code(code).stderr
        blob, _ = sandbox.snapshot()
    finally:
        sandbox.cleanup()
    local = LocalREPL(persistent=True)
    try:
        lost = local.restore(blob)
        assert {"Planted", "bomb", "nums"} <= set(lost)
        assert not class_marker.exists() and not reduce_marker.exists()
        assert local.lookup_variable("nums") is None
    finally:
        local.cleanup()
    trusting = LocalREPL(persistent=True, trust_snapshots=True)
    try:
        assert trusting.restore(blob) == []
        assert trusting.lookup_variable("nums") == "[1, 2, 3]"
    finally:
        trusting.cleanup()
    assert class_marker.exists() and reduce_marker.exists()


def test_a_blob_without_provenance_is_untrusted_locally(tmp_path: Path) -> None:
    """A blob from before provenance was recorded (no ``origin``) is not loaded."""
    from rlm.environments.local_repl import LocalREPL

    source = LocalREPL(persistent=True)
    try:
        source.execute_code("nums = [1, 2, 3]")
        blob, _ = source.snapshot()
    finally:
        source.cleanup()
    import pickle

    data = pickle.loads(blob)
    data.pop("origin", None)
    legacy = pickle.dumps(data)
    assert WorkerState.from_blob(legacy, False, 1 << 30).entries
    local = LocalREPL(persistent=True)
    try:
        assert "nums" in local.restore(legacy)
        assert local.lookup_variable("nums") is None
        assert local.restore(blob) == []  # this host wrote it: restored
        assert local.lookup_variable("nums") == "[1, 2, 3]"
    finally:
        local.cleanup()


def _ipython_problem() -> str | None:
    """Only missing packages skip; a kernel that does not start is a failure."""
    missing = [m for m in ("ipykernel", "jupyter_client") if importlib.util.find_spec(m) is None]
    return f"not installed: {', '.join(missing)} (pip install 'rlmx[ipython]')" if missing else None


def test_ipython_kernel_session_resumed_locally_runs_nothing_it_wrote(tmp_path: Path) -> None:
    problem = _ipython_problem()
    if problem:
        pytest.skip(problem)
    code, class_marker, reduce_marker = _plant(tmp_path)
    store = tmp_path / "s.db"
    rlm = durable_rlm(_program(code), store, "s", environment="ipython")
    try:
        assert rlm.completion("ctx0", root_prompt="plant").response == "planted"
    finally:
        rlm.close()
    assert not class_marker.exists() and not reduce_marker.exists()
    response, program = _resume(store, environment="ipython")  # kernel to kernel: restored
    assert response == "Planted,bomb,nums|ctx0"
    assert _notes(program) == []
    assert not class_marker.exists() and not reduce_marker.exists()
    # Its turn was written by the kernel too: not loaded into the host process.
    response, program = _resume(store, environment="local")
    assert not class_marker.exists() and not reduce_marker.exists()
    assert response == "|ctx0"
    (note,) = _notes(program)
    assert "bomb" in note and "not loaded" in note and "IPython kernel" in note
