"""The session store is private: folders rlmx creates are 0700, the database and its
``-wal``/``-shm`` files 0600, whatever the umask. A folder that already exists (one the
user chose, such as the working directory) keeps its mode; an existing database that
others can read gets a warning, not a silent chmod."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from rlm.sessions.models import TurnWrite
from rlm.sessions.sqlite_store import SQLiteSessionStore

REPO = Path(__file__).resolve().parents[2]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def write_a_turn(store: SQLiteSessionStore) -> None:
    store.ensure_session("s", {})
    lock = store.acquire_lock("s")
    turn = TurnWrite(
        index=0, status="completed", root_prompt="q", context="private text",
        context_meta={}, messages=[], answer="a", error=None, usage={}, cost=None,
        iterations=1, execution_time=0.1, snapshot=None, checkpoint=None,
    )  # fmt: skip
    store.write_turn("s", lock.owner, turn)
    lock.release()


def test_new_store_is_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "rlmx" / "sessions.db"
    with umask(0o022):
        store = SQLiteSessionStore(path)
        try:
            write_a_turn(store)
            wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
            assert wal.exists() and shm.exists()  # WAL mode, connection open
            modes = {p.name: oct(mode(p)) for p in (path, wal, shm)}
            assert modes == dict.fromkeys(modes, "0o600"), modes
        finally:
            store.close()
    assert oct(mode(tmp_path / "data")) == "0o700"
    assert oct(mode(tmp_path / "data" / "rlmx")) == "0o700"


def test_an_existing_folder_keeps_its_mode(tmp_path: Path) -> None:
    shared = tmp_path / "project"
    shared.mkdir()
    shared.chmod(0o755)  # the user's choice (e.g. the working directory)
    with umask(0o022):
        store = SQLiteSessionStore(shared / "sessions.db")
        write_a_turn(store)
        store.close()
    assert oct(mode(shared)) == "0o755"
    assert oct(mode(shared / "sessions.db")) == "0o600"


def test_an_existing_readable_store_is_reported_not_changed(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    SQLiteSessionStore(path).close()
    path.chmod(0o644)  # as an older rlmx left it
    with pytest.warns(UserWarning, match="readable by other users"):
        SQLiteSessionStore(path).close()
    assert oct(mode(path)) == "0o644"


def test_rlm_chat_default_store_is_private(tmp_path: Path) -> None:
    reply = "```repl\nanswer['content'] = 'ok'\nanswer['ready'] = True\n```"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RLM_", "OPENAI_"))}
    env.update(
        PYTHONPATH=str(REPO), HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path / "xdg"),
        RLM_BACKEND="scripted",
        RLM_BACKEND_KWARGS=json.dumps({"model_name": "scripted", "responses": [reply]}),
    )  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", "import os, sys; os.umask(0o022); from rlm.cli import main; "
         "sys.exit(main(['chat', '--session', 'notes', '--history-file', '', '-q']))"],
        input="hello\n/quit\n", capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "xdg" / "rlmx"
    assert oct(mode(tmp_path / "xdg")) == "0o700"
    assert oct(mode(folder)) == "0o700"
    assert oct(mode(folder / "sessions.db")) == "0o600"
