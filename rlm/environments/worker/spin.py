"""Reading a pipe without paying for a wake-up: poll briefly before blocking.

A thread blocked in ``read`` on an empty pipe is put to sleep, and the writer's data
then has to wake it. On a VM that wake-up, across CPUs, costs tens of microseconds
(measured on the 2-core CI machine: a bare two-process pipe ping-pong takes 46 us a
round trip with blocking reads, 4 us with readers that poll first), which is most of
what a sub-call or a small cell costs in a sandbox.

So ``SpinReader`` polls the descriptor for up to ``spin`` seconds before it sleeps, but
only while a message is due soon (its ``when()``: a reply to a request in flight, the
next request to an idle worker), and never inside a stream: a bulk transfer goes
faster when the reader sleeps and is woken with larger pieces (a 500 MB context took
~555 ms with polling readers, ~487 ms without). A reader that expects nothing sleeps at once, and one
that is already asleep when a message becomes due is nudged (``nudge``) so that it
polls from then on; the nudge's wake-up happens while the peer is still working, off
the path the message takes. Between polls the reader yields the CPU, and at most
``max_spinners()`` readers of a process poll at once, so polling never takes a CPU
that has real work to do. A message that comes within the window is read at once; one
that does not costs the window's CPU time once, then a normal sleep.

Standard library only, Python 3.9 compatible.
"""

from __future__ import annotations

import contextlib
import io
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Any

# How long a reader polls before it sleeps. It covers a fast exchange (a small cell and
# its reply, a sub-call answered by a fast model); waits on real models are far longer.
DEFAULT_SPIN = 0.0005

_spinning = [0]  # readers of this process polling right now
_spinning_lock = threading.Lock()


def max_spinners() -> int:
    """How many readers of a process may poll at once: one CPU is left for the work
    (none polls on a single CPU, where the writer could only run once the poller stops)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(0, cpus - 1) if hasattr(select, "poll") else 0


class GiveWay(Exception):
    """Raised by a read that was asked to stop waiting (``SpinReader.give_way``);
    it has taken nothing from the channel."""


class SpinReader(io.RawIOBase):
    """A raw binary reader over ``raw`` (an unbuffered file over a pipe or socket)
    whose reads poll for up to ``spin`` seconds before they sleep, while ``when()``
    says a message is due. Buffer it (``spinning_reader``): it is asked for more only
    when the buffer is empty, i.e. exactly when a read would wait."""

    def __init__(self, raw: Any, spin: float = DEFAULT_SPIN) -> None:
        super().__init__()
        self._raw = raw
        self._fd = int(raw.fileno())
        self.when: Callable[[], bool] = lambda: True
        # Whether this read should stop waiting and raise GiveWay (asked before each
        # wait, and again after a nudge): another thread is to read instead.
        self.give_way: Callable[[], bool] = lambda: False
        self._cap = max_spinners() if spin > 0 else 0
        self._spin = spin
        self._asleep = False  # in the sleeping poll, where only a nudge makes it spin
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self._ready = select.poll()  # the channel alone: polled with no timeout
        self._ready.register(self._fd, select.POLLIN)
        self._sleep = select.poll()  # the channel or a nudge
        self._sleep.register(self._fd, select.POLLIN)
        self._sleep.register(self._wake_r, select.POLLIN)

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def nudge(self) -> None:
        """A message is now due, or the reader is to give way: a reader asleep on the
        channel wakes and asks ``give_way`` and ``when`` again."""
        if self._asleep:
            with contextlib.suppress(OSError):  # full: a nudge is pending already
                os.write(self._wake_w, b"!")

    def readinto(self, buffer: Any) -> int | None:
        # Data, end of file and errors all make the channel ready: the read then returns
        # at once. A signal raised while waiting has taken nothing off the channel.
        while not self._ready.poll(0):
            self._asleep = True  # before ``when``: a nudge after this is not lost
            try:
                if self.give_way():
                    raise GiveWay
                if self._cap and self.when() and self._poll_for_a_while():
                    break
                if any(fd == self._fd for fd, _ in self._sleep.poll()):
                    break
                with contextlib.suppress(OSError):  # nudged: drain, and look again
                    os.read(self._wake_r, 4096)
            finally:
                self._asleep = False
        return self._raw.readinto(buffer)  # type: ignore[no-any-return]

    def _poll_for_a_while(self) -> bool:
        """Poll the channel for up to ``spin`` seconds; True once it is ready."""
        with _spinning_lock:
            if _spinning[0] >= self._cap:
                return False
            _spinning[0] += 1
        try:
            deadline = time.perf_counter() + self._spin
            while time.perf_counter() < deadline:
                if self._ready.poll(0):
                    return True
                os.sched_yield()
            return False
        finally:
            with _spinning_lock:
                _spinning[0] -= 1

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._raw.close()
        finally:
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
            super().close()


def spinning_reader(raw: Any, buffer_size: int, spin: float = DEFAULT_SPIN) -> io.BufferedReader:
    """``raw`` (an unbuffered file over a pipe or socket) buffered, polling first."""
    return io.BufferedReader(SpinReader(raw, spin), buffer_size)
