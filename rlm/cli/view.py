"""``rlm view``: run logs (JSONL) as self-contained HTML pages.

Each argument is a log file, or a folder: its newest ``*.jsonl`` log. A file that is
empty or is not a trajectory log (no run metadata, iterations or run events) is
refused, naming the command that writes one (``rlm run --log-dir DIR``), before any
page is written. ``-o`` names one page; its folder must exist (it is never created).
Without ``-o`` each page goes beside its log (``RUN.jsonl.html``). Exit codes: 0
written, 2 a log or ``-o`` that cannot be used.
"""

from __future__ import annotations

import argparse
import sys
import webbrowser
from pathlib import Path
from typing import IO, Any

from rlm.cli.config import CLIUsageError
from rlm.cli.failures import EXIT_OK, EXIT_USAGE
from rlm.logger.verbose import printable

MAX_OPENED = 5  # browser tabs opened at most; more pages are only listed
TRAJECTORY_RECORDS = frozenset({"metadata", "iteration", "run_started", "run_finished", "context"})
HOW_TO_LOG = "rlm run --log-dir DIR writes one"
EXAMPLES = """examples:
  rlm run -c book.txt --log-dir logs "Who finds the key?"
  rlm view logs                      # the newest log in logs/
  rlm view logs/rlm_2025-01-01_12-00-00_ab12cd34.jsonl
  rlm view logs/*.jsonl --no-open    # one page per log
  rlm view run.jsonl -o /tmp/run.html --no-open
"""


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "view",
        help="render run logs as HTML pages and open them",
        description="Write the trajectory viewer for each RUN.jsonl (an RLMLogger log, e.g. "
        "from --log-dir; a folder means its newest log) and open it in the browser.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("logs", nargs="+", metavar="RUN.jsonl|DIR", help="run logs or folders")
    p.add_argument("-o", "--output", metavar="OUT.html",
                   help="the page, for one log (default: RUN.jsonl.html); its folder must "
                   "exist")  # fmt: skip
    p.add_argument("--title", help="the page title (default: from the run)")
    p.add_argument("--no-open", action="store_true", help="write the pages only")
    p.set_defaults(handler=view)


def _newest_log(folder: Path) -> Path:
    logs = [p for p in folder.glob("*.jsonl") if p.is_file()]
    if not logs:
        raise CLIUsageError(f"{folder}: no .jsonl run logs in this folder ({HOW_TO_LOG})")
    return max(logs, key=lambda p: (p.stat().st_mtime, p.name))


def _check_log(path: Path) -> None:
    """Refuse an empty file, or one that is not a trajectory log."""
    from rlm.viewer.source import load_source

    try:
        log = load_source(path)
        if not log.records and not log.completion and not path.read_bytes().strip():
            raise CLIUsageError(f"{path}: an empty log, nothing to show ({HOW_TO_LOG})")
    except UnicodeDecodeError:
        raise CLIUsageError(f"{path}: not a trajectory log: not UTF-8 text "
                            f"({HOW_TO_LOG})") from None  # fmt: skip
    except ValueError as exc:
        reason = str(exc)
        if not reason.startswith("not a trajectory"):
            reason = f"not a trajectory log: {reason}"
        raise CLIUsageError(f"{path}: {reason} ({HOW_TO_LOG})") from None
    except OSError as exc:
        raise CLIUsageError(f"{path}: {exc.strerror or exc}") from None
    if log.completion or any(r.get("type") in TRAJECTORY_RECORDS for r in log.records):
        return
    raise CLIUsageError(f"{path}: not a trajectory log: no run metadata or iterations in it "
                        f"({HOW_TO_LOG})")  # fmt: skip


def resolve_logs(names: list[str], output: str | None) -> list[Path]:
    """The log files to render (a folder gives its newest), each checked; raises
    ``CLIUsageError``."""
    logs: list[Path] = []
    for name in names:
        path = Path(name).expanduser()
        if path.is_dir():
            path = _newest_log(path)
        elif not path.exists():
            raise CLIUsageError(f"{name}: no such file or folder")
        logs.append(path)
    if output is not None:
        if len(logs) > 1:
            raise CLIUsageError(f"-o names one page, but {len(logs)} logs were given; drop -o "
                                "(each page is then written beside its log)")  # fmt: skip
        folder = Path(output).expanduser().parent
        if not folder.is_dir():
            raise CLIUsageError(f"-o {output}: the folder {folder} does not exist (create it "
                                "first)")  # fmt: skip
    for log in logs:
        _check_log(log)
    return logs


def view(args: argparse.Namespace, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    from rlm.viewer import write_html

    out, err = out or sys.stdout, err or sys.stderr
    try:
        logs = resolve_logs(list(args.logs), args.output)
    except CLIUsageError as exc:
        print(f"rlm: error: {printable(str(exc))}", file=err, flush=True)
        return EXIT_USAGE
    pages: list[Path] = []
    for log in logs:
        try:
            pages.append(write_html(log, args.output, title=args.title))
        except (OSError, ValueError) as exc:
            print(f"rlm: error: {printable(f'{log}: {exc}')}", file=err, flush=True)
            return EXIT_USAGE
        print(pages[-1], file=out, flush=True)
    if args.no_open:
        return EXIT_OK
    for page in pages[:MAX_OPENED]:
        if not webbrowser.open(page.resolve().as_uri()):
            print("rlm: no browser found; open the page(s) above by hand", file=err, flush=True)
            return EXIT_OK
    if len(pages) > MAX_OPENED:
        print(f"rlm: opened the first {MAX_OPENED} of {len(pages)} pages; the others are "
              "listed above", file=err, flush=True)  # fmt: skip
    return EXIT_OK


__all__ = ["resolve_logs", "view"]
