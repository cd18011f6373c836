"""Concurrent LocalREPLs must not share output, files or answers, and never chdir."""

from __future__ import annotations

import io
import os
import sys
import threading
from pathlib import Path

import pytest

from rlm.base.types import REPLResult
from rlm.environments import LocalREPL

N_REPLS = 8
N_LINES = 300

CELL = """
import time
start.wait(10)
for n in range(N_LINES):
    print(f"{tag}:{n}")
    if n % 25 == 0:
        time.sleep(0)  # give the other threads a chance to interleave
with open('notes.txt', 'w') as f:
    f.write(tag)
time.sleep(0.01)
with open('notes.txt') as f:
    read_back = f.read()
answer['content'] = tag
answer['ready'] = True
"""


def test_concurrent_repls_are_isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cwd = os.getcwd()
    start = threading.Barrier(N_REPLS)
    envs = [LocalREPL() for _ in range(N_REPLS)]
    results: dict[int, REPLResult] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            envs[i].set_variable("tag", f"repl{i}")
            envs[i].set_variable("N_LINES", N_LINES)
            envs[i].set_variable("start", start)
            results[i] = envs[i].execute_code(CELL)
        except BaseException as exc:  # surfaced below: threads swallow failures
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(N_REPLS)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors
        for i, result in results.items():
            tag = f"repl{i}"
            assert result.stderr == ""
            assert result.stdout.splitlines() == [f"{tag}:{n}" for n in range(N_LINES)]
            assert result.locals["read_back"] == tag
            assert result.final_answer == tag
            assert Path(envs[i].temp_dir, "notes.txt").read_text() == tag
        assert len(results) == N_REPLS
        assert os.getcwd() == cwd
        assert not (tmp_path / "notes.txt").exists()
    finally:
        for env in envs:
            env.cleanup()


def test_host_output_during_a_cell_is_not_captured(capsys: pytest.CaptureFixture[str]) -> None:
    with LocalREPL() as env:
        started, release = threading.Event(), threading.Event()
        env.set_variable("started", started)
        env.set_variable("release", release)
        box: dict[str, REPLResult] = {}
        worker = threading.Thread(
            target=lambda: box.setdefault(
                "r", env.execute_code("print('in cell')\nstarted.set()\nrelease.wait(10)")
            )
        )
        worker.start()
        assert started.wait(10)
        print("host line")
        print("host error", file=sys.stderr)
        release.set()
        worker.join(10)
        assert box["r"].stdout == "in cell\n"
        assert box["r"].stderr == ""
    captured = capsys.readouterr()
    assert "host line" in captured.out and "in cell" not in captured.out
    assert "host error" in captured.err


def test_capture_survives_stdout_replacement(monkeypatch: pytest.MonkeyPatch) -> None:
    with LocalREPL() as env:
        assert env.execute_code("print('before')").stdout == "before\n"
        # Like pytest's capsys or a host app: swap sys.stdout after the proxy is installed.
        replacement = io.StringIO()
        monkeypatch.setattr(sys, "stdout", replacement)
        assert env.execute_code("print('after')").stdout == "after\n"
        print("host after")
        assert replacement.getvalue() == "host after\n"


def test_same_instance_calls_are_serialised() -> None:
    with LocalREPL() as env:
        env.execute_code("import time\nactive = 0\npeak = 0")
        code = "active += 1\npeak = max(peak, active)\ntime.sleep(0.02)\nactive -= 1"
        threads = [threading.Thread(target=env.execute_code, args=(code,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert env.locals["peak"] == 1
        assert env.locals["active"] == 0
