"""What a transport is: it places one worker process somewhere and controls it.

A ``Transport`` launches the worker with the given worker arguments and hands back two
byte pipes (``WorkerPipes``), and can poll, wait for, kill and clean up that process.
It knows nothing of the protocol spoken over the pipes (that is
``rlm.environments.host.client``) nor of REPL semantics (``rlm.environments.worker``).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO


@dataclass
class WorkerPipes:
    """The worker's channel as seen from the host.

    ``to_worker`` needs ``write`` and ``flush``. ``from_worker`` is a binary file
    object, or any iterator of ``bytes`` chunks (what provider SDKs tend to give).
    """

    to_worker: IO[bytes]  # the worker's stdin
    from_worker: IO[bytes] | Iterator[bytes]  # the worker's stdout


class Transport(ABC):
    """Places and controls one worker process at a time (a new one after ``kill``).

    Implementations in this package: ``SubprocessTransport`` (a local child process,
    the base of ``BwrapTransport`` and ``DockerTransport``), ``ExecTransport`` (a
    provider's sandbox) and ``KernelTransport`` (a Jupyter kernel). A new placement only
    needs these methods; every REPL semantic lives in the worker and in ``WorkerEnv``.
    """

    #: Whether files the worker wrote survive a restart (told to the model if not).
    files_survive_restart: bool = True
    #: True if ``launch`` runs ``bootstrap_argv(...)``: the client then sends the
    #: zipapp on stdin first (for places where no file can be put beforehand).
    bootstrap: bool = False
    #: True if ``kill`` stops the worker and all it started at once (a local process
    #: group, a sandbox's PID namespace): closing then skips the ``shutdown`` request.
    close_by_kill: bool = False

    @abstractmethod
    def launch(self, worker_args: Sequence[str]) -> WorkerPipes:
        """Start the worker (``python -I worker.pyz *worker_args`` or equivalent)."""

    @abstractmethod
    def poll(self) -> int | None:
        """The exit status if the worker has exited (negative: killed by that signal)."""

    @abstractmethod
    def kill(self) -> None:
        """Stop the worker and everything it started, at once. Idempotent."""

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for the worker to exit; its status or None."""
        event = threading.Event()
        for _ in range(max(1, int(timeout / 0.01))):
            status = self.poll()
            if status is not None:
                return status
            event.wait(0.01)
        return self.poll()

    def stderr_tail(self) -> str:
        """The end of what the worker wrote to stderr (crash reports), if kept."""
        return ""

    def close(self) -> None:
        """Kill the worker and release everything (temp dirs, cgroups). Idempotent."""
        self.kill()
