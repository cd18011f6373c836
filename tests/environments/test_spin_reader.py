"""SpinReader: a pipe reader that polls before it sleeps, only while a message is due.

Real pipes and threads throughout; what is asserted is what a reader of the channel
sees (the bytes, end of file, nothing lost to an interrupted wait) and when the reader
chooses to poll (its ``when`` is consulted only where polling is allowed).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from rlm.environments.worker.protocol import Channel
from rlm.environments.worker.spin import SpinReader, max_spinners, spinning_reader


@pytest.fixture
def pipe() -> Iterator[tuple[SpinReader, int]]:
    r, w = os.pipe()
    reader = SpinReader(io.FileIO(r, "rb"))
    try:
        yield reader, w
    finally:
        reader.close()
        with contextlib.suppress(OSError):
            os.close(w)


def _write_later(fd: int, data: bytes, delay: float) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        os.write(fd, data)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_data_already_there_is_read_without_asking_when(pipe: tuple[SpinReader, int]) -> None:
    reader, w = pipe
    asked: list[bool] = []
    reader.when = lambda: asked.append(True) or True
    os.write(w, b"hello")
    buf = bytearray(16)
    assert reader.readinto(buf) == 5
    assert bytes(buf[:5]) == b"hello"
    assert asked == []  # ready at once: no decision to make


def test_a_sleeping_read_returns_when_data_arrives(pipe: tuple[SpinReader, int]) -> None:
    reader, w = pipe
    reader.when = lambda: False  # nothing due: sleeps at once
    writer = _write_later(w, b"late", 0.05)
    buf = bytearray(8)
    assert reader.readinto(buf) == 4
    assert bytes(buf[:4]) == b"late"
    writer.join()


def test_end_of_file_is_seen(pipe: tuple[SpinReader, int]) -> None:
    reader, w = pipe
    reader.when = lambda: True
    os.write(w, b"x")
    os.close(w)
    buf = bytearray(4)
    assert reader.readinto(buf) == 1
    assert reader.readinto(buf) == 0


@pytest.mark.skipif(max_spinners() == 0, reason="polling needs two CPUs")
def test_a_nudge_makes_a_sleeping_reader_look_again(pipe: tuple[SpinReader, int]) -> None:
    reader, w = pipe
    due = threading.Event()
    asked = threading.Event()

    def when() -> bool:
        if due.is_set():
            asked.set()
        return due.is_set()

    reader.when = when
    result: list[bytes] = []

    def read() -> None:
        buf = bytearray(8)
        n = reader.readinto(buf)
        result.append(bytes(buf[: n or 0]))

    thread = threading.Thread(target=read)
    thread.start()
    time.sleep(0.05)  # asleep now (nothing was due)
    assert not asked.is_set()
    due.set()
    reader.nudge()
    assert asked.wait(5), "the nudged reader did not ask again whether a message is due"
    os.write(w, b"due")
    thread.join(5)
    assert result == [b"due"]


def test_an_exception_while_waiting_loses_nothing(pipe: tuple[SpinReader, int]) -> None:
    reader, w = pipe
    reader.when = lambda: False
    channel_reader = io.BufferedReader(reader, 1 << 16)
    r2, w2 = os.pipe()
    channel = Channel(channel_reader, io.FileIO(w2, "wb"))

    class Stop(Exception):
        pass

    def alarm(signum: int, frame: object) -> None:
        raise Stop

    old = signal.signal(signal.SIGALRM, alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(Stop):
            channel.recv()  # waits: nothing sent yet
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    sender = Channel(io.BufferedReader(io.FileIO(r2, "rb")), io.FileIO(w, "wb", closefd=False))
    sender.send({"op": "after", "n": 1})
    assert channel.recv() == {"op": "after", "n": 1}
    os.close(r2)
    os.close(w2)


def test_close_releases_every_descriptor() -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        r, w = os.pipe()
        buffered = spinning_reader(io.FileIO(r, "rb"), 4096)
        buffered.close()
        os.close(w)
    assert len(os.listdir("/proc/self/fd")) == before


def test_one_cpu_never_polls() -> None:
    """With one CPU the writer could only run once the poller stopped: never poll."""
    code = (
        "import io, os, threading, time\n"
        "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
        "from rlm.environments.worker.spin import SpinReader, max_spinners\n"
        "assert max_spinners() == 0, max_spinners()\n"
        "r, w = os.pipe()\n"
        "reader = SpinReader(io.FileIO(r, 'rb'))\n"
        "asked = []\n"
        "reader.when = lambda: asked.append(1) or True\n"
        "threading.Timer(0.05, lambda: os.write(w, b'ok')).start()\n"
        "buf = bytearray(4)\n"
        "n = reader.readinto(buf)\n"
        "print(bytes(buf[:n]).decode(), len(asked))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["ok", "0"]
