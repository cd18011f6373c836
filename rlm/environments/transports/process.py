"""A transport that runs the worker as a local child process.

``SubprocessTransport`` runs ``python -I worker.pyz`` in a private temporary directory
with a scrubbed environment. Subclasses change only how the command is built (the
``sandbox`` transport wraps it in bubblewrap, and on a root host prefixes the switch to
an unprivileged user; a ``docker`` transport would wrap it in ``docker run -i``). The
worker gets its own process group, so a terminal's Ctrl-C does not reach it directly
and ``kill`` takes its children down with it.

Every worker is started from one long-lived thread (``spawn``): a worker dies with the
thread that started it (``PR_SET_PDEATHSIG``, armed by the worker and by bubblewrap's
``--die-with-parent``), so that thread must live as long as the host process, not as
long as a request's thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import IO, TypeVar

from rlm.environments.transports.base import Transport, WorkerPipes
from rlm.environments.transports.zipapp import default_zipapp

# What the worker inherits from the host's environment: nothing secret.
SAFE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
}

_TAIL_BYTES = 16 * 1024
T = TypeVar("T")


class _Spawner:
    """One daemon thread, for the life of the process, that starts worker processes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[tuple[Callable[[], object], Future[object]]]
        self._jobs = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def _serve(self) -> None:
        while True:
            job, future = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as exc:
                future.set_exception(exc)

    def run(self, job: Callable[[], T], discard: Callable[[T], object]) -> T:
        """``job()`` on the spawner thread. If the caller is interrupted while waiting
        (KeyboardInterrupt, a timeout), what ``job`` made is handed to ``discard``."""
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._jobs = queue.SimpleQueue()  # a forked child starts afresh
                self._thread = threading.Thread(target=self._serve, name="rlm-spawner", daemon=True)
                self._thread.start()
                self._pid = os.getpid()
            if threading.current_thread() is self._thread:
                return job()
            future: Future[T] = Future()
            self._jobs.put((job, future))  # type: ignore[arg-type]
        try:
            return future.result()
        except BaseException:
            if not future.cancel():
                future.add_done_callback(lambda done: done.exception() or discard(done.result()))
            raise


_spawner = _Spawner()


def spawn(job: Callable[[], T], discard: Callable[[T], object]) -> T:
    """Run ``job`` (which starts a process) on the process-wide spawner thread, so the
    process's parent thread lives as long as the host (see the module docstring)."""
    return _spawner.run(job, discard)


def _reap(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait up to ``timeout`` seconds for ``proc`` to exit, and reap it. Through a
    pidfd where there is one (Linux 5.3+): woken the moment it exits, where
    ``Popen.wait`` polls with growing sleeps (an exit 1.6 ms after a kill is seen at
    3.5 ms)."""
    if proc.returncode is not None:
        return
    waited = False
    with contextlib.suppress(AttributeError, OSError, ValueError):
        pidfd = os.pidfd_open(proc.pid)
        try:
            if proc.returncode is None:  # else reaped meanwhile: the pid may be another's
                poller = select.poll()  # (no FD_SETSIZE limit, unlike select)
                poller.register(pidfd, select.POLLIN)  # readable once it has exited
                poller.poll(timeout * 1000)
            waited = True
        finally:
            os.close(pidfd)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(0 if waited else timeout)  # reaps it at once if it has exited


def _discard_process(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        proc.wait(5)


class StderrTail:
    """Drains a pipe on a thread, keeping only its last bytes (for crash reports).

    A worker that floods its stderr cannot block on a full pipe or fill host memory."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._pipe = pipe
        self._tail = bytearray()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._drain, name="rlm-worker-stderr", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            while chunk := self._pipe.read(65536):
                with self._lock:
                    self._tail += chunk
                    del self._tail[:-_TAIL_BYTES]

    def text(self, wait: float = 0.0) -> str:
        if wait:
            self._thread.join(wait)  # let a dying worker's last words arrive
        with self._lock:
            return self._tail.decode("utf-8", "replace")


def _widen(pipe: IO[bytes]) -> None:
    """Use 1 MB pipe buffers (Linux): a large context then streams with 16x fewer
    wake-ups than through the default 64 kB."""
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setsize is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(pipe.fileno(), setsize, 1 << 20)


class SubprocessTransport(Transport):
    """The worker as a child process of the host, without isolation of its own."""

    close_by_kill = True  # its process group (bubblewrap: its PID namespace) dies at once

    def __init__(self, python: str | None = None, env: dict[str, str] | None = None) -> None:
        self.python = python or sys.executable
        self.env = dict(SAFE_ENV if env is None else env)
        self.workdir = tempfile.mkdtemp(prefix=f"rlmx_worker_{os.getpid()}_")
        self._proc: subprocess.Popen[bytes] | None = None
        self._tail: StderrTail | None = None
        self._closed = False

    # -- what to run (subclasses override) ---------------------------------------------

    def command(self, worker_args: Sequence[str]) -> list[str]:
        """The argv that starts the worker."""
        return [self.python, "-I", default_zipapp(), *worker_args]

    def launch_argv(self, worker_args: Sequence[str]) -> list[str]:
        """What ``launch`` runs: ``command``, after whatever must start it (a subclass
        may prefix it, e.g. with a switch to another user)."""
        return self.command(worker_args)

    def environment(self) -> dict[str, str]:
        """The child's complete environment (never the host's own)."""
        return dict(self.env, HOME=self.workdir, TMPDIR=self.workdir)

    # -- Transport ----------------------------------------------------------------------

    def launch(self, worker_args: Sequence[str]) -> WorkerPipes:
        if self._closed:
            raise RuntimeError("transport is closed")
        self.kill()
        argv, env = self.launch_argv(worker_args), self.environment()
        proc = spawn(
            lambda: subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=self.workdir,
                close_fds=True,
                start_new_session=True,
                bufsize=0,
            ),
            _discard_process,
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        for pipe in (proc.stdin, proc.stdout):
            _widen(pipe)
        self._proc = proc
        self._tail = StderrTail(proc.stderr)
        return WorkerPipes(to_worker=proc.stdin, from_worker=proc.stdout)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def poll(self) -> int | None:
        return self._proc.poll() if self._proc is not None else -signal.SIGKILL

    def wait(self, timeout: float) -> int | None:
        if self._proc is None:
            return -signal.SIGKILL
        _reap(self._proc, timeout)
        return self._proc.returncode

    def _signal_kill(self) -> None:
        """SIGKILL the worker and what it forked (its process group), if it runs."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                proc.kill()

    def kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        self._signal_kill()
        _reap(proc, 5)
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()

    def stderr_tail(self) -> str:
        return self._tail.text(wait=0.5) if self._tail is not None else ""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.close_by_kill:
            # The directory is removed while the killed worker dies (it runs no code
            # once SIGKILL is sent), and once more after it is reaped in case a system
            # call it was in made something meanwhile: on return it is dead (reaped)
            # and its directory gone. (Not where ``kill`` does more, e.g. docker's.)
            self._signal_kill()
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.kill()
        if os.path.lexists(self.workdir):
            shutil.rmtree(self.workdir, ignore_errors=True)
