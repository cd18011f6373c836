"""The launcher that ``ExecTransport`` runs inside a provider's sandbox.

Its source is sent as ``python3 -I -c <source> <mode> <worker argv...>``, so it needs
nothing installed: standard library only, Python 3.9 compatible, never imported by the
host. It starts the worker as its child, in a session of its own, and relays:

* host -> worker (its stdin): ``binary`` frames ``b"D" + u32 length + data`` or
  ``b"K"`` (kill the worker); ``text`` lines ``D<base64>\\n`` or ``K\\n``, for SDKs
  whose stdin or stdout only carry text;
* worker -> host (its stdout): the worker's bytes as they are (``binary``), or one
  base64 line per chunk (``text``).

An in-band kill works on every provider, including those whose SDK cannot signal a
process. The launcher exits with the worker's status (128 + N for signal N), so the
host can say how the worker died; the worker dies with it (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import struct
import subprocess
import sys
import threading

CHUNK = 1 << 16


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
    except Exception:
        pass


def _read_exact(size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = os.read(0, size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _frames(text: bool):  # type: ignore[no-untyped-def]
    """Yield ``(kind, data)`` from the host until its stdin closes."""
    if text:
        for line in sys.stdin.buffer:
            if line[:1] == b"D":
                yield b"D", base64.b64decode(line[1:])
            elif line[:1] == b"K":
                yield b"K", b""
        return
    while True:
        try:
            kind = _read_exact(1)
            size = struct.unpack(">I", _read_exact(4))[0] if kind == b"D" else 0
            yield kind, _read_exact(size)
        except EOFError:
            return


def main(argv: list[str]) -> None:
    text = argv[0] == "text"
    child = subprocess.Popen(
        argv[1:],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,  # kill() takes everything the worker started
        preexec_fn=_die_with_parent,
        bufsize=0,
    )

    def kill(*_: object) -> None:
        with contextlib.suppress(OSError):
            os.killpg(child.pid, signal.SIGKILL)

    def terminate(*_: object) -> None:
        kill()
        os._exit(143)

    signal.signal(signal.SIGTERM, terminate)

    def pump_in() -> None:
        for kind, data in _frames(text):
            if kind == b"K":
                kill()
                continue
            # A dead worker fails the write; keep reading for a kill or EOF.
            with contextlib.suppress(OSError):
                child.stdin.write(data)  # type: ignore[union-attr]
        kill()  # the host went away

    threading.Thread(target=pump_in, daemon=True).start()
    out = child.stdout.fileno()  # type: ignore[union-attr]
    while True:
        chunk = os.read(out, CHUNK)
        if not chunk:
            break
        data = base64.b64encode(chunk) + b"\n" if text else chunk
        while data:
            data = data[os.write(1, data) :]
    status = child.wait()
    os._exit(128 - status if status < 0 else status)


if __name__ == "__main__":
    main(sys.argv[1:])
