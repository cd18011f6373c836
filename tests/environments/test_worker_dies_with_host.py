"""A worker dies with its host, whatever cell it is running (issue 13).

Regression: workers (``worker.pyz``) were found with ppid 1, still running a model's
``while True:`` cell 25-88 minutes after their host was killed with SIGKILL. Now the
worker arms ``PR_SET_PDEATHSIG``, forks a guard that kills its process group when the
host exits, and its reader ends it when the channel closes; the host starts every
worker from one long-lived thread; bubblewrap, the user switch and (on a root host) a
guardian process pass the parent-death signal on (``rlm.environments.worker.lifeline``,
``rlm.environments.transports.sandbox_user``).

Each test starts a real host Python process that creates an environment and runs a
cell, kills the host with SIGKILL, and waits (bounded) for every process of the
environment to be gone: the host's descendants and everything in their process groups
(the guard is not a descendant). Survivors are killed in teardown.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from worker_env_support import needs_bwrap

from rlm.environments.transports.bwrap import python_binds
from rlm.environments.transports.sandbox_user import HostUser, user_argv

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
GONE_WITHIN = 10.0  # seconds (a bounded wait, polled)
HAVE_IPYKERNEL = all(
    importlib.util.find_spec(n) is not None for n in ("ipykernel", "jupyter_client")
)

# The host: makes the environment, runs a first cell, starts the cell under test on a
# thread and says so on stdout, then waits to be killed.
HOST = """
import json, os, sys, threading, time, warnings
sys.path.insert(0, {here!r})
warnings.simplefilter("ignore")
kind, code = sys.argv[1], sys.argv[2]
options = dict(cell_timeout=1e6, start_timeout=60.0)
if kind == "sandbox":
    from rlm.environments.sandbox_repl import SandboxREPL
    env = SandboxREPL(memory_mb=1024, max_processes=32, tmp_size_mb=32, **options)
elif kind == "process":
    from rlm.environments.sandbox_repl import SandboxREPL
    env = SandboxREPL(isolation="process", **options)
elif kind == "docker":
    from worker_env_support import fake_docker
    from rlm.environments.docker_repl import DockerREPL
    env = DockerREPL(docker_command=fake_docker(), **options)
else:
    from rlm.environments.ipython_repl import IPythonREPL
    env = IPythonREPL(**options)
assert env.execute_code("print(6 * 7)").stdout.strip() == "42"
threading.Thread(target=env.execute_code, args=(code,), daemon=True).start()
print(json.dumps({{"host": os.getpid()}}), flush=True)
time.sleep(1e6)
"""

CELLS = {
    "busy": "while True:\n    pass",
    "sleep": "import time\ntime.sleep(1e6)",
    "child": "import subprocess\nsubprocess.Popen(['sleep', '1000'])\nwhile True:\n    pass",
    # Holds the GIL in C for hours: no thread of the worker runs meanwhile.
    "c-loop": "total = sum(range(10**15))",
}


def _stat(pid: int) -> tuple[int, int, str, int] | None:
    """(ppid, pgid, state, start time) of ``pid``, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[2]), fields[0], int(fields[19])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _table() -> dict[int, tuple[int, int, str, int]]:
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (info := _stat(int(entry))) is not None:
            table[int(entry)] = info
    return table


def environment_processes(host: int) -> dict[int, int]:
    """{pid: start time} of the host's descendants and of every process sharing a
    process group with one of them (other than the host's own group)."""
    table = _table()
    found: set[int] = set()
    todo = [host]
    while todo:
        parent = todo.pop()
        for pid, (ppid, _, _, _) in table.items():
            if ppid == parent and pid not in found:
                found.add(pid)
                todo.append(pid)
    groups = {table[pid][1] for pid in found} - {table[host][1]}
    found |= {pid for pid, info in table.items() if info[1] in groups and pid != host}
    return {pid: table[pid][3] for pid in found if pid in table}


def alive(processes: dict[int, int]) -> dict[int, str]:
    """Those of ``processes`` still running (zombies count as gone): pid -> cmdline."""
    left = {}
    for pid, started in processes.items():
        info = _stat(pid)
        if info is not None and info[3] == started and info[2] != "Z":
            left[pid] = _cmdline(pid)
    return left


@pytest.fixture
def survivors() -> Iterator[dict[int, int]]:
    """Processes a test saw; whatever of them is still alive at the end is killed."""
    seen: dict[int, int] = {}
    yield seen
    for pid in alive(seen):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def run_and_kill_host(
    kind: str, cell: str, seen: dict[int, int], prefix: list[str] | None = None
) -> None:
    code = HOST.format(here=str(HERE))
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp",
           "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip
    launcher = subprocess.Popen(
        [*(prefix or []), sys.executable, "-c", code, kind, CELLS[cell]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd="/tmp",
        start_new_session=True,
    )
    try:
        assert launcher.stdout is not None
        line = launcher.stdout.readline()  # the host is ready (or dead: then empty)
        if not line:
            launcher.wait(30)
            error = launcher.stderr.read().decode()[-3000:] if launcher.stderr else ""
            raise AssertionError(f"the host failed to start its environment:\n{error}")
        # Without a prefix the host is the launcher; with one, a process below it.
        host = launcher.pid if prefix is None else _find_host(launcher.pid)
        seen[host] = _table()[host][3]

        def started() -> bool:
            procs = environment_processes(host)
            seen.update(procs)
            commands = [_cmdline(pid) for pid in alive(procs)]
            worker = any("worker" in c or "-I -c" in c or "kernel" in c for c in commands)
            return worker and (cell != "child" or any(c.startswith("sleep 1000") for c in commands))

        _wait_for(started, f"the {cell!r} cell to start in {kind}")
        time.sleep(1.0)  # the cell is well inside its loop, sleep or C call
        processes = environment_processes(host)
        seen.update(processes)
        assert processes, "no environment process found"
        os.kill(host, signal.SIGKILL)
        deadline = time.monotonic() + GONE_WITHIN
        while alive(processes) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = alive(processes)
        assert not left, f"{kind}: processes outlived their killed host: {left}"
    finally:
        if launcher.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait(30)


def _find_host(launcher: int) -> int:
    """The python host below the user-switch prefix (bubblewrap's cover, setpriv)."""
    for pid in sorted(environment_processes(launcher)):
        if "env.execute_code" in _cmdline(pid):  # the HOST program, not the guardian
            return pid
    raise AssertionError("the host process is not found below its launcher")


KINDS = [
    pytest.param("process", id="process"),
    pytest.param("sandbox", id="sandbox", marks=needs_bwrap),
    pytest.param("docker", id="docker-fake"),
    pytest.param(
        "ipython",
        id="ipython",
        marks=pytest.mark.skipif(not HAVE_IPYKERNEL, reason="needs ipykernel"),
    ),
]


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("kind", KINDS)
def test_worker_dies_with_its_host(kind: str, cell: str, survivors: dict[int, int]) -> None:
    run_and_kill_host(kind, cell, survivors)


AS_ROOT_ONLY = "switches to uid 65534, which needs root"


@needs_bwrap
@pytest.mark.skipif(os.geteuid() != 0, reason=AS_ROOT_ONLY)
@pytest.mark.parametrize("cell", ["child", "c-loop"])
@pytest.mark.parametrize("kind", ["process", "sandbox"])
def test_worker_dies_with_its_unprivileged_host(
    kind: str, cell: str, survivors: dict[int, int]
) -> None:
    """The same, the host running as uid/gid 65534 (a non-root host: bubblewrap makes
    its own user namespace), the paths it needs shown to it by a first bubblewrap."""
    bwrap = shutil.which("bwrap") or "/usr/bin/bwrap"
    paths = [os.path.realpath(p) for p in (*python_binds(sys.executable), str(ROOT))]
    prefix = user_argv(bwrap, paths, HostUser())
    run_and_kill_host(kind, cell, survivors, prefix)


def test_the_guard_ends_with_a_worker_closed_normally(survivors: dict[int, int]) -> None:
    """A worker shut down by its host leaves no guard behind."""
    from rlm.environments.sandbox_repl import SandboxREPL

    with pytest.warns(RuntimeWarning, match="isolation='process'"):
        env = SandboxREPL(isolation="process", cell_timeout=30)
    try:
        assert env.execute_code("print(1)").stdout == "1\n"
        worker = env.transport.pid
        assert worker is not None
        group = {pid: info[3] for pid, info in _table().items() if info[1] == worker}
        survivors.update(group)
        assert len(group) == 2, [_cmdline(pid) for pid in group]  # the worker and its guard
    finally:
        env.cleanup()
    deadline = time.monotonic() + GONE_WITHIN
    while alive(group) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(group), alive(group)


@pytest.mark.parametrize("kind", KINDS)
def test_worker_outlives_the_thread_that_started_it(kind: str) -> None:
    """The parent-death signal fires when the *thread* that started a process ends: the
    host starts workers from one long-lived thread, so an environment made on a
    short-lived thread (a server's request thread) keeps its worker."""
    import threading

    from worker_env_support import make_env

    made: list[Any] = []
    maker = threading.Thread(target=lambda: made.append(make_env(kind, cell_timeout=30)))
    maker.start()
    maker.join()
    env = made[0]
    try:
        assert env.execute_code("x = 41").stderr == ""
        before = env.transport.pid
        time.sleep(1.0)  # a worker killed with its starting thread is dead by now
        assert env.transport.poll() is None, "the worker died with the thread that made it"
        assert env.execute_code("print(x + 1)").stdout == "42\n"
        assert env.transport.pid == before
    finally:
        env.cleanup()
