"""``rlm chat``: an interactive persistent session in the terminal.

Start-up builds the model's client once (``preload_client``): a missing extra or API
key ends the command at once (exit 2), and the embedded model loads before the first
prompt. A ``--session`` another process holds is waited for (the store's lock timeout,
10 s by default) with a line saying so; still held, it is exit 1 with the ``rlm``
commands that get around it. Exit codes as in ``rlm.cli.failures``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import IO, Any

from rlm.base.errors import RLMError, SessionError, SessionLockedError
from rlm.base.redact import redact_text
from rlm.cli.chat_session import HELP, ChatSession
from rlm.cli.config import CLIUsageError
from rlm.cli.factory import SettingsFactory, environment_notice, from_args, preload_client
from rlm.cli.failures import EXIT_ERROR, EXIT_USAGE, describe, locked_message
from rlm.cli.line_input import default_history_path, make_reader
from rlm.cli.live import use_live
from rlm.cli.settings import add_model_options
from rlm.logger.verbose import printable
from rlm.sessions.store import STORE_ENV_VAR, default_store_path

EXAMPLES = """examples:
  rlm chat
  rlm chat --session notes        # durable: quit, come back later, go on
  rlm chat --base-url http://127.0.0.1:8080/v1 --model qwen --max-budget 0.10

  rlm> /add report.pdf.txt
  rlm> What are the three main findings?
  rlm> Which of them does context_0 contradict?
  rlm> /vars
"""


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "chat",
        help="an interactive persistent session",
        description="Chat with a persistent RLM: each message is a turn whose context "
        "stays in the REPL as context_N.\n\n" + HELP,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--history-file",
        metavar="PATH",
        help=f"input history (default: {default_history_path()}); '' for none",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.add_argument(
        "--session",
        metavar="NAME",
        help="a durable session: resumed if it exists (variables, contexts, histories), "
        "saved after every message; see 'rlm sessions'",
    )
    p.add_argument(
        "--store",
        metavar="PATH|URL",
        help=f"the session store for --session (default: ${STORE_ENV_VAR}, else "
        f"{default_store_path()})",
    )
    add_model_options(p)
    p.set_defaults(handler=chat)


def chat(
    args: argparse.Namespace,
    stdin: IO[str] | None = None,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    stdin, out, err = stdin or sys.stdin, out or sys.stdout, err or sys.stderr
    name = getattr(args, "session", None)
    store = (getattr(args, "store", None) or str(default_store_path())) if name else None
    env: str | None = None
    try:
        settings, setup = from_args(args)
        env = settings.env
        if not args.quiet:  # before the session: building it may start the environment
            print(environment_notice(settings.env, "this process"), file=err, flush=True)
        preload_client(setup)
        if name is not None and store is not None:
            _say_if_locked(name, store, err)
        session = ChatSession(
            SettingsFactory(settings, setup, session_store=store), out, err,
            quiet=args.quiet, live=use_live(err, args.quiet), session=name,
        )  # fmt: skip
    except CLIUsageError as exc:
        print(f"rlm: error: {redact_text(str(exc))}", file=err, flush=True)
        return EXIT_USAGE
    except SessionLockedError as exc:
        message = locked_message(exc, name or "", getattr(args, "store", None))
        print(f"rlm: error: {message}", file=err, flush=True)
        return EXIT_ERROR
    except SessionError as exc:  # an unusable store
        print(f"rlm: error: {redact_text(str(exc))}", file=err, flush=True)
        return EXIT_ERROR
    except RLMError as exc:  # a missing extra or key, a bad setting: exit 2
        code, message = describe(exc, env=env)
        print(f"rlm: error: {message}", file=err, flush=True)
        return code
    if setup.notice:
        print(setup.notice, file=err, flush=True)
    history = args.history_file
    reader = make_reader(stdin, default_history_path() if history is None else
                         (Path(history) if history else None))  # fmt: skip
    session.say(f"rlm chat · {setup.label} · /help for commands, /quit to leave")
    if session.durable_note:
        session.say(session.durable_note)
    try:
        while True:
            try:
                line = reader("rlm> ")
            except KeyboardInterrupt:  # Ctrl-C at the prompt clears the line
                continue
            except EOFError:
                break
            if not session.handle(line):
                break
    finally:
        session.close()
    return 0


def _say_if_locked(name: str, store: str, err: IO[str]) -> None:
    """Say so when another process holds the session: opening it waits for the lock."""
    from rlm.sessions.store import open_store

    try:
        opened = open_store(store, create=False)
    except (SessionError, OSError):  # no store yet: nothing can hold the session
        return
    try:
        holder = opened.lock_holder(name)
    finally:
        opened.close()
    if holder is not None:
        print(printable(f"rlm: waiting for session {name!r} (locked by {holder.describe()}; "
                        f"up to {opened.lock_timeout:g}s)…"), file=err, flush=True)  # fmt: skip
