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


def serve_banner(tmp_path: Path, *args: str) -> list[str]:
    """``rlm serve --host 0.0.0.0 --port 0 ARGS``: its banner, up to the environment
    notice and the warnings written with it; then it is stopped. It binds before the
    banner, so only a server that really listens prints one: a scripted model behind a
    token, for the moment it takes to read these lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RLM_", "OPENAI_"))}
    env.update(PYTHONPATH=str(REPO), HOME=str(tmp_path), RLM_BACKEND="scripted")
    env["RLM_BACKEND_KWARGS"] = json.dumps({"model_name": "scripted", "responses": [REPLY]})
    env["RLM_SERVER_TOKEN"] = "t0ken-value"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlm", "serve", "--host", "0.0.0.0", "--port", "0", *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        while not any(line.startswith("rlm: model-written code runs") for line in lines):
            line = proc.stderr.readline()
            assert line, f"rlm serve exited early: {lines}"
            lines.append(line.rstrip("\n"))
        proc.terminate()  # the warnings, if any, were written with the notice
        lines += proc.stderr.read().splitlines()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stderr:
            proc.stderr.close()
    return lines


def test_serve_warns_loudly_for_local_code_beyond_loopback(tmp_path: Path) -> None:
    lines = serve_banner(tmp_path)
    assert any(line.startswith(LOCAL_NOTICE) for line in lines), lines
    warning = [x for x in lines if x.startswith("rlm: WARNING:")]
    assert warning, lines
    assert "0.0.0.0" in warning[0] and "'local'" in warning[0] and "any code" in warning[0]
    assert "--env sandbox" in warning[0]


def test_serve_with_a_sandbox_only_notes_the_environment(tmp_path: Path) -> None:
    lines = serve_banner(tmp_path, "--env", "sandbox")
    assert "rlm: model-written code runs in the 'sandbox' environment" in "\n".join(lines)
    assert not any(line.startswith("rlm: WARNING:") for line in lines)


def test_serve_refuses_an_address_of_no_interface_in_one_line(tmp_path: Path) -> None:
    # 192.0.2.1 (TEST-NET-1) is on no interface here: the bind fails before any banner.
    proc = cli(tmp_path, "serve", "--host", "192.0.2.1", "--port", "8123",
               extra={"RLM_SERVER_TOKEN": "t0ken-value"})  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "rlm: error: --host 192.0.2.1: not an address of this machine (Cannot assign "
        "requested address)"
    ]


@pytest.mark.skipif(sys.platform != "linux", reason="mcp over stdio with a closed stdin")
def test_mcp_says_where_code_runs(tmp_path: Path) -> None:
    pytest.importorskip("mcp")
    proc = cli(tmp_path, "mcp", stdin="")  # stdin at EOF: the server starts and stops
    assert LOCAL_NOTICE in proc.stderr and "this MCP server's process" in proc.stderr
