"""The bubblewrap transport: the worker in a sandbox of its own (Linux).

``BwrapTransport`` runs ``python -I worker.pyz`` under bubblewrap with:

* no network (its own empty network namespace), its own PID, IPC, UTS and cgroup
  namespaces, and a user namespace with every capability dropped (so it cannot
  remount anything) and no further user namespaces;
* never host root: the sandbox's user is the host user that starts bubblewrap, and
  when rlmx runs as root that is an unprivileged one (``sandbox_user``);
* a fresh ``/proc`` mounted read-only, a read-only view of ``/usr`` (and the ``/lib*``,
  ``/bin``, ``/sbin`` links), of ``/etc/ld.so.cache`` and ``/etc/localtime`` only, of
  the Python installation at its real paths (``python_binds``) and of the worker
  zipapp (at ``WORKER_PATH``); nothing of ``$HOME``, ``/root``, ``/home``, ``/tmp``,
  ``/var``, ``/run`` or the rest of ``/etc``;
* a private, size-capped tmpfs at ``/tmp``, its working directory (lost when the worker
  is restarted), and a scrubbed environment, bubblewrap's own included;
* ``--die-with-parent`` and ``--new-session``.

``SandboxREPL`` (``rlm.environments.sandbox_repl``) documents the whole policy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence

from rlm.base.errors import EnvironmentError_
from rlm.environments.transports.process import SAFE_ENV, SubprocessTransport
from rlm.environments.transports.sandbox_limits import SandboxLimits
from rlm.environments.transports.sandbox_user import HostUser, host_user, user_argv
from rlm.environments.transports.zipapp import default_zipapp

_SYSTEM_DIRS = ("lib", "lib32", "lib64", "libx32", "bin", "sbin")  # bound like /usr
WORKER_PATH = "/opt/rlmx/worker.pyz"  # where the zipapp appears inside the sandbox
_SANDBOX_UID = 65534  # "nobody", inside the sandbox's own user namespace


# Printed by the sandboxed interpreter itself (run as the worker is, with -I): where it
# lives and what it imports from. Python 3.9 compatible, like the worker.
_PROBE = (
    "import json,sys;print(json.dumps([sys.executable,sys.prefix,sys.exec_prefix,"
    "sys.base_prefix,sys.base_exec_prefix,*sys.path]))"
)
# Host directories never bound whole, nor any directory that contains one of them: a
# Python installation under one is bound on its own, the rest stays hidden.
_PRIVATE = ("/", "/tmp", "/root", "/home", "/etc", "/var", "/run", "/proc", "/sys", "/dev",
            "/boot", "/srv", "/mnt", "/media", "/opt")  # fmt: skip
_layouts: dict[tuple[str, int, int], list[str]] = {}


def _interpreter_paths(python: str) -> list[str]:
    """The paths ``python -I`` needs: the directories of its executable (every symlink
    hop), its prefixes and its import path (site-packages, ``.pth`` additions)."""
    path = python if os.sep in python else shutil.which(python) or python
    hops = [path]
    while os.path.islink(path) and len(hops) < 40:
        path = os.path.join(os.path.dirname(path), os.readlink(path))
        hops.append(path)
    try:
        info = os.stat(hops[0])
    except OSError as exc:
        raise EnvironmentError_(f"SandboxREPL: no interpreter at {python}: {exc}") from exc
    key = (hops[0], info.st_ino, info.st_mtime_ns)
    if key not in _layouts:
        try:
            done = subprocess.run(
                [hops[0], "-I", "-c", _PROBE],
                capture_output=True,
                text=True,
                env=SAFE_ENV,
                cwd="/",
                timeout=60,
                check=True,
            )
            _layouts[key] = [str(p) for p in json.loads(done.stdout.strip().splitlines()[-1])]
        except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
            message = f"SandboxREPL: cannot run the interpreter {python}: {exc}"
            raise EnvironmentError_(message) from exc
    return [*(os.path.dirname(hop) for hop in hops), *_layouts[key]]


def _private_roots() -> set[str]:
    roots = set(_PRIVATE) | {tempfile.gettempdir(), os.path.expanduser("~")}
    return roots | {os.path.realpath(root) for root in roots}


def _covered(path: str, dirs: Sequence[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip(os.sep) + os.sep) for d in dirs)


def python_binds(python: str) -> list[str]:
    """Host paths to bind read-only, at the same place, so that ``python`` runs in the
    sandbox wherever it is installed: a venv under ``/tmp`` or ``$HOME``, ``/opt``,
    conda, pyenv. Paths under ``/usr`` are already visible; a directory that is or holds
    a private root (``/tmp``, ``$HOME``...) is never bound whole."""
    private, system = _private_roots(), ["/usr", *(f"/{n}" for n in _SYSTEM_DIRS)]
    found: set[str] = set()
    for entry in _interpreter_paths(python):
        path = os.path.normpath(entry) if os.path.isabs(entry) else ""
        if not path or not os.path.exists(path) or _covered(path, system):
            continue
        if any(_covered(root, [path]) for root in private):
            continue  # binding it would expose a private directory
        found.add(path)
    kept = sorted(found)
    # Drop paths inside another one already bound.
    return [p for p in kept if not _covered(p, [o for o in kept if o != p])]


class BwrapTransport(SubprocessTransport):
    """Runs the worker under bubblewrap (see the module docstring)."""

    files_survive_restart = False

    def __init__(
        self,
        limits: SandboxLimits,
        bwrap: str,
        python: str | None = None,
        ro_binds: Sequence[str] = (),
        run_as: tuple[int, int] | None = None,
    ) -> None:
        self.python_binds = python_binds(python or sys.executable)  # before the workdir
        self.host_user: HostUser | None = host_user(run_as)  # None: not a root host
        super().__init__(python)
        self.limits = limits
        self.bwrap = bwrap
        self.ro_binds = list(ro_binds)

    def environment(self) -> dict[str, str]:
        return dict(SAFE_ENV, HOME="/tmp", TMPDIR="/tmp")

    def _binds(self) -> list[tuple[str, str]]:
        """(host real path, place in the sandbox) of every read-only bind."""
        pairs = [(path, path) for path in [*self.python_binds, *self.ro_binds]]
        pairs.append((default_zipapp(), WORKER_PATH))
        return [(os.path.realpath(source), dest) for source, dest in pairs]

    def launch_argv(self, worker_args: Sequence[str]) -> list[str]:
        """As root: bubblewrap started as ``host_user``, never as root itself."""
        command = self.command(worker_args)
        if self.host_user is None:
            return command
        sources = [os.path.realpath(self.bwrap), *(source for source, _ in self._binds())]
        return [*user_argv(self.bwrap, sources, self.host_user, self.python), *command]

    def command(self, worker_args: Sequence[str]) -> list[str]:
        """The sandbox itself: bubblewrap running the worker."""
        argv = [self.bwrap, "--unshare-all", "--unshare-user", "--disable-userns"]
        argv += ["--uid", str(_SANDBOX_UID), "--gid", str(_SANDBOX_UID), "--cap-drop", "ALL"]
        argv += ["--die-with-parent", "--new-session"]
        argv += ["--ro-bind", "/usr", "/usr"]
        for name in _SYSTEM_DIRS:
            path = f"/{name}"
            if os.path.islink(path):
                argv += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                argv += ["--ro-bind", path, path]
        for path in ("/etc/ld.so.cache", "/etc/localtime"):
            argv += ["--ro-bind-try", path, path]
        argv += ["--proc", "/proc", "--dev", "/dev"]
        if self.limits.tmp_size_mb is not None:
            argv += ["--size", str(int(self.limits.tmp_size_mb) << 20)]
        argv += ["--tmpfs", "/tmp"]
        # After the tmpfs: an interpreter (or a bind) under /tmp is mounted over it.
        for source, dest in self._binds():
            argv += ["--ro-bind", source, dest]
        # /proc read-only too: no sysctl (/proc/sys) or /proc/sysrq-trigger write, even
        # by a sandbox user that owns the file on the host.
        argv += ["--remount-ro", "/", "--remount-ro", "/proc", "--chdir", "/tmp", "--clearenv"]
        for key, value in self.environment().items():
            argv += ["--setenv", key, value]
        argv += [self.python, "-I", WORKER_PATH, *worker_args]
        return argv
