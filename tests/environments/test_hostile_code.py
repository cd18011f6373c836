"""The hostile-code suite: model code that attacks the host, run in the bubblewrap sandbox
(every case), and in ``docker`` and ``ipython`` where their claims apply.

Every snippet runs in a fresh sandbox that already holds ``marker`` and a function
``keep()``. Whatever the snippet does, the host process must survive and the next cell
must still see both. Each case also checks its specific containment, and records what
happened; ``RLMX_HOSTILE_REPORT=path.md`` writes those records as the tables that
``docs/security.md`` shows.

``ipython`` is not a security boundary: only the cases about the session surviving run
there. ``docker`` runs those too; its isolation cases need a real Docker engine and are
skipped when only the fake CLI is available (it runs the worker unisolated).

The bubblewrap cases hold for a root host and for an unprivileged one: run as root,
``test_hostile_suite_as_unprivileged_user`` runs them again in a child that switched to
uid/gid 65534 first.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from worker_env_support import DOCKER_ENGINE_PROBLEM, make_env, needs_bwrap

from rlm.base.types import REPLResult
from rlm.environments.sandbox_repl import SandboxREPL
from rlm.environments.transports.bwrap import python_binds
from rlm.environments.transports.sandbox_user import HostUser, user_argv

FAKE_SECRET = "sk-rlmx-FAKE-SECRET-0123456789"
FAKE_KEY = "-----BEGIN FAKE RLMX PRIVATE KEY-----"
LIMITS = {
    "cell_timeout": 1.5,
    "interrupt_grace": 1.0,
    "memory_mb": 512,
    "max_processes": 32,
    "max_file_size_mb": 8,
    "tmp_size_mb": 16,
    "output_limit": 20_000,
}
_records: list[tuple[str, str, str]] = []
_other_records: list[tuple[str, str, str]] = []  # (environment, attack, what happened)
PLACEHOLDERS = {
    "home": "$HOME",
    "host_dir": "<host dir>",
    "host_file": "<host dir>/secret.txt",
    "port": "<port>",
}


def _shown(text: str, host: dict[str, Any] | None = None) -> str:
    """``text`` for the report table: one line, host paths as placeholders."""
    for key, value in (host or {}).items():
        text = text.replace(str(value), PLACEHOLDERS[key])
    return text.replace("\n", " ⏎ ").replace("|", "\\|")


@dataclass
class Case:
    id: str
    code: str
    check: Callable[[REPLResult, dict[str, Any]], str]  # asserts; returns what happened
    kwargs: dict[str, Any] = field(default_factory=dict)


def last_line(result: REPLResult) -> str:
    lines = result.stderr.strip().splitlines()
    return lines[-1] if lines else ""


def no_secret(result: REPLResult) -> None:
    text = result.stdout + result.stderr
    assert FAKE_SECRET not in text and FAKE_KEY not in text


def raised(kind: str) -> Callable[[REPLResult, dict[str, Any]], str]:
    def check(result: REPLResult, ctx: dict[str, Any]) -> str:
        no_secret(result)
        assert last_line(result).startswith(kind), result.stderr
        return f"`{last_line(result)[:110]}`"

    return check


def printed(expected: str) -> Callable[[REPLResult, dict[str, Any]], str]:
    def check(result: REPLResult, ctx: dict[str, Any]) -> str:
        no_secret(result)
        assert result.stdout.strip() == expected.format(**ctx), result.stdout + result.stderr
        return f"prints `{result.stdout.strip()[:110]}`"

    return check


def restarted(kind: str, why: str) -> Callable[[REPLResult, dict[str, Any]], str]:
    def check(result: REPLResult, ctx: dict[str, Any]) -> str:
        line = last_line(result)
        assert line.startswith(tuple(kind.split("|"))) and why in line, result.stderr
        assert "restored from the snapshot taken after cell 1" in line
        return f"{why}; worker restarted, namespace restored (`{line[: line.index(',')]}`)"

    return check


SYSTEM_TOPS = {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "opt", "proc", "sbin",
               "tmp", "usr"}  # fmt: skip


def subprocess_runs(result: REPLResult, ctx: dict[str, Any]) -> str:
    """``id``, ``ls /`` and ``find /home /root /work...``: uid 65534, and nothing beyond
    the system and the interpreter's own bound paths (and the directories leading to
    them: a venv under ``/home/<user>`` shows ``/home``)."""
    no_secret(result)
    ident, *rest = result.stdout.splitlines()
    binds = python_binds(sys.executable)
    assert ident.split()[0] == "uid=65534", result.stdout
    tops = [line for line in rest if line and not line.startswith("/")]
    assert set(tops) <= SYSTEM_TOPS | {b.split("/")[1] for b in binds}, (tops, binds)
    found = [line for line in rest if line.startswith("/")]
    for seen in found:
        assert any(b == seen or b.startswith(seen + "/") for b in binds), (seen, binds)
    shown = ", ".join(f"`{b}`" for b in binds if b in found) or "nothing"
    return f"runs as `{ident}`; `/` holds {' '.join(tops)}; `find` finds only the way to {shown}"


def proc_sys_closed(result: REPLResult, ctx: dict[str, Any]) -> str:
    """``/proc`` read-only (flag 1), and the sysctls refused by permission (EACCES)
    before the read-only mount is even consulted (EROFS): the sandbox is not host root.
    ``/proc/sysrq-trigger`` is EACCES, or ENOENT on a kernel without it."""
    no_secret(result)
    words = result.stdout.split()
    assert words[:2] == ["1", "EACCES"] and words[2:] in (["EACCES"], ["ENOENT"]), words
    return f"prints `{result.stdout.strip()}`: read-only, and no root to write as"


def truncated(result: REPLResult, ctx: dict[str, Any]) -> str:
    assert len(result.stdout) < 25_000 and "truncated by the worker" in result.stdout
    return f"output capped: {len(result.stdout):,} characters reach the host"


def interrupted(result: REPLResult, ctx: dict[str, Any]) -> str:
    assert "was interrupted; the namespace is intact" in last_line(result), result.stderr
    return "interrupted at the cell timeout; namespace intact"


def unaffected(result: REPLResult, ctx: dict[str, Any]) -> str:
    assert result.stderr == "", result.stderr
    return "no effect beyond the cell"


CASES = [
    Case("read ~/.ssh", "print(open('{home}/.ssh/id_rsa').read())", raised("FileNotFoundError")),
    Case("list $HOME", "import os\nprint(os.listdir('{home}'))", raised("FileNotFoundError")),
    Case(
        "host env vars",
        "import os\nprint(sorted(os.environ), 'RLMX_FAKE_SECRET' in os.environ)",
        printed("['HOME', 'LANG', 'LC_ALL', 'PATH', 'PWD', 'TMPDIR'] False"),
    ),
    Case(
        "/proc/1/environ",
        "print('RLMX' in open('/proc/1/environ', 'rb').read().decode(errors='replace'))",
        printed("False"),
    ),
    Case(
        "see host processes",
        "import os\nprint(len([p for p in os.listdir('/proc') if p.isdigit()]) < 10)",
        printed("True"),
    ),
    Case("read host file", "print(open('{host_file}').read())", raised("FileNotFoundError")),
    Case("write /usr", "open('/usr/evil', 'w').write('x')", raised("OSError: [Errno 30]")),
    Case("write /", "open('/evil', 'w').write('x')", raised("OSError: [Errno 30]")),
    Case("write host dir", "open('{host_dir}/evil', 'w').write('x')", raised("FileNotFoundError")),
    Case(
        "TCP to the internet",
        "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)",
        raised("OSError: [Errno 101] Network is unreachable"),
    ),
    Case(
        "TCP to the host's LM socket",
        "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)",
        raised("ConnectionRefusedError"),
    ),
    Case("DNS", "import socket\nsocket.getaddrinfo('example.com', 80)", raised("socket.gaierror")),
    Case(
        "subprocess",
        "import subprocess\nr = subprocess.run(['sh', '-c', 'id; ls /; find /home /root /work /srv /mnt /media /var -xdev 2>/dev/null'], capture_output=True, text=True)\nprint(r.stdout)",
        subprocess_runs,
    ),
    Case(
        # Only opened for writing and closed at once: nothing is ever written.
        "write /proc/sys",
        "import errno, os\ndef opens(path):\n    try:\n        os.close(os.open(path, os.O_WRONLY))\n        return 'WRITABLE'\n    except OSError as exc:\n        return errno.errorcode[exc.errno]\n"
        "names = ['kernel/core_pattern', 'fs/suid_dumpable', 'kernel/randomize_va_space', 'vm/overcommit_memory', 'vm/drop_caches']\n"
        "print(os.statvfs('/proc/sys').f_flag & os.ST_RDONLY, *set(opens('/proc/sys/' + n) for n in names), opens('/proc/sysrq-trigger'))",
        proc_sys_closed,
    ),
    Case(
        "nested user namespace",
        "import subprocess\nr = subprocess.run(['unshare', '-r', 'id'], capture_output=True, text=True)\nprint(r.returncode != 0)",
        printed("True"),
    ),
    Case(
        "mount",
        "import subprocess\nr = subprocess.run(['mount', '-t', 'tmpfs', 'x', '/usr'], capture_output=True)\nprint(r.returncode != 0)",
        printed("True"),
    ),
    Case(
        "raise rlimits",
        "import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))",
        raised("ValueError"),
    ),
    Case("fork bomb", "import os\nwhile True:\n    os.fork()", raised("BlockingIOError")),
    Case("memory bomb", "x = bytearray(2 * 1024 ** 3)", raised("MemoryError")),
    Case(
        "memory bomb (many small)",
        "hog = []\nwhile True:\n    hog.append(bytearray(10 ** 6))",
        raised("MemoryError"),
    ),
    Case("disk fill", "open('big', 'wb').write(b'0' * 50_000_000)", raised("OSError: [Errno 27]")),
    Case("infinite loop", "while True:\n    pass", interrupted),
    Case("sleep forever", "import time\ntime.sleep(10 ** 6)", interrupted),
    Case(
        "while True + except BaseException",
        "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass",
        restarted("TimeoutError", "did not stop when interrupted"),
    ),
    Case(
        "ignore SIGINT",
        "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass",
        restarted("TimeoutError", "did not stop when interrupted"),
    ),
    Case("sys.exit", "import sys\nsys.exit(1)", raised("SystemExit: 1")),
    Case("os._exit", "import os\nos._exit(0)", restarted("WorkerCrashedError", "exit status 0")),
    Case(
        "kill parent", "import os\nos.kill(os.getppid(), 9)\nprint('survived')", printed("survived")
    ),
    Case("kill -1", "import os\nos.kill(-1, 9)", raised("ProcessLookupError")),
    Case(
        "ctypes segfault",
        "import ctypes\nctypes.string_at(0)",
        restarted("WorkerCrashedError", "SIGSEGV"),
    ),
    Case("50 MB print", "print('x' * 50_000_000)", truncated),
    Case("50 MB to fd 1", "import os\nos.write(1, b'y' * 50_000_000)\nprint('ok')", printed("ok")),
    Case("print flood", "while True:\n    print('spam ' * 100)", interrupted),
    Case("recursion bomb", "def f():\n    return f()\nf()", raised("RecursionError")),
    Case(
        "C stack overflow",
        "import json, sys\nsys.setrecursionlimit(10 ** 8)\njson.loads('[' * 10 ** 6 + ']' * 10 ** 6)",
        restarted("WorkerCrashedError", "SIGSEGV"),
    ),
    Case("delete context", "del context\ndel context_0", unaffected),
    Case("rebind llm_query", "llm_query = lambda p: 'hacked'\nanswer = 'nope'", unaffected),
    Case(
        "garbage on the channel",
        "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'\\xff' * 64)\n    except OSError:\n        pass",
        restarted("WorkerCrashedError", "the worker died while running cell 2"),
    ),
    Case(
        # The worker notices when the host's interrupt arrives: it either exits at once
        # (crash) or is killed after the grace period (timeout), depending on timing.
        "close every fd",
        "import os\nos.closerange(0, 1024)\nwhile True:\n    pass",
        restarted("WorkerCrashedError|TimeoutError", "cell 2"),
    ),
    Case("read stdin", "import sys\nprint(repr(sys.stdin.read()))", printed("''")),
    Case(
        "break the worker's json",
        "import json\njson.dumps = json.loads = None\nprint('patched')",
        printed("patched"),
    ),
    Case("replace sys.stdout", "import sys\nsys.stdout = None", unaffected),
    Case(
        "threads left running",
        "import threading\nthreading.Thread(target=lambda: [0 for _ in iter(int, 1)], daemon=True).start()",
        unaffected,
    ),
]


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A fake home with a key, a host file and a secret env var, set before any sandbox
    starts; plus a listening socket on the host's loopback."""
    home = tmp_path_factory.mktemp("home")
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_rsa").write_text(FAKE_KEY)
    host_dir = tmp_path_factory.mktemp("hostdir")
    (host_dir / "secret.txt").write_text(FAKE_SECRET)
    saved = {k: os.environ.get(k) for k in ("HOME", "RLMX_FAKE_SECRET")}
    os.environ.update(HOME=str(home), RLMX_FAKE_SECRET=FAKE_SECRET)
    server = socket.create_server(("127.0.0.1", 0))
    try:
        yield {
            "home": str(home),
            "host_dir": str(host_dir),
            "host_file": str(host_dir / "secret.txt"),
            "port": server.getsockname()[1],
        }
    finally:
        server.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        assert not (host_dir / "evil").exists()
        report = os.environ.get("RLMX_HOSTILE_REPORT")
        if report:
            rows = [f"| {i} | `{code}` | {what} |" for i, code, what in _records]
            head = "| attack | snippet | what happened (measured) |\n| --- | --- | --- |\n"
            others = [f"| {kind} | {i} | {what} |" for kind, i, what in _other_records]
            other_head = (
                "\n| environment | attack | what happened (measured) |\n| --- | --- | --- |\n"
            )
            text = head + "\n".join(rows) + "\n" if rows else ""
            if others:
                text += other_head + "\n".join(others) + "\n"
            Path(report).write_text(text)


def _attack(env: Any, case: Case, host: dict[str, Any]) -> str:
    """Run ``case`` after a first cell; check it and that the session survived."""
    env.execute_code("marker = 'intact'\ndef keep():\n    return marker.upper()")
    result = env.execute_code(case.code.format(**host))
    what = case.check(result, host)
    after = env.execute_code("print(marker, keep(), context, callable(llm_query), answer['ready'])")
    assert after.stdout == "intact INTACT the context True False\n", after.stderr
    return what


@needs_bwrap
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_snippet(case: Case, host: dict[str, Any]) -> None:
    env = SandboxREPL(context_payload="the context", **{**LIMITS, **case.kwargs})
    try:
        what = _attack(env, case, host)
        _records.append((case.id, _shown(case.code.format(**PLACEHOLDERS)), _shown(what, host)))
    finally:
        env.cleanup()


AS_ROOT_ONLY = "switches to uid 65534, which needs root; as non-root, this suite is that half"


@needs_bwrap
@pytest.mark.skipif(os.geteuid() != 0, reason=AS_ROOT_ONLY)
def test_hostile_suite_as_unprivileged_user() -> None:
    """``test_hostile_snippet`` again, as uid/gid 65534 (a non-root host). This Python's
    installation, the checkout and ``PYTHONPATH`` are shown to that user at their real
    places, even where it could not reach them (a Python under ``/root``)."""
    root = Path(__file__).resolve().parents[2]
    imports = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    paths = [os.path.realpath(p) for p in (*python_binds(sys.executable), str(root), *imports)]
    prefix = user_argv(shutil.which("bwrap") or "/usr/bin/bwrap", paths, HostUser())
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp",
           "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": os.pathsep.join(imports)}  # fmt: skip
    tests = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             f"{__file__}::test_hostile_snippet"]  # fmt: skip
    done = subprocess.run(
        [*prefix, *tests], capture_output=True, text=True, env=env, cwd=root, timeout=280
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]  # "43 passed in 17.02s"
    assert re.match(rf"{len(CASES)} passed\b", summary) and "skipped" not in summary, summary


# The session survives: these hold wherever the worker runs, isolated or not.
SURVIVAL = ["sys.exit", "infinite loop", "os._exit", "recursion bomb", "delete context",
            "rebind llm_query"]  # fmt: skip
DOCKER_SURVIVAL = [*SURVIVAL, "while True + except BaseException", "ctypes segfault",
                   "50 MB print"]  # fmt: skip
# Isolation claims of docker (--network none, no host mounts): a real engine only.
DOCKER_ISOLATION = ["read ~/.ssh", "read host file", "write host dir", "TCP to the internet",
                    "TCP to the host's LM socket", "DNS"]  # fmt: skip
NO_ENGINE = (
    f"{DOCKER_ENGINE_PROBLEM}; the fake docker CLI runs the worker as a plain local "
    "process, so docker's isolation claims cannot be tested here"
)
_BY_ID = {case.id: case for case in CASES}
OTHER_CASES = [
    *(pytest.param("ipython", _BY_ID[i], id=f"ipython-{i}") for i in SURVIVAL),
    *(pytest.param("docker", _BY_ID[i], id=f"docker-{i}") for i in DOCKER_SURVIVAL),
    *(
        pytest.param(
            "docker",
            _BY_ID[i],
            id=f"docker-{i}",
            marks=pytest.mark.skipif(DOCKER_ENGINE_PROBLEM is not None, reason=NO_ENGINE),
        )
        for i in DOCKER_ISOLATION
    ),
]
OTHER_LIMITS = {"cell_timeout": 1.5, "interrupt_grace": 1.0, "output_limit": 20_000}


@pytest.mark.parametrize(("kind", "case"), OTHER_CASES)
def test_hostile_snippet_elsewhere(kind: str, case: Case, host: dict[str, Any]) -> None:
    env = make_env(kind, context_payload="the context", **OTHER_LIMITS)
    try:
        what = _attack(env, case, host)
        engine = "fake CLI" if kind == "docker" and DOCKER_ENGINE_PROBLEM else ""
        label = f"{kind} ({engine})" if engine else kind
        _other_records.append((label, case.id, _shown(what, host)))
    finally:
        env.cleanup()
