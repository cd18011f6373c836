"""``rlm view``: a run's JSONL log as one self-contained HTML page."""

from __future__ import annotations

import argparse
import sys
import webbrowser
from typing import IO, Any

EXAMPLES = """examples:
  rlm run -c book.txt --log-dir logs "Who finds the key?"
  rlm view logs/rlm_2025-01-01_12-00-00_ab12cd34.jsonl
  rlm view run.jsonl -o /tmp/run.html --no-open
"""


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "view",
        help="render a run log as an HTML page and open it",
        description="Write the trajectory viewer for RUN.jsonl (an RLMLogger log, e.g. from "
        "--log-dir) and open it in the browser.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("log", metavar="RUN.jsonl", help="the run log")
    p.add_argument("-o", "--output", metavar="OUT.html", help="default: RUN.jsonl.html")
    p.add_argument("--title", help="the page title (default: from the run)")
    p.add_argument("--no-open", action="store_true", help="write the page only")
    p.set_defaults(handler=view)


def view(args: argparse.Namespace, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    from rlm.viewer import write_html

    out, err = out or sys.stdout, err or sys.stderr
    try:
        page = write_html(args.log, args.output, title=args.title)
    except (OSError, ValueError) as exc:
        print(f"rlm: error: {args.log}: {exc}", file=err, flush=True)
        return 2
    print(page, file=out, flush=True)
    if not args.no_open and not webbrowser.open(page.resolve().as_uri()):
        print("rlm: no browser found; open the file above by hand", file=err, flush=True)
    return 0
