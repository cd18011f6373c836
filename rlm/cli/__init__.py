"""The ``rlm`` command line (``rlm`` or ``python -m rlm``).

Built on the stdlib ``argparse``: ``import rlm`` and ``rlm --help`` need nothing
beyond the core, and each command imports its extra (rich, prompt_toolkit, starlette,
uvicorn, mcp) only when it runs. Each subcommand module adds its parser and sets
``handler`` (args -> exit code). Settings: flags > ``RLM_*`` env vars > ``rlm.toml``
(see ``rlm.cli.settings``).

Errors are one ``rlm: error: ...`` line on stderr (a usage error also prints the usage
of the command it belongs to, ``rlm run`` or ``rlm sessions list``, not the top-level
one). Exit codes, the same for every command (``rlm.cli.failures``, also in ``rlm
--help``): 0 done, 1 an rlmx error, 2 bad usage, input or setup (a missing session or
store, an environment that cannot start included), 3 a limit stopped the run, 4 the
model provider failed, 130 interrupted, 141 stdout closed early (``rlm ... | head``:
no traceback, as for a Unix tool).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from rlm.cli import (
    cache_cmd,
    chat,
    eval_cmd,
    mcp_cmd,
    replay_cmd,
    run,
    serve,
    sessions_cmd,
    view,
)
from rlm.cli.failures import EXIT_INTERRUPTED, EXIT_PIPE, EXIT_USAGE

EPILOG = """examples:
  rlm run -c book.txt "Who finds the key?"
  rlm chat
  rlm chat --session notes          # durable: resume it tomorrow
  rlm sessions list
  rlm cache stats                   # what RLM(cache=...) / rlm run --cache saved
  rlm serve --port 8000
  rlm mcp
  rlm view logs/                    # the newest log in logs/
  rlm replay logs/run.jsonl         # re-run a recorded run offline
  rlm eval --self-check             # the answer-quality kit checks itself
  rlm batch questions.jsonl --backend openai --model gpt-5-mini

exit codes (every command):
  0    done
  1    another rlmx error (a durable session in use by another process included)
  2    bad usage, input or setup: a flag, a file, an empty context or question, a
       missing extra or API key, a port in use, no such session or store, an
       environment that cannot start (no Docker daemon, no bubblewrap)
  3    a limit stopped the run (rlm run prints the partial answer)
  4    the model provider failed (unreachable, refused the key, errored)
  130  interrupted (Ctrl-C)
  141  stdout was closed early (rlm ... | head)

Run 'rlm COMMAND --help' for a command's options and examples."""


def build_parser() -> argparse.ArgumentParser:
    from rlm.base.version import __version__

    parser = argparse.ArgumentParser(
        prog="rlm",
        description="Recursive Language Models: ask questions of long contexts.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rlmx {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands = (run, chat, serve, mcp_cmd, view, replay_cmd, sessions_cmd, cache_cmd, eval_cmd)
    for command in commands:
        command.add_parser(subparsers)
    return parser


def _command_parser(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> argparse.ArgumentParser:
    """The parser of the (sub)command ``args`` ran: ``rlm sessions list``'s, say."""
    while True:
        chosen = None
        for action in parser._actions:  # argparse keeps subcommands only here
            if isinstance(action, argparse._SubParsersAction):
                name = getattr(args, action.dest, None)
                chosen = action.choices.get(name) if isinstance(name, str) else None
        if chosen is None:
            return parser
        parser = chosen


def _quiet_stdout() -> None:
    """stdout's reader is gone: point it at /dev/null, so the interpreter's last flush
    does not raise again (Python's documented recipe for SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (captured in tests)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (2 for usage errors, as argparse does)."""
    try:
        return _main(argv)
    except BrokenPipeError:  # rlm ... | head: exit as a Unix tool does, no traceback
        _quiet_stdout()
        return EXIT_PIPE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # the command's own usage, not the top-level one
            _command_parser(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as exc:  # --help, --version and argparse's own usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return EXIT_USAGE
    return int(args.handler(args))


__all__ = ["build_parser", "main"]
