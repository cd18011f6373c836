"""``rlm cache``: what the sub-call cache (``RLM(cache=...)``, ``rlm run --cache``) holds
and saved, and emptying it.

    rlm cache stats [--cache PATH] [--json]   entries, size, hits, tokens and USD saved
    rlm cache clear [--cache PATH]            delete every entry

The file is ``--cache``, else ``$RLM_CACHE_PATH``, else the default
(``rlm.core.call_cache.default_cache_path``). A missing file reads as empty and is not
created. A file that is not a call cache (corrupt, or another program's database) is
never written to: exit 2, with the path.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from typing import IO, Any

from rlm.base.errors import ConfigurationError
from rlm.cli.failures import EXIT_USAGE
from rlm.core.call_cache import CACHE_ENV_VAR, CallCache, default_cache_path
from rlm.logger.verbose import printable
from rlm.sessions.call_store import CacheStats

EXAMPLES = """examples:
  rlm run --cache --backend-kwargs '{{"sampling_args": {{"temperature": 0}}}}' \\
      -c book.txt "Who finds the key?"   # a second run is answered from the cache
  rlm run --cache-sampled -c book.txt "Who finds the key?"   # sampled calls too
  rlm cache stats
  rlm cache stats --json --cache ./calls.db
  rlm cache clear
"""


def _where() -> str:
    """Which file a command without --cache uses, as the help says it."""
    env = os.environ.get(CACHE_ENV_VAR, "").strip()
    now = f"set: {printable(env)}" if env else "unset"
    return (
        f"The cache file is --cache, else ${CACHE_ENV_VAR} ({now}), "
        f"else {printable(str(default_cache_path()))}."
    )


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "cache",
        help="the sub-call cache: stats, clear",
        description="Inspect or empty the sub-call cache: model calls memoised by "
        "RLM(cache=...) or rlm run --cache, shared by every process using the file.",
        epilog=f"{EXAMPLES}\n{_where()}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(handler=lambda args: _usage(p))
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    stats = verbs.add_parser("stats", help="entries, size, hits, tokens and cost saved")
    stats.add_argument("--cache", metavar="PATH", help="the cache file")
    stats.add_argument("--json", action="store_true", help="JSON output")
    stats.set_defaults(handler=cmd_stats)
    clear = verbs.add_parser("clear", help="delete every entry")
    clear.add_argument("--cache", metavar="PATH", help="the cache file")
    clear.set_defaults(handler=cmd_clear)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_USAGE


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # unreachable


def _run(args: argparse.Namespace, action: Any, err: IO[str] | None) -> int:
    """``action(cache)``; a bad path or a file that is not a cache: exit 2."""
    err = err or sys.stderr
    try:
        cache = CallCache(args.cache)
    except ConfigurationError as exc:
        print(f"rlm: error: {printable(str(exc))}", file=err, flush=True)
        return EXIT_USAGE
    try:
        return int(action(cache))
    except BrokenPipeError:
        raise  # stdout closed early (rlm cache stats | head): exit 141, as every command
    except (sqlite3.Error, OSError) as exc:
        where = printable(str(cache.path))
        print(
            f"rlm: error: {where} is not a usable call cache ({printable(str(exc))}); "
            "if it is a broken cache, delete the file",
            file=err,
            flush=True,
        )
        return EXIT_USAGE
    finally:
        cache.close()


def stats_lines(stats: CacheStats, exists: bool = True) -> list[str]:
    saved = f"{stats.saved_input_tokens:,} input + {stats.saved_output_tokens:,} output tokens"
    cost = "unknown" if stats.saved_cost is None else f"${stats.saved_cost:.6f}"
    missing = "" if exists else "  (no such file yet: nothing has been cached there)"
    return [
        f"cache:       {printable(stats.path)}{missing}",
        f"entries:     {stats.entries:,}",
        f"size:        {_size(stats.size_bytes)}",
        f"hits:        {stats.hits:,}",
        f"saved:       {saved}",
        f"cost saved:  {cost}",
    ]


def cmd_stats(
    args: argparse.Namespace, out: IO[str] | None = None, err: IO[str] | None = None
) -> int:
    out = out or sys.stdout

    def show(cache: CallCache) -> int:
        stats = cache.stats()
        if args.json:
            print(json.dumps(stats.to_dict(), indent=2), file=out)
        else:
            print("\n".join(stats_lines(stats, cache.path.exists())), file=out)
        return 0

    return _run(args, show, err)


def cmd_clear(
    args: argparse.Namespace, out: IO[str] | None = None, err: IO[str] | None = None
) -> int:
    out = out or sys.stdout

    def clear(cache: CallCache) -> int:
        count = cache.clear()
        noun = "entry" if count == 1 else "entries"
        print(f"cleared {count:,} {noun} from {printable(str(cache.path))}", file=out)
        return 0

    return _run(args, clear, err)


__all__ = ["add_parser", "cmd_clear", "cmd_stats", "stats_lines"]
