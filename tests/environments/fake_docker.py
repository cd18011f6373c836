"""A stand-in for the docker CLI, for tests on machines without a Docker engine.

``run ... <image> python -I -c <bootstrap> <args>`` ignores every run flag and execs
the python command locally (this interpreter), after recording its pid under the
``--name`` it was given; ``kill <name>`` kills that process group. It is not isolated:
it only lets DockerREPL's own code (command line, bootstrap, kill) run for real.

Usage: ``python fake_docker.py <state dir> <docker arguments...>``.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    state, command, args = Path(argv[0]), argv[1], argv[2:]
    shown = args if command == "kill" else args[: args.index("-c") + 1]  # not the bootstrap
    with open(state / "calls.log", "a") as log:  # what DockerREPL asked for, for the tests
        log.write(" ".join([command, *shown]) + "\n")
    if command == "kill":
        pidfile = state / f"{args[-1]}.pid"
        try:
            os.killpg(int(pidfile.read_text()), signal.SIGKILL)
        except (OSError, ValueError):
            sys.exit(1)
        return
    assert command == "run", f"fake docker cannot {command!r}"
    assert args[:2] == ["-i", "--rm"] and "--network" in args, args
    name = args[args.index("--name") + 1]
    start = next(i for i in range(len(args) - 2) if args[i + 1 : i + 3] == ["-I", "-c"])
    (state / f"{name}.pid").write_text(str(os.getpid()))
    os.execv(sys.executable, [sys.executable, *args[start + 1 :]])


if __name__ == "__main__":
    main(sys.argv[1:])
