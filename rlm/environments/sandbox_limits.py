"""Resource limits of the sandbox worker: rlimits, plus a pids cgroup when needed.

The rlimits are applied by the worker to itself at start-up, before it reads any
request (``--rlimit NAME=VALUE``), so they hold for everything cell code starts. The
sandboxed worker has no capabilities, so it cannot raise them back.

``RLIMIT_NPROC`` counts processes per user and the kernel does not enforce it for
root. When the host runs as root, the process cap is therefore also enforced with a
pids cgroup (cgroup v1 ``pids`` or a delegated v2 subtree) where one can be created;
if none can, a warning says the fork-bomb guard is missing.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

_MB = 1 << 20
_ids = itertools.count()


@dataclass(frozen=True)
class SandboxLimits:
    """Per-worker limits; ``None`` leaves a limit unset.

    Defaults: 4096 MB address space, 3600 CPU seconds over the worker's life (the
    worker is restarted and restored when it hits the limit), 64 processes/threads,
    1024 MB per written file, 256 open files, and a 1024 MB private ``/tmp``.
    """

    memory_mb: int | None = 4096  # RLIMIT_AS (virtual memory; MemoryError beyond)
    cpu_seconds: int | None = 3600  # RLIMIT_CPU
    max_processes: int | None = 64  # RLIMIT_NPROC (+ pids cgroup as root)
    max_file_size_mb: int | None = 1024  # RLIMIT_FSIZE (EFBIG beyond)
    max_open_files: int | None = 256  # RLIMIT_NOFILE
    tmp_size_mb: int | None = 1024  # size of the tmpfs working directory (bwrap only)

    def worker_args(self, processes: bool = True) -> list[str]:
        """``--rlimit`` arguments for the worker (``processes=False`` leaves NPROC out:
        without a user namespace it would count every process of the host user)."""
        pairs = [
            ("AS", self.memory_mb, _MB),
            ("CPU", self.cpu_seconds, 1),
            ("NPROC", self.max_processes if processes else None, 1),
            ("FSIZE", self.max_file_size_mb, _MB),
            ("NOFILE", self.max_open_files, 1),
            ("CORE", 0, 1),
        ]
        args: list[str] = []
        for name, value, unit in pairs:
            if value is not None:
                args += ["--rlimit", f"{name}={int(value * unit)}"]
        return args


def _own_cgroup_dirs() -> list[Path]:
    """Where a child pids cgroup could go: under our own cgroup (v1 ``pids``
    hierarchy or v2 unified), most specific first."""
    root = Path("/sys/fs/cgroup")
    found: list[Path] = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            relative = path.lstrip("/")
            if "pids" in controllers.split(","):
                found.append(root / "pids" / relative)
            elif controllers == "":
                found.append(root / relative)
    return found


class PidsCgroup:
    """A cgroup whose ``pids.max`` caps the sandbox's process count."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, max_pids: int) -> PidsCgroup | None:
        """A new pids cgroup, or None where the host cannot make one."""
        for parent in _own_cgroup_dirs():
            path = parent / f"rlmx-{os.getpid()}-{next(_ids)}"
            try:
                path.mkdir()
            except OSError:
                continue
            try:
                (path / "pids.max").write_text(str(max_pids))
                return cls(path)
            except OSError:
                with contextlib.suppress(OSError):
                    path.rmdir()
        return None

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` run from inside the cgroup (a shell joins it, then execs ``argv``,
        so the sandbox is in the cgroup before its first fork)."""
        join = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
        return ["/bin/sh", "-c", join, str(self.path), *argv]

    def remove(self) -> None:
        """Delete the cgroup once its processes are gone (best effort)."""
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02)


def process_guard(limits: SandboxLimits) -> PidsCgroup | None:
    """The pids cgroup a root host needs for ``max_processes`` (None otherwise)."""
    if limits.max_processes is None or os.geteuid() != 0:
        return None
    group = PidsCgroup.create(limits.max_processes)
    if group is None:
        warnings.warn(
            "max_processes is not enforced: RLIMIT_NPROC does not apply to root and no "
            "pids cgroup could be created. Run as a non-root user to guard against fork bombs.",
            RuntimeWarning,
            stacklevel=3,
        )
    return group
