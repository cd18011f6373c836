"""``rlm chat`` in a real pseudo-terminal (pexpect) with the scripted backend, plus its
session logic driven directly."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest

from rlm.cli import build_parser, main
from rlm.cli.chat import chat
from rlm.cli.chat_session import ChatSession
from rlm.cli.factory import SettingsFactory, model_setup
from rlm.cli.settings import Settings

REPO = Path(__file__).resolve().parents[2]
# Turn 0 stores a variable; turn 1 reads it back next to the file queued with /add.
REPLIES = [
    "```repl\nx = 42\nanswer['content'] = 'noted'\nanswer['ready'] = True\n```",
    "```repl\nanswer['content'] = context_1.strip().upper() + ' ' + str(x)\n"
    "answer['ready'] = True\n```",
]


def write_script(tmp_path: Path) -> Path:
    path = tmp_path / "script.json"
    path.write_text(json.dumps({"model_name": "scripted", "responses": REPLIES}), "utf-8")
    return path


def test_chat_in_a_terminal(tmp_path: Path) -> None:
    pexpect = pytest.importorskip("pexpect")
    script = write_script(tmp_path)
    (tmp_path / "notes.txt").write_text("the white rabbit\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLM_")}
    env.update(HOME=str(tmp_path), XDG_STATE_HOME=str(tmp_path / "state"), TERM="xterm")
    env.update(PROMPT_TOOLKIT_NO_CPR="1", PYTHONPATH=str(REPO))  # no cursor-position query
    child = pexpect.spawn(
        sys.executable,
        ["-m", "rlm", "chat", "--backend", "scripted", "--backend-kwargs", f"@{script}"],
        env=env,
        cwd=str(tmp_path),
        encoding="utf-8",
        timeout=30,
        dimensions=(40, 200),
    )
    try:
        child.expect("rlm>")
        child.sendline("remember x")
        child.expect("noted")
        child.expect("rlm>")
        child.sendline("/add notes.txt")
        child.expect("queued notes.txt")
        child.expect("rlm>")
        child.sendline("shout it")
        child.expect("THE WHITE RABBIT 42")  # the file became context_1; x survived
        child.expect("rlm>")
        child.sendline("/vars")
        child.expect(r"'context_1': 'str'")
        child.expect("rlm>")
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    history = tmp_path / "state" / "rlm" / "chat_history"
    assert "/add notes.txt" in history.read_text(encoding="utf-8")  # prompt_toolkit history


def scripted_session(tmp_path: Path) -> tuple[ChatSession, io.StringIO, io.StringIO]:
    settings = Settings(backend="scripted", backend_kwargs={"responses": REPLIES})
    setup = model_setup(settings, environ={})
    out, err = io.StringIO(), io.StringIO()
    return ChatSession(SettingsFactory(settings, setup), out, err, quiet=True), out, err


def test_session_commands_without_a_terminal(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("alpha", encoding="utf-8")
    session, out, err = scripted_session(tmp_path)
    try:
        session.handle("/vars")
        assert "no variables yet" in err.getvalue()
        session.handle("hello")
        assert out.getvalue() == "noted\n"
        session.handle(f"/add {tmp_path / 'missing.txt'}")
        assert "/add" in err.getvalue() and "no such file" in err.getvalue()
        session.handle(f"/add {tmp_path / 'a.txt'}")
        assert len(session.queued) == 1
        session.handle("again")
        assert out.getvalue().splitlines()[-1] == "ALPHA 42"
        assert session.queued == []
        session.handle("/history")
        assert "context_1: " in err.getvalue() and "a.txt" in err.getvalue()
        session.handle("/budget")
        assert "2 messages, 2 model calls" in err.getvalue()
        session.handle("/nope")
        assert "unknown command /nope" in err.getvalue()
        session.handle("/reset")
        assert session.turns == [] and session.rlm._persistent_env is None
        assert session.handle("/quit") is False
    finally:
        session.close()


def test_piped_chat_reads_lines_until_eof(tmp_path: Path) -> None:
    script = write_script(tmp_path)
    argv = ["chat", "-q", "--history-file", "", "--backend", "scripted",
            "--backend-kwargs", f"@{script}", "--config", str(tmp_path / "none.toml")]  # fmt: skip
    (tmp_path / "none.toml").write_text("", encoding="utf-8")
    stdin = io.StringIO("hello\n/vars\n")
    out, err = io.StringIO(), io.StringIO()
    args = build_parser().parse_args(argv)
    assert chat(args, stdin, out, err) == 0
    assert out.getvalue().splitlines()[0] == "noted"
    assert "'x': 'int'" in out.getvalue()
    assert main(["chat", "--help"]) == 0
