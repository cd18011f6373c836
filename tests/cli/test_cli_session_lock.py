"""A durable session another process holds: ``rlm chat`` says it is waiting and then
names the ``rlm`` commands that get around the lock, ``rlm sessions rm`` names
``--force``, and ``rlm sessions fork`` makes the copy to go on with (the lock is held
by this test's process, through the store API)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import answer_code, rlm, scripted

from rlm.sessions.store import SessionStore, open_store


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[SessionStore, Path]]:
    path = tmp_path / "sessions.db"
    store = open_store(str(path))
    store.ensure_session("notes", {})
    lock = store.acquire_lock("notes")
    try:
        yield store, path
    finally:
        lock.release()
        store.close()


def test_chat_says_it_waits_then_names_the_cli_way_out(
    tmp_path: Path, held: tuple[SessionStore, Path]
) -> None:
    _, path = held
    store = f"sqlite:///{path}?lock_timeout=0.5"
    proc = rlm("chat", "--session", "notes", "--store", store, *scripted(answer_code("'x'")),
               "-q", cwd=tmp_path, env={"TERM": "dumb"})  # fmt: skip
    assert proc.returncode == 1
    waiting, error = proc.stderr.splitlines()
    holder = f"pid {os.getpid()} on "
    assert waiting.startswith(f"rlm: waiting for session 'notes' (locked by {holder}")
    assert waiting.endswith("; up to 0.5s)…")
    assert error.startswith(f"rlm: error: session 'notes' is in use by {holder}")
    # Every command it names works as printed: the --store the user passed is in it
    # (quoted for the shell: the URL holds a '?').
    flag = f'--store "{store}"'
    assert f"'rlm sessions show notes {flag}'" in error
    assert f"'rlm sessions fork notes NEW {flag}' and use --session NEW {flag}" in error
    assert "rlm.sessions" not in error  # no Python function for a CLI user


def test_the_way_out_names_a_plain_store_path_and_works_as_printed(
    tmp_path: Path, held: tuple[SessionStore, Path]
) -> None:
    _, path = held
    proc = rlm("chat", "--session", "notes", "--store", str(path), *scripted(answer_code("'x'")),
               "-q", cwd=tmp_path, env={"TERM": "dumb", "RLM_SESSION_STORE": str(tmp_path / "other.db")},
               )  # fmt: skip
    assert proc.returncode == 1
    error = proc.stderr.splitlines()[-1]
    assert f"'rlm sessions show notes --store {path}'" in error
    assert (
        f"'rlm sessions fork notes NEW --store {path}' and use --session NEW --store {path}"
        in error
    )
    # The command it names, run as printed, reads the locked session.
    show = rlm("sessions", "show", "notes", "--store", str(path), cwd=tmp_path,
               env={"RLM_SESSION_STORE": str(tmp_path / "other.db")})  # fmt: skip
    assert show.returncode == 0, show.stderr
    assert show.stdout.startswith("session notes · 0 turns · ")


def test_the_default_store_adds_no_flag(tmp_path: Path) -> None:
    from rlm.base.errors import SessionLockedError
    from rlm.cli.failures import locked_message, store_flag

    message = locked_message(SessionLockedError("locked"), "notes")
    assert "--store" not in message
    assert "'rlm sessions show notes'" in message
    # A store URL's credentials never reach the message.
    url = "postgresql://rlmx:s3cret-pw@db.internal/rlmx?lease=30"
    flag = store_flag(url)
    assert (
        "s3cret-pw" not in flag and flag == ' --store "postgresql://***@db.internal/rlmx?lease=30"'
    )
    assert "s3cret-pw" not in locked_message(SessionLockedError("locked"), "notes", url)


def test_rm_names_force_and_fork_makes_a_usable_copy(
    tmp_path: Path, held: tuple[SessionStore, Path]
) -> None:
    _, path = held
    rm = rlm("sessions", "rm", "notes", "--store", str(path), cwd=tmp_path)
    assert rm.returncode == 1
    assert rm.stderr.splitlines() == [
        f"rlm: error: session 'notes' is in use by {held[0].lock_holder('notes').describe()}; "  # type: ignore[union-attr]
        "quit that process first, or pass --force to delete it anyway"
    ]
    fork = rlm("sessions", "fork", "notes", "notes-2", "--store", str(path), cwd=tmp_path)
    assert fork.returncode == 0, fork.stderr
    assert fork.stdout == (
        f"forked notes as notes-2; go on with: rlm chat --session notes-2 --store {path}\n"
    )
    chat = rlm("chat", "--session", "notes-2", "--store", str(path),
               *scripted(answer_code("'went on'")), "-q", cwd=tmp_path, stdin="hello\n",
               env={"TERM": "dumb"})  # fmt: skip
    assert chat.returncode == 0, chat.stderr
    assert "went on" in chat.stdout
    assert "waiting" not in chat.stderr
