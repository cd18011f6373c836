"""The sandbox never runs as host root (``rlm.environments.transports.sandbox_user``).

Regression: started by root, bubblewrap mapped the sandbox's uid 65534 to host uid 0,
so model code could open ``/proc/sys/kernel/core_pattern`` and other sysctls for
writing. Now bubblewrap runs as an unprivileged host user on a root host, with the
paths it binds shown to that user even where it could not reach them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from shutil import which
from types import SimpleNamespace
from typing import Any

import pytest
from worker_env_support import needs_bwrap

from rlm.environments.sandbox_repl import SandboxREPL
from rlm.environments.transports import sandbox_user
from rlm.environments.transports.bwrap import WORKER_PATH, BwrapTransport
from rlm.environments.transports.sandbox_user import HostUser, blocked_dir, cover_argv, host_user

LIMITS: dict[str, Any] = {
    "cell_timeout": 30,
    "memory_mb": 1024,
    "max_processes": 32,
    "tmp_size_mb": 16,
}
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: switches users")


def _status(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def sandbox_processes(pid: int) -> dict[int, dict[str, str]]:
    """The host's view (status, cmdline) of every descendant of ``pid`` that runs in
    another PID namespace than this process: the sandbox's own processes."""
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            children.setdefault(int(_status(int(entry))["PPid"]), []).append(int(entry))
        except (OSError, KeyError, ValueError):
            continue  # gone meanwhile
    found: dict[int, dict[str, str]] = {}
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        todo += children.get(child, [])
        try:
            status = _status(child)
            status["cmdline"] = Path(f"/proc/{child}/cmdline").read_text().replace("\0", " ")
        except OSError:
            continue
        if len(status["NSpid"].split()) > 1:  # a nested PID namespace
            found[child] = status
    return found


@needs_bwrap
def test_sandboxed_code_never_runs_as_host_root() -> None:
    env = SandboxREPL(**LIMITS)
    try:
        started = "import subprocess\nchild = subprocess.Popen(['sleep', '60'])\nprint('ok')"
        assert env.execute_code(started).stdout == "ok\n"
        assert isinstance(env.transport, BwrapTransport) and env.transport.pid is not None
        inside = sandbox_processes(env.transport.pid)
        commands = [status["cmdline"] for status in inside.values()]
        assert any(WORKER_PATH in c for c in commands) and any("sleep 60" in c for c in commands)
        expected = str(os.geteuid() or 65534)  # this user, or 65534 on a root host
        for status in inside.values():
            uids, gids = status["Uid"].split(), status["Gid"].split()  # real, eff., saved, fs
            assert set(uids) == {expected} and "0" not in gids, (status["cmdline"], uids, gids)
    finally:
        env.cleanup()


@needs_bwrap
@ROOT_ONLY
def test_another_unprivileged_user_and_the_python_switch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``run_as`` picks the host user; without ``setpriv`` a few lines of Python switch."""
    no_setpriv = SimpleNamespace(which=lambda name: None if name == "setpriv" else which(name))
    monkeypatch.setattr(sandbox_user, "shutil", no_setpriv)
    env = SandboxREPL(run_as=(4242, 4343), **LIMITS)
    try:
        assert env.execute_code("print('ok')").stdout == "ok\n"
        assert isinstance(env.transport, BwrapTransport) and env.transport.pid is not None
        argv = env.transport.launch_argv([])
        assert "setpriv" not in " ".join(argv) and "os.setresuid" in " ".join(argv)
        inside = sandbox_processes(env.transport.pid)
        assert any(WORKER_PATH in status["cmdline"] for status in inside.values())
        for status in inside.values():
            assert set(status["Uid"].split()) == {"4242"}, status["Uid"]
            assert set(status["Gid"].split()) == {"4343"}, status["Gid"]
    finally:
        env.cleanup()


def test_run_as_root_is_refused() -> None:
    for run_as in [(0, 0), (0, 65534), (65534, 0)]:
        with pytest.raises(ValueError, match="never runs as host root"):
            host_user(run_as)


def test_host_user_only_on_a_root_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox_user.os, "geteuid", lambda: 1000)
    assert host_user() is None and host_user((4242, 4242)) is None
    monkeypatch.setattr(sandbox_user.os, "geteuid", lambda: 0)
    assert host_user() == HostUser(65534, 65534)
    assert host_user((4242, 4343)) == HostUser(4242, 4343)


def test_unreachable_paths_get_a_cover_with_only_them() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as where:  # pytest's own dirs are 0700
        check_covers(Path(where))


def check_covers(tmp_path: Path) -> None:
    user = HostUser(4242, 4242)
    closed = tmp_path / "closed"
    wanted, sibling = closed / "deep" / "venv", closed / "secret"
    wanted.mkdir(parents=True)
    sibling.mkdir()
    zipapp = closed / "worker.pyz"
    zipapp.write_text("zip")
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    for path in (tmp_path, open_dir):
        path.chmod(0o755)
    closed.chmod(0o700)
    assert blocked_dir(str(wanted), user) == str(closed)
    assert blocked_dir(str(open_dir), user) is None
    assert cover_argv("bwrap", [str(open_dir)], user) == []
    argv = cover_argv("bwrap", [str(wanted), str(wanted / "lib"), str(zipapp)], user)
    assert argv[:4] == ["bwrap", "--dev-bind", "/", "/"]
    assert argv[-2:] == ["--die-with-parent", "--"]
    expected = ["--tmpfs", str(closed), "--dir", str(closed / "deep"),
                "--ro-bind", str(wanted), str(wanted),
                "--ro-bind", str(zipapp), str(zipapp)]  # fmt: skip
    assert argv[4:-2] == expected  # wanted/lib is inside wanted; the sibling stays hidden
    assert str(sibling) not in argv


def test_searchable_follows_owner_group_other() -> None:
    user = HostUser(4242, 4343)

    def info(uid: int, gid: int, mode: int) -> os.stat_result:
        return os.stat_result((0o040000 | mode, 0, 0, 0, uid, gid, 0, 0, 0, 0))

    assert user.can_enter(info(4242, 0, 0o700)) and not user.can_enter(info(4242, 0, 0o077))
    assert user.can_enter(info(0, 4343, 0o710)) and not user.can_enter(info(0, 4343, 0o701))
    assert user.can_enter(info(0, 0, 0o711)) and not user.can_enter(info(0, 0, 0o770))


def test_a_needed_directory_the_user_cannot_enter_is_a_clear_error(tmp_path: Path) -> None:
    """A cover can show a path at its place, but cannot change the path's own mode: a
    venv directory made 0700 (``mktemp -d``) must fail with what to do, not bwrap's
    bare 'Permission denied'."""
    venv = tmp_path / "venv"
    venv.mkdir(mode=0o700)
    os.chmod(venv, 0o700)
    with pytest.raises(PermissionError, match=r"chmod o\+x .*venv"):
        cover_argv("/usr/bin/bwrap", [str(venv)], HostUser())
    os.chmod(venv, 0o755)
    cover_argv("/usr/bin/bwrap", [str(venv)], HostUser())  # reachable now: no error
