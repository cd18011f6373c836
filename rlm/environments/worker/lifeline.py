"""The worker dies with its host, whatever cell it is running.

Four ways, because none covers every case alone:

* ``die_with_parent``: the kernel sends SIGKILL when the worker's parent exits
  (``PR_SET_PDEATHSIG``, Linux). It works even while a cell holds the GIL in C code.
  "Parent" is the *thread* that started the worker, so the host starts every worker
  from one long-lived thread (``transports.process.spawn``), and a wrapper in between
  (bubblewrap, the user switch) carries it on.
* ``guard``: a small process forked at start-up, in the worker's process group but not
  its child, that waits for the host to exit (a pidfd of the worker's parent; else the
  host's end of the worker's stdin closing), then kills the whole group: what cells
  started dies too, however the worker itself died, and no GIL is involved. It holds
  none of the worker's channel, and leaves quietly when the worker ends and the host
  does not within a few seconds (the host lives, and cleans up itself). Only a worker that
  leads its group has one: under bubblewrap (whose init leads it) the sandbox's PID
  namespace ends with its init, which bubblewrap ends with the host.
* ``host_gone``: called when the channel to the host closes (the host died, or closed
  it): the worker and everything in its process group are killed at once, instead of
  the worker waiting for a running cell (``while True: pass``) to end.
* ``watch_parent``: a thread that notices the worker's parent changing (it died and
  the worker was re-parented), where the first way is not available.

Standard library only, Python 3.9 compatible.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1
_POLL_SECONDS = 0.5
_WORKER_GONE_MS = 3000  # how long the guard of a dead worker waits for the host's hang-up


def die_with_parent() -> bool:
    """Have the kernel SIGKILL this process when its parent exits. False where that
    is not available (not Linux, no libc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)) == 0
    except Exception:
        return False


def end_everything(status: int = 1) -> None:
    """Kill this process and, if it leads its process group (every transport starts
    the worker so), everything the cells started in it. Never returns."""
    try:
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpid(), signal.SIGKILL)
    except OSError:
        pass
    os._exit(status)


def host_gone() -> None:
    """The channel to the host closed: nobody can use this worker any more."""
    end_everything(0)


def watch_parent(parent: int) -> None:
    """Start a thread that ends everything when this process's parent is no longer
    ``parent`` (as ``os.getppid()`` saw it at start-up)."""

    def watch() -> None:
        wait = threading.Event().wait
        while os.getppid() == parent:
            wait(_POLL_SECONDS)
        end_everything(1)

    threading.Thread(target=watch, name="rlm-worker-lifeline", daemon=True).start()


def _is_pipe(fd: int) -> bool:
    """Whether ``fd`` is a pipe (whose writer's end closing can be seen)."""
    import stat

    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        return False


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _pidfd(pid: int) -> int:
    """A pidfd of ``pid`` (Linux 5.3+), or -1."""
    try:
        return int(os.pidfd_open(pid))  # type: ignore[attr-defined,unused-ignore]
    except (AttributeError, OSError):
        return -1


def _guard_loop(worker: int, by_pidfd: bool) -> None:
    """The guard's life (a child of a child of ``worker``). Its fd 0 is the host's
    pidfd (``by_pidfd``: readable once the host has exited) or else the host's end of
    the worker's stdin pipe (hung up once the host is gone). Every other fd is closed,
    so the guard holds none of the worker's channel."""
    import select

    os.closerange(1, 1 << 16)
    watched = _pidfd(worker)  # readable once the worker has exited
    poller = select.poll()
    poller.register(0, select.POLLIN if by_pidfd else 0)  # 0: only POLLHUP / POLLERR
    if watched >= 0:
        poller.register(watched, select.POLLIN)
    gone = (select.POLLIN if by_pidfd else 0) | select.POLLHUP | select.POLLERR
    wait_ms = _POLL_SECONDS * 1000
    while True:
        ready = dict(poller.poll(wait_ms))
        if ready.get(0, 0) & gone:  # the host is gone
            with contextlib.suppress(OSError):
                os.killpg(worker, signal.SIGKILL)  # the worker's group, this guard included
            break
        if wait_ms == _WORKER_GONE_MS:
            break  # the worker ended while its host lives: the host cleans up, not us
        if watched in ready or not _exists(worker):
            # A dying host may signal its children (the worker) before it is all gone:
            # give its end a moment to show.
            if watched >= 0:
                poller.unregister(watched)
            wait_ms = _WORKER_GONE_MS
    os._exit(0)


def guard(channel_fd: int = 0) -> None:
    """Fork the guard (see the module docstring). It watches the worker's parent (the
    host) through a pidfd, or else ``channel_fd`` if that is a pipe from the host (the
    worker's stdin); otherwise there is none. Only for a worker that leads its process
    group: killing the group must never reach beyond the worker."""
    worker, parent = os.getpid(), os.getppid()
    if not hasattr(os, "fork") or os.getpgrp() != worker:
        return  # e.g. under bubblewrap's init, whose PID namespace ends with the worker
    host = _pidfd(parent) if parent > 1 else -1  # 0 or 1: a namespace's edge, not a host
    if host >= 0 and os.getppid() != parent:  # the host was already gone
        end_everything(1)
    if host < 0 and not _is_pipe(channel_fd):
        return
    try:
        first = os.fork()
    except OSError:
        first = -1
    if first:
        if host >= 0:
            os.close(host)
        with contextlib.suppress(OSError):
            if first > 0:
                os.waitpid(first, 0)
        return
    try:  # the middle process: leaves at once, so the guard is not the worker's child
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if os.fork() == 0:
            os.dup2(host if host >= 0 else channel_fd, 0)
            _guard_loop(worker, host >= 0)
    finally:
        os._exit(0)


def start(parent: int) -> None:
    """All of them, from the worker's start, before any thread: ``parent`` is
    ``os.getppid()`` taken as early as possible (a parent already gone before
    ``die_with_parent`` shows here)."""
    die_with_parent()
    if os.getppid() != parent:  # the host died before the signal was armed
        end_everything(1)
    guard()
    watch_parent(parent)
