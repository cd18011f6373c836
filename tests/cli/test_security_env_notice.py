"""Every surface says on stderr where model-written code runs, and ``rlm serve`` warns
loudly when unisolated code is served beyond loopback. Real subprocesses throughout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REPLY = "```repl\nanswer['content'] = 'ok'\nanswer['ready'] = True\n```"
LOCAL_NOTICE = "rlm: model-written code runs in the 'local' environment"


def cli(
    tmp_path: Path, *args: str, stdin: str = "", extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RLM_", "OPENAI_"))}
    env.update(PYTHONPATH=str(REPO), HOME=str(tmp_path), RLM_BACKEND="scripted")
    env["RLM_BACKEND_KWARGS"] = json.dumps({"model_name": "scripted", "responses": [REPLY]})
    env.update(extra or {})
    return subprocess.run(
        [sys.executable, "-m", "rlm", *args],
        input=stdin, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip


def test_run_says_where_code_runs(tmp_path: Path) -> None:
    (tmp_path / "c.txt").write_text("context", encoding="utf-8")
    proc = cli(tmp_path, "run", "-c", "c.txt", "question?")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith(LOCAL_NOTICE)]
    assert "inside this process" in line and "--env sandbox" in line


def test_run_names_another_environment(tmp_path: Path) -> None:
    (tmp_path / "c.txt").write_text("context", encoding="utf-8")
    # The notice is printed before the environment starts, so an unusable one still shows.
    proc = cli(tmp_path, "run", "-c", "c.txt", "--env", "docker", "q?",
               extra={"PATH": str(tmp_path)})  # fmt: skip
    assert "rlm: model-written code runs in the 'docker' environment" in proc.stderr


def test_chat_says_where_code_runs(tmp_path: Path) -> None:
    proc = cli(tmp_path, "chat", "--history-file", "", stdin="hello\n/quit\n")
    assert proc.returncode == 0, proc.stderr
    assert LOCAL_NOTICE in proc.stderr


def test_serve_warns_loudly_for_local_code_beyond_loopback(tmp_path: Path) -> None:
    # 192.0.2.1 (TEST-NET-1) is on no interface here: the bind fails after the banner,
    # so nothing ever listens beyond loopback.
    proc = cli(tmp_path, "serve", "--host", "192.0.2.1", "--port", "8123",
               extra={"RLM_SERVER_TOKEN": "t0ken-value"})  # fmt: skip
    assert LOCAL_NOTICE in proc.stderr
    warning = [x for x in proc.stderr.splitlines() if x.startswith("rlm: WARNING:")]
    assert warning, proc.stderr
    assert "192.0.2.1" in warning[0] and "'local'" in warning[0] and "any code" in warning[0]
    assert "--env sandbox" in warning[0]


def test_serve_with_a_sandbox_only_notes_the_environment(tmp_path: Path) -> None:
    proc = cli(tmp_path, "serve", "--host", "192.0.2.1", "--port", "8123", "--env", "sandbox",
               extra={"RLM_SERVER_TOKEN": "t0ken-value"})  # fmt: skip
    assert "rlm: model-written code runs in the 'sandbox' environment" in proc.stderr
    assert "rlm: WARNING:" not in proc.stderr


@pytest.mark.skipif(sys.platform != "linux", reason="mcp over stdio with a closed stdin")
def test_mcp_says_where_code_runs(tmp_path: Path) -> None:
    pytest.importorskip("mcp")
    proc = cli(tmp_path, "mcp", stdin="")  # stdin at EOF: the server starts and stops
    assert LOCAL_NOTICE in proc.stderr and "this MCP server's process" in proc.stderr
