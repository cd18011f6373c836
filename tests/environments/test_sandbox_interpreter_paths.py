"""The sandbox starts from any interpreter location (a venv under ``/tmp`` or ``$HOME``,
``/opt``, conda, pyenv), binding exactly the interpreter's installation and import path
read-only at their real paths, while the rest of ``/tmp`` and ``$HOME`` stays hidden.

Regression: ``--tmpfs /tmp`` was mounted after the interpreter's binds, so a venv under
``/tmp`` vanished (``bwrap: execvp .../venv/bin/python: No such file or directory``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from worker_env_support import needs_bwrap

from rlm.environments.transports.bwrap import BwrapTransport, python_binds
from rlm.environments.transports.sandbox_limits import SandboxLimits

ROOT = Path(__file__).resolve().parents[2]  # this rlmx checkout
SECRET = "rlmx-interpreter-paths-secret"

# Run by the venv's interpreter: a SandboxREPL whose worker is that same interpreter.
HOST_SCRIPT = """
import json, sys
from rlm.environments.sandbox_repl import SandboxREPL
env = SandboxREPL(cell_timeout=60, start_timeout=60)
try:
    result = env.execute_code(sys.argv[1])
    print(json.dumps({"stdout": result.stdout, "stderr": result.stderr}))
finally:
    env.cleanup()
"""
CELL = """
import json, os, sys
def visible(path):
    try:
        return sorted(os.listdir(path))
    except OSError as exc:
        return type(exc).__name__
def readable(path):
    try:
        return open(path).read()
    except OSError as exc:
        return type(exc).__name__
print(json.dumps({
    "prefix": sys.prefix, "executable": sys.executable, "home_dir": visible(HOME),
    "secret": readable(SECRET), "sibling": readable(SIBLING),
}))
"""


def make_venv(path: Path) -> Path:
    """A venv without pip at ``path`` whose only addition is this rlmx checkout (a
    ``.pth``): nothing of the machine's or the test runner's packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    site = subprocess.run(
        [str(python), "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "rlmx_checkout.pth").write_text(f"{ROOT}\n")
    return python


def run_from(python: Path, home: Path, code: str) -> dict[str, str]:
    """Start a sandbox from ``python`` (as its host) and run ``code`` in one cell."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    done = subprocess.run(
        [str(python), "-I", "-c", HOST_SCRIPT, code],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(home),
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    reply: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    assert reply["stderr"] == "", reply["stderr"]
    return reply


@needs_bwrap
@pytest.mark.parametrize("where", ["tmp", "home"])
def test_sandbox_starts_from_a_venv_under_tmp_or_home(tmp_path: Path, where: str) -> None:
    assert str(tmp_path).startswith(tempfile.gettempdir() + os.sep)  # tmp_path is under /tmp
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    secret = home / ".ssh" / "id_rsa"
    secret.write_text(SECRET)
    sibling = tmp_path / "sibling.txt"  # elsewhere in /tmp: must stay hidden
    sibling.write_text(SECRET)
    venv = (home if where == "home" else tmp_path) / "venv"
    python = make_venv(venv)
    # The venv's interpreter is not this one, and it imports rlm from this checkout only.
    probe = "import rlm, sys; print(sys.prefix, rlm.__file__)"
    out = subprocess.run([str(python), "-I", "-c", probe], capture_output=True, text=True)
    assert out.stdout.split() == [str(venv), str(ROOT / "rlm" / "__init__.py")], out.stderr
    cell = f"HOME, SECRET, SIBLING = {str(home)!r}, {str(secret)!r}, {str(sibling)!r}" + CELL
    reply = run_from(python, home, cell)
    seen = json.loads(reply["stdout"])
    assert seen["prefix"] == str(venv) and seen["executable"] == str(python)
    assert seen["secret"] == "FileNotFoundError" and seen["sibling"] == "FileNotFoundError"
    # $HOME shows only the venv's mount point (or nothing at all when the venv is in /tmp).
    assert seen["home_dir"] == (["venv"] if where == "home" else "FileNotFoundError")
    assert SECRET not in reply["stdout"]


def test_python_binds_never_expose_tmp_or_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    venv = home / "venv"
    python = make_venv(venv)
    monkeypatch.setenv("HOME", str(home))
    binds = python_binds(str(python))
    assert str(venv) in binds
    for bound in binds:
        assert not bound.startswith("/usr/") and bound != "/usr"  # bound on its own
        for private in ("/", "/tmp", "/root", "/home", str(home), str(tmp_path)):
            assert bound != private and not private.startswith(bound.rstrip("/") + "/")


def test_interpreter_binds_come_after_the_tmp_tmpfs(tmp_path: Path) -> None:
    python = make_venv(tmp_path / "venv")
    transport = BwrapTransport(SandboxLimits(max_processes=None), "/usr/bin/bwrap", str(python))
    try:
        argv = transport.command([])
        tmpfs = argv.index("--tmpfs")
        assert argv[tmpfs + 1] == "/tmp"
        bind = argv.index(str(tmp_path / "venv"))
        assert argv[bind - 1] == "--ro-bind" and bind > tmpfs
        assert argv.index("--remount-ro") > bind
    finally:
        transport.close()
