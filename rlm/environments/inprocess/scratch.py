"""A REPL's scratch folder (relative ``open`` paths land there), made on first use, and
the sweep of folders left behind by processes that died without cleaning up.

Most runs never open a relative path, so the folder is made only when something asks
for it: making and removing one was a tenth of ``rlm serve``'s CPU per one-shot request.
Its name carries the owner's pid (``rlmx_repl_<pid>_<random>``), as do the workers',
kernels' and the worker zipapp's folders (``HOST_PREFIXES``). A process killed with
``kill -9`` cannot remove its folders; ``sweep_orphans`` (run by ``rlm serve`` at
start-up) removes those whose owner is gone.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable

PREFIX = "rlmx_repl_"
# Every per-process temporary folder rlmx makes on the host, named <prefix><pid>_...:
# LocalREPL's, a worker's, a kernel's (and its socket's), the worker zipapp's.
HOST_PREFIXES = (
    PREFIX,
    "rlmx_worker_",
    "rlmx_ipython_",
    "rlmx_ipython_sock_",
    "rlmx-worker-",
)


def remove_tree(path: str) -> None:
    """Remove ``path``: one ``rmdir`` when it is empty (the usual case), else the tree."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError:
        shutil.rmtree(path, ignore_errors=True)


class ScratchDir:
    """A private temporary folder (mode 0700, ``tempfile.mkdtemp``) made by the first
    ``path()``; removed by ``remove()``, at garbage collection or at exit."""

    def __init__(self, prefix: str = PREFIX) -> None:
        self._prefix = prefix
        self._path: str | None = None
        self._lock = threading.Lock()
        self._finalizer: weakref.finalize[..., ScratchDir] | None = None

    @property
    def made(self) -> bool:
        return self._path is not None

    def path(self) -> str:
        path = self._path
        if path is not None:
            return path
        with self._lock:
            if self._path is None:
                made = tempfile.mkdtemp(prefix=f"{self._prefix}{os.getpid()}_")
                self._finalizer = weakref.finalize(self, remove_tree, made)
                self._path = made
            return self._path

    def __call__(self) -> str:
        return self.path()

    def remove(self) -> None:
        with self._lock:
            if self._finalizer is not None:
                self._finalizer()


def _owner_alive(pid: int, made_at: float) -> bool:
    """True if process ``pid`` exists and is the one that made a folder at ``made_at``
    (a process started after the folder was made is a later process reusing the pid)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    started = _start_time(pid)
    return started is None or started <= made_at + 1.0  # unknown: taken as the owner


def _start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), from ``/proc`` (Linux)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        with open("/proc/stat", "rb") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
        ticks = int(stat[stat.rindex(b")") + 2 :].split()[19])  # field 22: starttime
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def sweep_orphans(
    prefixes: Iterable[str] = HOST_PREFIXES, root: str | None = None, min_age: float = 0.0
) -> list[str]:
    """Remove the folders under ``root`` (the temp folder) named ``<prefix><pid>_…``
    that this user owns and whose process is gone; the paths removed. Folders of live
    processes, of other users and older names without a pid are left alone."""
    root = root or tempfile.gettempdir()
    pattern = re.compile("(?:" + "|".join(re.escape(p) for p in prefixes) + r")(\d+)_")
    uid = os.getuid() if hasattr(os, "getuid") else None
    removed: list[str] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not entry.is_dir(follow_symlinks=False) or (uid is not None and info.st_uid != uid):
            continue
        if time.time() - info.st_mtime < min_age:
            continue
        if _owner_alive(int(match.group(1)), info.st_ctime):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        if not os.path.exists(entry.path):
            removed.append(entry.path)
    return removed
