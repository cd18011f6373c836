"""``rlm sessions``: list, show, delete and export durable sessions (read through
``rlm.sessions``; inspection never waits for a session in use).

What a store holds is shown through ``printable``: a session id, prompt or hostname
with escape sequences in it reaches the terminal escaped, never raw. Exports never
unpickle (``--trust-pickles`` to decode pickled contexts of a store you wrote).

Exit codes as for every command (``rlm.cli.failures``): 2 for what the user named
wrongly (no such session or store, a fork onto an existing id, a bad store URL), 1 for
a session in use by another process or a store that cannot be used."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import IO, Any

from rlm.base.errors import (
    ConfigurationError,
    SessionError,
    SessionLockedError,
    SessionNotFoundError,
    SessionStoreError,
)
from rlm.base.redact import redact_text
from rlm.cli.failures import EXIT_ERROR, EXIT_USAGE, store_flag
from rlm.logger.verbose import one_line, plural, printable
from rlm.sessions import api
from rlm.sessions.store import STORE_ENV_VAR, default_store_path

EXAMPLES = f"""examples:
  rlm sessions list
  rlm sessions list --json --store ~/notes.db
  rlm sessions show notes
  rlm sessions export notes -o notes.json
  rlm sessions fork notes notes-v2      # a copy to go on from, even while notes is in use
  rlm sessions rm notes old-draft

The store is --store, else ${STORE_ENV_VAR}, else {default_store_path()}."""


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "sessions",
        help="list, show, delete and export durable sessions",
        description="Inspect and manage durable sessions (RLM(session_store=...), "
        "rlm chat --session NAME). Reading never needs a session's lock.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(handler=lambda args: _usage(p))
    verbs = p.add_subparsers(dest="verb", metavar="VERB")

    def verb(name: str, help_text: str, handler: Any) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = verbs.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--store", metavar="PATH|URL", help="the session store file")
        sub.set_defaults(handler=handler)
        return sub

    verb("list", "every session, most recently used first", cmd_list).add_argument(
        "--json", action="store_true", help="JSON output"
    )
    show = verb("show", "a session and its turns", cmd_show)
    show.add_argument("session_id", metavar="ID")
    show.add_argument("--json", action="store_true", help="JSON output")
    rm = verb("rm", "delete sessions (what no other session shares is freed)", cmd_rm)
    rm.add_argument("session_ids", metavar="ID", nargs="+")
    rm.add_argument("--force", action="store_true", help="even if a live process uses it")
    fork = verb("fork", "copy a session under a new id (shares its turns; works while "
                 "the session is in use)", cmd_fork)  # fmt: skip
    fork.add_argument("session_id", metavar="ID")
    fork.add_argument("new_id", metavar="NEW")
    export = verb("export", "a session as JSON (contexts, histories, answers)", cmd_export)
    export.add_argument("session_id", metavar="ID")
    export.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    export.add_argument("--no-contexts", action="store_true", help="leave the contexts out")
    export.add_argument(
        "--trust-pickles",
        action="store_true",
        help="decode contexts stored as pickles (loading a pickle runs code: only for "
        "stores you wrote); without it they are exported as base64, not unpickled",
    )


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))


def exit_code(exc: SessionError | ConfigurationError) -> int:
    """2 when the user named something that is not there (a session, a store) or
    cannot be (a fork onto an existing id, a bad store URL); 1 otherwise (a session in
    use, a store that is corrupt or cannot be written)."""
    if isinstance(exc, SessionNotFoundError | ConfigurationError):
        return EXIT_USAGE
    if isinstance(exc, SessionStoreError) and str(exc).startswith("no session store at"):
        return EXIT_USAGE
    if type(exc) is SessionError and str(exc).endswith("that session already exists"):
        return EXIT_USAGE
    return EXIT_ERROR


def _run(fn: Any, err: IO[str] | None = None) -> int:
    try:
        return int(fn())
    except (SessionError, ConfigurationError) as exc:
        message = printable(redact_text(str(exc)))
        print(f"rlm: error: {message}", file=err or sys.stderr, flush=True)
        return exit_code(exc)


def cmd_list(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    out = out or sys.stdout

    def run() -> int:
        sessions = api.list_sessions(args.store)
        if args.json:
            rows = [
                {**s.__dict__, "locked_by": s.locked_by.__dict__ if s.locked_by else None}
                for s in sessions
            ]
            print(json.dumps(rows, indent=2), file=out)  # ensure_ascii: escapes included
            return 0
        if not sessions:
            print(f"no sessions in {printable(args.store or default_store_path())}", file=out)
            return 0
        ids = [printable(s.id) for s in sessions]
        width = max(len("ID"), *(len(i) for i in ids))
        print(f"{'ID':<{width}}  TURNS  LAST       UPDATED           IN USE", file=out)
        for sid, s in zip(ids, sessions, strict=True):
            user = printable(s.locked_by.describe()) if s.locked_by else "-"
            last = printable(s.last_status or "-")
            print(f"{sid:<{width}}  {s.turns:>5}  {last:<9}  {_when(s.updated_at)}  {user}",
                  file=out)  # fmt: skip
        return 0

    return _run(run)


def cmd_show(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    out = out or sys.stdout

    def run() -> int:
        detail = api.show(args.session_id, args.store)
        if args.json:
            print(json.dumps(detail.to_dict(), indent=2, default=str), file=out)
            return 0
        s = detail.session
        line = (
            f"session {s.id} · {plural(len(detail.turns), 'turn')} · created {_when(s.created_at)}"
        )
        if s.forked_from:
            line += f" · forked from {s.forked_from}"
        print(printable(line), file=out)
        config = ", ".join(f"{k} {v}" for k, v in s.config.items())
        if detail.locked_by:
            config += f" · in use by {detail.locked_by.describe()}"
        print(f"  {printable(config)}", file=out)
        for t in detail.turns:
            cost = f" ${t.cost:.4f}" if t.cost else ""
            result = one_line(t.answer, 70) if t.answer is not None else f"({one_line(t.error)})"
            question = one_line(t.root_prompt or "", 50)
            status = printable(t.status)
            print(f"[{t.index}] {status:<9} '{question}' -> {result}{cost}", file=out)
            if t.unrestorable:
                names = printable(", ".join(sorted(t.unrestorable)))
                print(f"    not saved: {names}", file=out)
        return 0

    return _run(run)


def cmd_rm(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    out = out or sys.stdout

    def run() -> int:
        for sid in args.session_ids:
            try:
                api.delete(sid, args.store, force=args.force)
            except SessionLockedError as exc:
                holder = exc.holder.describe() if exc.holder else "another process"
                raise SessionError(f"session {sid!r} is in use by {holder}; quit that "
                                   "process first, or pass --force to delete it anyway") from None  # fmt: skip
            print(f"deleted {printable(sid)}", file=out)
        return 0

    return _run(run)


def cmd_fork(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    out = out or sys.stdout

    def run() -> int:
        api.fork(args.session_id, args.new_id, args.store)
        store = store_flag(args.store)
        print(printable(f"forked {args.session_id} as {args.new_id}; go on with: rlm chat "
                        f"--session {args.new_id}{store}"), file=out)  # fmt: skip
        return 0

    return _run(run)


def cmd_export(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    out = out or sys.stdout

    def run() -> int:
        data = api.export(
            args.session_id,
            args.store,
            contexts=not args.no_contexts,
            trust_pickles=args.trust_pickles,
        )
        if args.output:  # a file keeps its text as is; JSON escapes the C0 controls
            text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
            try:
                with open(args.output, "w", encoding="utf-8") as f:
                    f.write(text + "\n")
            except OSError as exc:
                reason = exc.strerror or type(exc).__name__
                print(f"rlm: error: cannot write {printable(args.output)}: {reason}",
                      file=sys.stderr)  # fmt: skip
                return EXIT_USAGE
            print(f"exported {printable(args.session_id)} to {printable(args.output)}",
                  file=sys.stderr)  # fmt: skip
        else:  # maybe a terminal: ASCII only, so no C1 control or bidi override is raw
            print(json.dumps(data, indent=2, ensure_ascii=True, default=str), file=out)
        return 0

    return _run(run)
