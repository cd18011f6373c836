"""Who the sandbox runs as on the host: never root.

bubblewrap maps the sandbox's user (uid 65534 inside) to the host user that starts it.
Started by root, the sandbox's code would be host root without capabilities, which is
still enough to write every root-owned file it can see: ``/proc/sys/kernel/core_pattern``
(a ``|command`` there runs as host root at the next crash), ``vm/drop_caches``...
So when rlmx runs as root, bubblewrap is started as an unprivileged host user instead
(``HostUser``, uid/gid 65534 ``nobody`` by default), and makes its own unprivileged user
namespace exactly as it does for a non-root user.

That user may be unable to reach paths the sandbox binds: a Python under ``/root``
(mode 0700), a venv in a private temporary directory, the worker zipapp. ``user_argv``
then starts a first bubblewrap, still root and making only a mount namespace, that
covers each directory the user cannot enter with an empty tmpfs holding just the paths
to bind, at their real places. Nothing else of those directories becomes visible and
the host's mounts are unchanged. Then ``setpriv`` (or, without it, a few lines of the
host's Python) switches to the user and runs the sandbox.

The sandbox dies with the host. Switching users clears the parent-death signal, so the
switch sets it again (``--pdeathsig``). But the first bubblewrap drops its own
capabilities, so its death could not signal a process of another user: under it, a few
lines of Python (``_GUARDIAN``), still root with its capabilities, start the switch and
wait; they die with the first bubblewrap and their death kills the sandbox.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass

NOBODY = 65534

# The user switch when setpriv (util-linux) is missing: no supplementary groups, then
# the gid, then the uid (which drops every capability), then exec.
_SWITCH = (
    "import os,sys\ntry:\n import ctypes;p=ctypes.CDLL(None).prctl\nexcept Exception:\n p=None\n"
    "u,g=int(sys.argv[1]),int(sys.argv[2]);os.setgroups([]);"
    "os.setresgid(g,g,g);os.setresuid(u,u,u)\n"
    "if p:\n p(1,9)\n"  # PR_SET_PDEATHSIG, SIGKILL: the switch cleared it
    "os.execv(sys.argv[3],sys.argv[3:])"
)


@dataclass(frozen=True)
class HostUser:
    """An unprivileged host user and group to start bubblewrap as (never root)."""

    uid: int = NOBODY
    gid: int = NOBODY

    def __post_init__(self) -> None:
        if self.uid <= 0 or self.gid <= 0:
            raise ValueError(
                f"run_as={(self.uid, self.gid)}: the sandbox never runs as host root; "
                "name an unprivileged uid and gid"
            )

    def can_enter(self, info: os.stat_result) -> bool:
        """Whether this user (with no supplementary groups) may search a directory."""
        if info.st_uid == self.uid:
            return bool(info.st_mode & stat.S_IXUSR)
        if info.st_gid == self.gid:
            return bool(info.st_mode & stat.S_IXGRP)
        return bool(info.st_mode & stat.S_IXOTH)


def host_user(run_as: tuple[int, int] | None = None) -> HostUser | None:
    """Whom to start bubblewrap as: None (this process's own user) unless this process
    is root; then ``run_as`` (uid, gid) or 65534/65534."""
    user = HostUser(*run_as) if run_as is not None else HostUser()
    return user if os.geteuid() == 0 else None


def blocked_dir(path: str, user: HostUser) -> str | None:
    """The first directory on the way to ``path`` (a real path) that ``user`` cannot
    enter, or None. ``path`` itself is not checked: a cover cannot change its mode."""
    current = os.sep
    for part in path.split(os.sep)[1:-1]:
        try:
            info = os.stat(current)
        except OSError:
            return None  # let bubblewrap report the missing path
        if not user.can_enter(info):
            return current
        current = os.path.join(current, part)
    try:
        return None if user.can_enter(os.stat(current)) else current
    except OSError:
        return None


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip(os.sep) + os.sep)


def cover_argv(bwrap: str, paths: Iterable[str], user: HostUser) -> list[str]:
    """The first bubblewrap (run as root) that shows each of ``paths`` (real paths) at
    its place to ``user``, or [] when ``user`` already reaches them all."""
    paths = sorted(set(paths))
    for path in paths:
        if os.path.isdir(path) and not user.can_enter(os.stat(path)):
            raise PermissionError(
                f"the sandbox runs as host uid {user.uid} (never as root), which cannot "
                f"enter {path} (mode {stat.filemode(os.stat(path).st_mode)}), a directory "
                f"the sandbox needs (the interpreter or rlmx lives there): make it "
                f"searchable (chmod o+x {path}) or pass run_as=(uid, gid) for a user who can"
            )
    covers: dict[str, list[str]] = {}
    for path in paths:
        top = blocked_dir(path, user)
        if top is not None and not any(_inside(path, p) for p in covers.get(top, [])):
            covers.setdefault(top, []).append(path)
    if not covers:
        return []
    argv = [bwrap, "--dev-bind", "/", "/"]
    for top, inside in sorted(covers.items()):
        argv += ["--tmpfs", top]
        for path in inside:
            if os.path.dirname(path) != top:  # parents mode 0755, whatever bwrap's default
                argv += ["--dir", os.path.dirname(path)]
            argv += ["--ro-bind", path, path]
    return [*argv, "--die-with-parent", "--"]


# Between the first bubblewrap and the user switch (root, capabilities kept): dies with
# its parent, runs the rest as its child (whose parent-death signal it may send to
# another user) and exits as it did, 128 + N for signal N. Python 3.9 compatible.
_GUARDIAN = (
    "import os,sys\ntry:\n import ctypes;ctypes.CDLL(None).prctl(1,9)\nexcept Exception:\n pass\n"
    "p=os.fork()\nif p==0:\n os.execv(sys.argv[1],sys.argv[1:])\n"
    "while True:\n try:\n  s=os.waitpid(p,0)[1];break\n except InterruptedError:\n  pass\n"
    "c=os.waitstatus_to_exitcode(s);os._exit(128-c if c<0 else c)"
)
_pdeathsig: dict[str, bool] = {}


def _has_pdeathsig(setpriv: str) -> bool:
    """Whether this ``setpriv`` has ``--pdeathsig`` (util-linux 2.33 and later)."""
    if setpriv not in _pdeathsig:
        try:
            done = subprocess.run(
                [setpriv, "--help"], capture_output=True, text=True, timeout=30, check=False
            )
            _pdeathsig[setpriv] = "--pdeathsig" in done.stdout
        except (OSError, subprocess.SubprocessError):
            _pdeathsig[setpriv] = False
    return _pdeathsig[setpriv]


def switch_argv(user: HostUser) -> list[str]:
    """The argv prefix that runs a command as ``user``, without supplementary groups."""
    setpriv = shutil.which("setpriv")
    if setpriv is not None and _has_pdeathsig(setpriv):
        return [setpriv, f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups",
                "--pdeathsig=SIGKILL", "--"]  # fmt: skip
    return [sys.executable, "-I", "-S", "-c", _SWITCH, str(user.uid), str(user.gid)]


def user_argv(
    bwrap: str, paths: Iterable[str], user: HostUser, python: str | None = None
) -> list[str]:
    """The argv prefix (for a root host) that runs a command, given by absolute path,
    as ``user`` with each of ``paths`` (real paths) readable at its place. ``python``
    (default: this one), which must be among ``paths``, runs the guardian."""
    cover = cover_argv(bwrap, paths, user)
    if cover:
        cover += [python or sys.executable, "-I", "-S", "-c", _GUARDIAN]
    return [*cover, *switch_argv(user)]
