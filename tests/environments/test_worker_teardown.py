"""Closing a local worker: when ``close`` returns, the worker is dead (reaped) and its
private directory is gone, even if it was busy writing there; reaping waits for the
exit itself (a pidfd) or polls where there is none, within its timeout."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from rlm.environments.transports import process
from rlm.environments.transports.process import SubprocessTransport

# Writes files and directories in its working directory (the transport's) as fast
# as it can, and forks a child that does the same: both must be gone after close.
_WRITER = """
import itertools, os
os.fork()
me = os.getpid()
for i in itertools.count():
    os.makedirs(f"d{me}_{i % 40}", exist_ok=True)
    with open(f"d{me}_{i % 40}/f{i % 7}", "w") as f:
        f.write("x" * 100)
"""


class WriterTransport(SubprocessTransport):
    def command(self, worker_args: Sequence[str]) -> list[str]:
        return [sys.executable, "-I", "-c", _WRITER]


def _wait_for(predicate: object, what: str) -> None:
    deadline = time.monotonic() + 30
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "polling"])
def test_close_reaps_a_busy_worker_and_removes_its_directory(
    pidfd: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not pidfd:
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    for _ in range(3):
        transport = WriterTransport()
        workdir = Path(transport.workdir)
        transport.launch([])
        proc = transport._proc
        assert proc is not None
        _wait_for(lambda w=workdir: len(list(w.iterdir())) >= 2, "both writers to write")
        transport.close()
        assert proc.returncode == -9  # reaped: killed by SIGKILL
        assert not os.path.lexists(workdir)
        assert transport.poll() == -9
        transport.close()  # idempotent


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "polling"])
def test_reap_waits_for_the_exit_and_no_longer_than_its_timeout(
    pidfd: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not pidfd:
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        process._reap(proc, 0.05)  # still running: gives up, reaps nothing
        assert proc.returncode is None and proc.poll() is None
        proc.terminate()
        process._reap(proc, 30)
        assert proc.returncode == -15
        process._reap(proc, 30)  # already reaped: nothing to do
    finally:
        proc.kill()
        proc.wait()


def test_reap_of_a_process_that_exits_by_itself() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process._reap(proc, 30)
    assert proc.returncode == 3


def test_wait_returns_the_status_or_none_within_its_timeout() -> None:
    transport = WriterTransport()
    try:
        transport.launch([])
        assert transport.wait(0.05) is None  # still writing
        transport.kill()
        assert transport.wait(30) == -9
    finally:
        transport.close()
