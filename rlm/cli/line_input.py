"""Reading chat lines with history and line editing.

prompt_toolkit (the ``cli`` extra) when stdin is a terminal; otherwise ``input()``,
with ``readline``'s editing and history when the platform has it. Both raise
``EOFError`` on Ctrl-D and ``KeyboardInterrupt`` on Ctrl-C, as ``input()`` does.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

Reader = Callable[[str], str]


def default_history_path(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    state = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "rlm" / "chat_history"


def _prompt_toolkit_reader(history: Path) -> Reader | None:
    try:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory
    except ImportError:
        return None
    session: PromptSession[str] = PromptSession(history=FileHistory(str(history)))
    return session.prompt


def _readline_reader(history: Path) -> Reader:
    try:
        import readline
    except ImportError:  # Windows without pyreadline: plain input()
        return input
    with contextlib.suppress(OSError):
        readline.read_history_file(history)
    readline.set_history_length(1000)

    def read(prompt: str) -> str:
        line = input(prompt)
        with contextlib.suppress(OSError):
            readline.write_history_file(history)
        return line

    return read


def make_reader(stdin: IO[str], history: Path | None) -> Reader:
    """The best line reader for ``stdin``; no history file when ``history`` is None."""
    if not stdin.isatty():
        return lambda prompt: _read_plain(stdin)
    path = history or Path(os.devnull)
    if history is not None:
        history.parent.mkdir(parents=True, exist_ok=True)
    return _prompt_toolkit_reader(path) or _readline_reader(path)


def _read_plain(stdin: IO[str]) -> str:
    line = stdin.readline()  # piped input: no prompt, no echo
    if not line:
        raise EOFError
    return line.rstrip("\n")
