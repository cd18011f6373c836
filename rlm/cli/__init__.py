"""The ``rlm`` command line (``rlm`` or ``python -m rlm``).

Built on the stdlib ``argparse`` so the core keeps no third-party dependencies.
Each subcommand module adds its parser and sets ``handler`` (args -> exit code).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from rlm.cli import run


def build_parser() -> argparse.ArgumentParser:
    from rlm import __version__

    parser = argparse.ArgumentParser(
        prog="rlm", description="Recursive Language Models: ask questions of long contexts."
    )
    parser.add_argument("--version", action="version", version=f"rlmx {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    run.add_parser(subparsers)
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
