"""SandboxREPL: the worker under bubblewrap, the isolated default on Linux.

A composition: ``WorkerEnv`` (``rlm.environments.host``) driving a worker that
``BwrapTransport`` (``rlm.environments.transports.bwrap``) places in a sandbox, with the
rlimits of ``SandboxLimits``. What the sandboxed worker gets:

* no network (its own empty network namespace), its own PID, IPC, UTS and cgroup
  namespaces, and a user namespace with every capability dropped (so it cannot
  remount anything) and no further user namespaces;
* never host root: the sandbox's user is the host user that starts bubblewrap, and
  when rlmx runs as root that is an unprivileged one (uid/gid 65534 by default,
  ``run_as``; see ``rlm.environments.transports.sandbox_user``);
* a fresh ``/proc`` mounted read-only, so ``/proc/sys`` and ``/proc/sysrq-trigger``
  cannot be written whoever the user is;
* a read-only view of ``/usr`` (and the ``/lib*``, ``/bin``, ``/sbin`` links), of
  ``/etc/ld.so.cache`` and ``/etc/localtime`` only, of the Python installation and
  of the worker zipapp; nothing of ``$HOME``, ``/root``, ``/home``, ``/tmp``, ``/var``,
  ``/run`` or the rest of ``/etc``;
* the Python installation at its real paths wherever it lives (a venv under ``/tmp``
  or ``$HOME``, ``/opt``, conda, pyenv): the interpreter is asked for its prefixes and
  import path (``python_binds``) and exactly those directories are bound, never a
  directory that is or contains ``/tmp``, ``$HOME``, ``/root``, ``/home``, ``/etc``...;
* a private, size-capped tmpfs at ``/tmp``, which is its working directory (lost when
  the worker is restarted); an interpreter bound under ``/tmp`` is mounted over it;
* a scrubbed environment (``PATH``, ``LANG``, ``LC_ALL``, ``HOME=/tmp``, ``TMPDIR``);
  bubblewrap itself is started with that environment too, so no API key is visible
  anywhere in the sandbox, not even in ``/proc/1/environ``;
* ``--die-with-parent`` and ``--new-session``;
* the rlimits of ``SandboxLimits`` (address space, CPU seconds, processes, file size,
  open files), each configurable.

``isolation="process"`` runs the same worker as a plain subprocess (private temp dir,
scrubbed environment, rlimits except the process count) with none of the above, and
warns that it does.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import warnings
from collections.abc import Hashable, Sequence
from typing import Any, Literal

from rlm.base.errors import EnvironmentError_
from rlm.environments.base_env import IsolatedEnv
from rlm.environments.host.worker_env import WorkerEnv
from rlm.environments.transports.bwrap import BwrapTransport
from rlm.environments.transports.process import SubprocessTransport
from rlm.environments.transports.sandbox_limits import SandboxLimits

Isolation = Literal["bwrap", "process"]

BWRAP_INSTALL_HINT = (
    "The 'sandbox' environment needs bubblewrap (bwrap), which was not found. Install it "
    "with `sudo apt-get install bubblewrap` (Debian/Ubuntu; `dnf install bubblewrap` on "
    "Fedora), or pass environment_kwargs={'isolation': 'process'} to run the worker "
    "without isolation."
)


class SandboxREPL(WorkerEnv, IsolatedEnv):
    """A persistent REPL whose code runs in a bubblewrap sandbox (Linux).

    Keyword arguments (``environment_kwargs``), besides WorkerEnv's (``cell_timeout``
    default 120 s, ``interrupt_grace`` 2 s, ``output_limit`` 1,000,000 characters per
    stream, ``snapshot_limit_mb`` 1024, ``snapshots`` True):

    * ``isolation``: ``"bwrap"`` (default) or ``"process"`` (no namespaces: warns);
    * ``memory_mb`` (4096), ``cpu_seconds`` (3600), ``max_processes`` (64),
      ``max_file_size_mb`` (1024), ``max_open_files`` (256), ``tmp_size_mb`` (1024):
      the limits of ``SandboxLimits``; ``None`` disables one;
    * ``python``: the interpreter to run (default: this one); its installation and
      import path are bound read-only wherever they are (``transports.bwrap.python_binds``);
    * ``ro_binds``: extra host paths to show read-only inside the sandbox;
    * ``bwrap_path``: where bubblewrap is (default: found on ``PATH``);
    * ``run_as``: ``(uid, gid)`` of the unprivileged host user bubblewrap runs as when
      rlmx runs as root (default ``(65534, 65534)``; never 0; ignored otherwise);
    * ``warm_spare`` (True): under an ``RLM``, take a warm spare worker (started ahead,
      never used) and start the next one in the background; ``False`` starts each
      environment's worker on demand and keeps no spare (``host.spares``).
    """

    def __init__(
        self,
        isolation: Isolation = "bwrap",
        memory_mb: int | None = 4096,
        cpu_seconds: int | None = 3600,
        max_processes: int | None = 64,
        max_file_size_mb: int | None = 1024,
        max_open_files: int | None = 256,
        tmp_size_mb: int | None = 1024,
        python: str | None = None,
        ro_binds: Sequence[str] = (),
        bwrap_path: str | None = None,
        run_as: tuple[int, int] | None = None,
        **kwargs: Any,
    ) -> None:
        self.isolation = isolation
        self.limits = SandboxLimits(
            memory_mb, cpu_seconds, max_processes, max_file_size_mb, max_open_files, tmp_size_mb
        )
        if isolation == "process":
            warnings.warn(
                "SandboxREPL(isolation='process') runs model code as a plain subprocess: "
                "no filesystem, network or process isolation (only a scrubbed environment "
                "and rlimits). Use it only for trusted code.",
                RuntimeWarning,
                stacklevel=3,
            )
            bwrap = ""
        elif isolation == "bwrap":
            bwrap = bwrap_path or shutil.which("bwrap") or "/usr/bin/bwrap"
            if not os.access(bwrap, os.X_OK):
                raise EnvironmentError_(BWRAP_INSTALL_HINT)
        else:
            raise ValueError(f"isolation must be 'bwrap' or 'process', not {isolation!r}")
        placement = (isolation, self.limits, python or sys.executable, tuple(ro_binds), bwrap)
        self._placement = (*placement, tuple(run_as) if run_as is not None else None)
        # A factory: WorkerEnv calls it, unless a warm spare of this placement is ready.
        transport = functools.partial(_transport, *placement, run_as)
        super().__init__(transport, **kwargs)

    def spare_key(self) -> Hashable:
        return (type(self).__qualname__, self._placement, tuple(self.worker_args()))

    def worker_args(self) -> list[str]:
        processes = self.isolation == "bwrap"
        return [*super().worker_args(), *self.limits.worker_args(processes)]


def _transport(
    isolation: Isolation,
    limits: SandboxLimits,
    python: str,
    ro_binds: Sequence[str],
    bwrap: str,
    run_as: tuple[int, int] | None,
) -> SubprocessTransport:
    """A new transport for one worker of this placement (checked by SandboxREPL)."""
    if isolation == "process":
        return SubprocessTransport(python)
    return BwrapTransport(limits, bwrap, python, ro_binds, run_as)
