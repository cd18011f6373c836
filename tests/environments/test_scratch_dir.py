"""A LocalREPL's scratch folder is made only when something needs it, and the folders of
processes killed before they could clean up are swept (``rlm serve`` does it at start).
Real processes, killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from rlm.environments.inprocess.scratch import (
    HOST_PREFIXES,
    PREFIX,
    _owner_alive,
    sweep_orphans,
)
from rlm.environments.local_repl import LocalREPL


def _mine() -> set[str]:
    root = Path(tempfile.gettempdir())
    return {str(p) for p in root.glob(f"{PREFIX}{os.getpid()}_*")}


def test_a_run_that_opens_no_relative_path_makes_no_folder() -> None:
    before = _mine()
    with LocalREPL(context_payload="some text") as env:
        result = env.execute_code("n = len(context)\nprint(n)")
        assert result.stdout == "9\n"
        assert _mine() == before


def test_a_relative_open_makes_the_folder_and_cleanup_removes_it() -> None:
    before = _mine()
    env = LocalREPL()
    try:
        result = env.execute_code(
            "open('notes.txt', 'w').write('kept')\nprint(open('notes.txt').read())"
        )
        assert result.stdout == "kept\n"
        made = _mine() - before
        assert len(made) == 1
        folder = made.pop()
        assert folder == env.temp_dir
        assert Path(folder, "notes.txt").read_text() == "kept"
        assert os.stat(folder).st_mode & 0o777 == 0o700
    finally:
        env.cleanup()
    assert not os.path.exists(folder)


_CHILD = """
import sys, time
from rlm.environments.local_repl import LocalREPL
env = LocalREPL()
env.execute_code("open('x.txt', 'w').write('x')")
print(env.temp_dir, flush=True)
time.sleep(600)
"""


def _child_with_a_folder(tmp: Path) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    folder = proc.stdout.readline().strip()
    assert folder.startswith(str(tmp)) and os.path.isdir(folder), folder
    return proc, folder


def test_the_sweep_removes_a_killed_processs_folder_and_keeps_a_live_ones(
    tmp_path: Path,
) -> None:
    dead, dead_folder = _child_with_a_folder(tmp_path)
    live, live_folder = _child_with_a_folder(tmp_path)
    try:
        dead.send_signal(signal.SIGKILL)
        dead.wait(10)
        assert os.path.isdir(dead_folder)  # nobody cleaned up after kill -9
        old_style = tmp_path / f"{PREFIX}abcd1234"  # no pid in the name: never swept
        old_style.mkdir()
        unrelated = tmp_path / "rlmx_other_1_x"
        unrelated.mkdir()

        removed = sweep_orphans(root=str(tmp_path))

        assert removed == [dead_folder]
        # The other folders rlmx makes per process, for the same dead pid:
        others = [tmp_path / f"{p}{dead.pid}_x" for p in HOST_PREFIXES if p != PREFIX]
        for folder in others:
            folder.mkdir()
        assert sorted(sweep_orphans(root=str(tmp_path))) == sorted(map(str, others))
        assert not os.path.exists(dead_folder)
        assert os.path.isdir(live_folder)
        assert old_style.is_dir() and unrelated.is_dir()
    finally:
        live.kill()
        live.wait(10)


def test_a_pid_reused_by_a_later_process_does_not_keep_an_orphan() -> None:
    """A live pid owns a folder only if its process started before the folder was
    made; a process started later reuses a dead owner's pid."""
    late = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        now = time.time()
        assert _owner_alive(late.pid, made_at=now)  # made after it started: its own
        assert not _owner_alive(late.pid, made_at=now - 3600)  # made an hour before it
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait(10)
        assert not _owner_alive(dead.pid, made_at=now)
    finally:
        late.kill()
        late.wait(10)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_another_users_folder_is_left_alone(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(10)
    folder = tmp_path / f"{PREFIX}{dead.pid}_abc"
    folder.mkdir()
    os.chown(folder, 65534, 65534)  # nobody
    assert sweep_orphans(root=str(tmp_path)) == []
    assert folder.is_dir()
