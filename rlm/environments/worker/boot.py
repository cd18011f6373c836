"""Worker start-up: limits, file descriptors, channel, then serve.

The real fd 1 becomes the channel's output and fd 1 is pointed at stderr, so nothing a
cell prints (Python, C code or a subprocess) can corrupt the channel; fd 0 is moved
away the same way and replaced by ``/dev/null``.

Standard library only, Python 3.9 compatible.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import io
import os
import sys
from collections.abc import Sequence

from rlm.environments.worker import lifeline
from rlm.environments.worker import server as server_module
from rlm.environments.worker.protocol import Channel
from rlm.environments.worker.spin import spinning_reader

RLIMITS = ("AS", "CPU", "NPROC", "FSIZE", "NOFILE", "CORE")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rlm-worker", description="rlmx REPL worker")
    parser.add_argument("--rlimit", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--output-limit", type=int, default=1_000_000)
    parser.add_argument("--max-value-bytes", type=int, default=1 << 30)
    parser.add_argument("--compaction", action="store_true")
    parser.add_argument("--no-snapshots", action="store_true")
    # The host's cap on one frame from this worker: larger messages are not sent.
    parser.add_argument("--max-frame-bytes", type=int, default=None)
    return parser.parse_args(argv)


def apply_rlimits(specs: Sequence[str]) -> None:
    """Lower this process's limits (inherited by anything it starts). The worker has
    no capability to raise them again, so cell code cannot either."""
    import resource

    for spec in specs:
        name, _, raw = spec.partition("=")
        name = name.strip().upper()
        if name not in RLIMITS:
            raise SystemExit(f"unknown rlimit {name!r}")
        which = getattr(resource, f"RLIMIT_{name}", None)
        if which is None:
            continue  # not on this platform
        value = int(raw)
        _, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        # CPU: SIGXCPU at the soft limit, SIGKILL a little later at the hard one.
        new_hard = value + 5 if name == "CPU" and hard == resource.RLIM_INFINITY else value
        resource.setrlimit(which, (value, new_hard))


def open_channel() -> Channel:
    in_fd, out_fd = os.dup(0), os.dup(1)  # dup'd fds are not inherited by children
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    rfile = spinning_reader(io.FileIO(in_fd, "rb"), 1 << 16)
    wfile = os.fdopen(out_fd, "wb", buffering=0)  # one write per frame, no flush needed
    return Channel(rfile, wfile)


def main(argv: Sequence[str] | None = None) -> None:
    lifeline.start(os.getppid())  # first: the worker never outlives its host
    args = parse_args(argv)
    channel = open_channel()
    channel.max_send_bytes = args.max_frame_bytes
    channel.limit_name = "max_frame_mb limit"
    apply_rlimits(args.rlimit)
    faulthandler.enable(file=2)  # a crash leaves its traceback on stderr

    def forked_child() -> None:
        # A fork made by cell code shares the channel: it must never write to it.
        channel.closed = True

    os.register_at_fork(after_in_child=forked_child)
    settings = {
        "output_limit": args.output_limit,
        "max_value_bytes": args.max_value_bytes,
        "compaction": args.compaction,
        "snapshots": not args.no_snapshots,
    }
    server = server_module.Server(channel, settings)
    server.exit_with_host = True
    server_module._current = server
    server_module._install_signals()
    try:
        server.serve()
    finally:
        with contextlib.suppress(Exception):
            sys.__stderr__.flush()  # type: ignore[union-attr]
        # Not sys.exit: threads the cells left behind must not keep the worker alive.
        os._exit(0)
