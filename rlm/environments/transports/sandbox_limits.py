"""Resource limits of the sandbox worker (rlimits).

The rlimits are applied by the worker to itself at start-up, before it reads any
request (``--rlimit NAME=VALUE``), so they hold for everything cell code starts. The
sandboxed worker has no capabilities, so it cannot raise them back.

``RLIMIT_NPROC`` counts processes per user and the kernel does not enforce it for host
root. The sandbox never runs as host root (``sandbox_user``: on a root host bubblewrap
is started as an unprivileged user), so the process cap holds there too. Since Linux
5.14 it counts the processes of the sandbox's own user namespace; older kernels count
every process of the host user.
"""

from __future__ import annotations

from dataclasses import dataclass

_MB = 1 << 20


@dataclass(frozen=True)
class SandboxLimits:
    """Per-worker limits; ``None`` leaves a limit unset.

    Defaults: 4096 MB address space, 3600 CPU seconds over the worker's life (the
    worker is restarted and restored when it hits the limit), 64 processes/threads,
    1024 MB per written file, 256 open files, and a 1024 MB private ``/tmp``.
    """

    memory_mb: int | None = 4096  # RLIMIT_AS (virtual memory; MemoryError beyond)
    cpu_seconds: int | None = 3600  # RLIMIT_CPU
    max_processes: int | None = 64  # RLIMIT_NPROC (threads included)
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
