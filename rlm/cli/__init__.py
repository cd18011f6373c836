"""The ``rlm`` command line (``rlm`` or ``python -m rlm``).

Built on the stdlib ``argparse``: ``import rlm`` and ``rlm --help`` need nothing
beyond the core, and each command imports its extra (rich, prompt_toolkit, starlette,
uvicorn, mcp) only when it runs. Each subcommand module adds its parser and sets
``handler`` (args -> exit code). Settings: flags > ``RLM_*`` env vars > ``rlm.toml``
(see ``rlm.cli.settings``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from rlm.cli import chat, mcp_cmd, run, serve, sessions_cmd, view

EPILOG = """examples:
  rlm run -c book.txt "Who finds the key?"
  rlm chat
  rlm chat --session notes          # durable: resume it tomorrow
  rlm sessions list
  rlm serve --port 8000
  rlm mcp
  rlm view logs/rlm_2025-01-01_12-00-00_ab12cd34.jsonl

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
    for command in (run, chat, serve, mcp_cmd, view, sessions_cmd):
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (2 for usage errors, as argparse does)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and argparse's own usage errors
        return exc.code if isinstance(exc.code, int) else 2
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        return 130


__all__ = ["build_parser", "main"]
