"""The transport of IPythonREPL: one Jupyter kernel serving the worker protocol.

``KernelTransport`` starts a kernel with ``jupyter_client.KernelManager`` (in a
private working directory, with a scrubbed environment) and runs the worker's
``kernel_agent`` in it, which connects back over a Unix socket in a private directory
and proves itself with a one-time token; that socket is the worker's channel. Killing
the worker kills the kernel's process group. ``run_next_cell`` and ``interrupt`` are
the kernel's own means, used by ``rlm.environments.host.kernel_env.KernelSupervisor``.
The kernel dies with this process, whatever its cell is doing (``worker.lifeline``).
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlm.base.errors import MissingExtraError, WorkerCrashedError, WorkerTimeoutError
from rlm.environments.transports.base import Transport, WorkerPipes
from rlm.environments.transports.process import SAFE_ENV, StderrTail, spawn
from rlm.environments.transports.zipapp import default_zipapp
from rlm.environments.worker import kernel_agent

_AGENT = Path(kernel_agent.__file__).read_text("utf-8")
_TOKEN_BYTES = 16


def _kernel_manager_class() -> Any:
    try:
        import ipykernel  # noqa: F401  (the kernel the manager starts)
        import jupyter_client  # noqa: F401  (the package: a missing install fails here)
        from jupyter_client.manager import KernelManager
    except ImportError:
        raise MissingExtraError("The ipython environment", "ipython", "ipykernel") from None
    return KernelManager


def _discard_kernel(km: Any) -> None:
    """Kill a kernel started for a caller that stopped waiting for it."""
    with contextlib.suppress(Exception):
        km.shutdown_kernel(now=True)


class KernelTransport(Transport):
    """One Jupyter kernel at a time, serving the worker protocol over a Unix socket."""

    def __init__(self, kernel_name: str = "python3", env: dict[str, str] | None = None) -> None:
        self._manager_class = _kernel_manager_class()
        self.kernel_name = kernel_name
        self.workdir = tempfile.mkdtemp(prefix=f"rlmx_ipython_{os.getpid()}_")
        self._private = tempfile.mkdtemp(prefix=f"rlmx_ipython_sock_{os.getpid()}_")  # 0700
        self.address = os.path.join(self._private, "host.sock")
        self.extra_env = dict(env or {})
        self.start_timeout = 60.0
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.address)
        self._listener.listen(4)
        self._km: Any = None
        self._kc: Any = None
        self._conn: socket.socket | None = None
        self._files: list[Any] = []  # the socket's file objects (they hold its fd)
        self._pipes: list[Any] = []  # the last kernel's stdio pipes
        self._tail: StderrTail | None = None
        self._closed = False

    # -- Transport --------------------------------------------------------------------

    def launch(self, worker_args: Sequence[str]) -> WorkerPipes:
        if self._closed:
            raise RuntimeError("transport is closed")
        self.kill()
        for pipe in self._pipes:  # the previous kernel's; its crash report was read
            with contextlib.suppress(OSError):
                pipe.close()
        km = self._manager_class(kernel_name=self.kernel_name)
        environment = dict(SAFE_ENV, HOME=self.workdir, TMPDIR=self.workdir, **self.extra_env)
        # From the spawner thread: the kernel dies with its parent thread (the agent
        # arms PR_SET_PDEATHSIG), which must live as long as this process.
        spawn(
            lambda: km.start_kernel(
                cwd=self.workdir, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            ),
            lambda _: _discard_kernel(km),
        )
        self._km = km
        process = getattr(km.provisioner, "process", None)
        if process is not None:
            self._pipes = [p for p in (process.stdin, process.stderr) if p is not None]
        if process is not None and process.stderr is not None:
            self._tail = StderrTail(process.stderr)
        kc = km.client()
        kc.start_channels(shell=True, iopub=False, stdin=False, hb=False, control=False)
        self._kc = kc
        try:
            kc.wait_for_ready(timeout=self.start_timeout)
        except RuntimeError as exc:
            raise WorkerCrashedError(f"the kernel did not start: {exc}") from None
        token = secrets.token_hex(_TOKEN_BYTES)
        call = f"{list(worker_args)!r}"
        code = (
            "import types as _t, sys as _s\n"
            "_m = _t.ModuleType('rlmx_ipython_agent')\n"
            f"exec(compile({_AGENT!r}, 'rlmx_ipython_agent', 'exec'), _m.__dict__)\n"
            "_s.modules[_m.__name__] = _m\n"
            f"__rlmx__ = _m.start({default_zipapp()!r}, {self.address!r}, {token!r}, {call})\n"
            "del _t, _s, _m\n"
        )
        kc.execute(code, silent=True, store_history=False, allow_stdin=False)
        self._conn = conn = self._accept(token)
        self._files = [conn.makefile("wb", buffering=0), conn.makefile("rb", buffering=0)]
        return WorkerPipes(*self._files)

    def _accept(self, token: str) -> socket.socket:
        """The agent's connection; fails early if the bootstrap cell failed."""
        deadline = time.monotonic() + self.start_timeout
        self._listener.settimeout(0.05)
        while time.monotonic() < deadline:
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                self._check_bootstrap()
                continue
            conn.settimeout(5.0)
            try:
                received = conn.recv(len(token), socket.MSG_WAITALL)
            except OSError:
                received = b""
            if hmac.compare_digest(received, token.encode("ascii")):
                conn.settimeout(None)
                return conn
            conn.close()  # not our kernel
        raise WorkerTimeoutError(f"the kernel's agent did not connect in {self.start_timeout:g} s")

    def _check_bootstrap(self) -> None:
        if self.poll() is not None:
            raise WorkerCrashedError("the kernel died while starting")
        kc = self._kc
        while kc is not None and kc.shell_channel.msg_ready():
            reply = kc.get_shell_msg(timeout=0).get("content", {})
            if reply.get("status") == "error":
                error = f"{reply.get('ename')}: {reply.get('evalue')}"
                raise WorkerCrashedError(f"the kernel could not start the agent ({error})")

    def run_next_cell(self) -> None:
        """Have the kernel run the next cell it receives, as an execute_request."""
        kc = self._kc
        if kc is None:
            return
        with contextlib.suppress(Exception):
            while kc.shell_channel.msg_ready():  # earlier replies: nothing to learn
                kc.get_shell_msg(timeout=0)
        kc.execute(
            "__rlmx__.run_next_cell()",
            silent=False,
            store_history=True,
            allow_stdin=False,
            stop_on_error=False,
        )

    def interrupt(self) -> None:
        km = self._km
        if km is not None:
            with contextlib.suppress(Exception):
                km.interrupt_kernel()

    @property
    def pid(self) -> int | None:
        process = getattr(self._km.provisioner, "process", None) if self._km else None
        return process.pid if process is not None else None

    def poll(self) -> int | None:
        process = getattr(self._km.provisioner, "process", None) if self._km else None
        return process.poll() if process is not None else -signal.SIGKILL

    def wait(self, timeout: float) -> int | None:
        process = getattr(self._km.provisioner, "process", None) if self._km else None
        if process is None:
            return -signal.SIGKILL
        try:
            return int(process.wait(timeout))
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        km, kc, conn = self._km, self._kc, self._conn
        self._kc = self._conn = None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            for file in [*self._files, conn]:
                with contextlib.suppress(OSError):
                    file.close()
            self._files = []
        if kc is not None:
            with contextlib.suppress(Exception):
                kc.stop_channels()
        if km is None:
            return
        pid = self.pid
        if pid is not None and self.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)  # the kernel and what its cells started
        with contextlib.suppress(Exception):
            km.shutdown_kernel(now=True)
        self.wait(5.0)

    def stderr_tail(self) -> str:
        return self._tail.text(wait=0.5) if self._tail is not None else ""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.kill()
        for pipe in self._pipes:
            with contextlib.suppress(OSError):
                pipe.close()
        self._km = None
        self._listener.close()
        shutil.rmtree(self._private, ignore_errors=True)
        shutil.rmtree(self.workdir, ignore_errors=True)
