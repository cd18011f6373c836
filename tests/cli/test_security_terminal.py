"""Stored data never reaches the terminal raw: session ids, prompts, answers, errors and
configs holding escape sequences are shown escaped by ``rlm sessions`` and ``/history``.
Real subprocesses over a real store file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlm.sessions.models import TurnWrite
from rlm.sessions.sqlite_store import SQLiteSessionStore

REPO = Path(__file__).resolve().parents[2]
# OSC title + BEL, clear screen, a C1 CSI, a bidi override and a U+2028.
NASTY = "\x1b]0;owned\x07\x1b[2J\x9b31m\u202eevil\u2028"
SID = f"evil{NASTY}"
RAW = ("\x1b", "\x07", "\x9b", "\u202e", "\u2028")


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "s.db"
    store = SQLiteSessionStore(path)
    for sid in (SID, "notes"):
        store.ensure_session(sid, {"backend": f"scripted{NASTY}", "model": "m"})
        lock = store.acquire_lock(sid)
        for index, status in enumerate(("completed", "failed")):
            turn = TurnWrite(
                index=index, status=status, root_prompt=f"question{NASTY}",  # type: ignore[arg-type]
                context=f"context{NASTY}", context_meta={"context_type": "str"},
                messages=[{"role": "user", "content": f"q{NASTY}"}],
                answer=f"answer{NASTY}" if status == "completed" else None,
                error=None if status == "completed" else f"boom{NASTY}",
                usage={}, cost=None, iterations=1, execution_time=0.1, snapshot=None,
                checkpoint=None,
            )  # fmt: skip
            store.write_turn(sid, lock.owner, turn)
        lock.release()
    store.close()
    return path


def rlm(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RLM_", "OPENAI_"))}
    env.update(PYTHONPATH=str(REPO), HOME=str(tmp_path), RLM_BACKEND="scripted")
    env["RLM_BACKEND_KWARGS"] = json.dumps({"model_name": "scripted", "responses": ["x"]})
    return subprocess.run(
        [sys.executable, "-m", "rlm", *args], input=stdin, capture_output=True, text=True,
        env=env, timeout=120, encoding="utf-8", errors="surrogateescape",
    )  # fmt: skip


def assert_clean(text: str) -> None:
    found = [c for c in RAW if c in text]
    assert not found, f"raw control characters reached the terminal: {found!r}"


def test_sessions_list_and_show_escape_stored_text(tmp_path: Path, store: Path) -> None:
    listed = rlm(tmp_path, "sessions", "list", "--store", str(store))
    assert listed.returncode == 0, listed.stderr
    assert_clean(listed.stdout + listed.stderr)
    assert "evil\\x1b]0;owned\\x07\\x1b[2J\\x9b31m\\u202eevil\\u2028" in listed.stdout

    shown = rlm(tmp_path, "sessions", "show", SID, "--store", str(store))
    assert shown.returncode == 0, shown.stderr
    assert_clean(shown.stdout + shown.stderr)
    for text in ("session evil\\x1b", "scripted\\x1b", "question\\x1b", "answer\\x1b", "boom\\x1b"):
        assert text in shown.stdout, text


def test_export_to_the_terminal_and_json_listings_are_escaped(tmp_path: Path, store: Path) -> None:
    for args in (["export", SID], ["list", "--json"], ["show", SID, "--json"]):
        proc = rlm(tmp_path, "sessions", *args, "--store", str(store))
        assert proc.returncode == 0, proc.stderr
        assert_clean(proc.stdout + proc.stderr)
    exported = rlm(tmp_path, "sessions", "export", SID, "--store", str(store))
    assert json.loads(exported.stdout)["session"]["id"] == SID  # escaped, not altered


def test_errors_and_deletions_escape_ids(tmp_path: Path, store: Path) -> None:
    missing = rlm(tmp_path, "sessions", "show", f"nope{NASTY}", "--store", str(store))
    assert missing.returncode == 2  # no such session: bad input (rlm.cli.failures)
    assert_clean(missing.stdout + missing.stderr)
    removed = rlm(tmp_path, "sessions", "rm", SID, "--store", str(store))
    assert removed.returncode == 0, removed.stderr
    assert_clean(removed.stdout + removed.stderr)
    assert "deleted evil\\x1b" in removed.stdout


def test_chat_history_of_a_stored_session_is_escaped(tmp_path: Path, store: Path) -> None:
    proc = rlm(
        tmp_path, "chat", "--session", "notes", "--store", str(store), "--history-file", "",
        "-q", stdin="/history\n/quit\n",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert_clean(proc.stdout + proc.stderr)
    assert "question\\x1b" in proc.stderr and "answer\\x1b" in proc.stderr
