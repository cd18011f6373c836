"""``rlm serve`` at its edges, as a user runs it (a subprocess, real HTTP on loopback):
a busy port is one line, every request is one access-log line, a failing provider is
logged, ``GET /health`` needs no token, and the embedded model loads at start-up."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("uvicorn")

REPO = Path(__file__).resolve().parents[2]
TOKEN = "edge-token-9f8e7d"
REPLY = "```repl\nanswer['content'] = 'served ' + str(len(context))\nanswer['ready'] = True\n```"
SCRIPTED = ["--backend", "scripted", "--backend-kwargs",
            json.dumps({"model_name": "scripted", "responses": [REPLY]})]  # fmt: skip


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RLM_", "OPENAI_"))}
    env.update(PYTHONPATH=str(REPO), HOME=str(tmp_path), **extra)
    return env


@contextmanager
def rlm_serve(tmp_path: Path, *args: str) -> Iterator[tuple[str, list[str], subprocess.Popen[str]]]:
    """``rlm serve --port 0 ARGS`` with ``RLM_SERVER_TOKEN``; yields the base URL (from
    the banner), the stderr lines so far and the process (stopped at the end)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlm", "serve", "--port", "0", *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, cwd=tmp_path, env=env_for(tmp_path, RLM_SERVER_TOKEN=TOKEN),
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        while True:
            line = proc.stderr.readline()
            assert line, f"rlm serve exited early: {lines}"
            lines.append(line.rstrip("\n"))
            if match := re.match(r"rlm: serving (http://\S+/v1) ", line):
                url = match.group(1)
                break
        yield url.removesuffix("/v1"), lines, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stderr:
            proc.stderr.close()


def finish(proc: subprocess.Popen[str], lines: list[str]) -> list[str]:
    """Stop the server; every stderr line it wrote."""
    proc.terminate()
    assert proc.stderr is not None
    rest = proc.stderr.read()
    proc.wait(timeout=30)
    return lines + rest.splitlines()


def call(
    url: str, method: str = "GET", body: Any = None, token: str | None = TOKEN
) -> tuple[int, bytes]:
    """One request that waits for the server to listen (it binds before it accepts)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def completion(session: str | None = None, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "rlm", "messages": [{"role": "user", "content": "hello"}]}
    if session:
        body["session_id"] = session
    if stream:
        body["stream"] = True
    return body


def test_a_busy_port_is_one_line_before_any_token(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "rlm", "serve", "--port", str(port), *SCRIPTED],
            capture_output=True, text=True, cwd=tmp_path, env=env_for(tmp_path), timeout=60,
        )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"rlm: error: port {port} is in use; pass --port to choose another (--port 0 picks "
        "a free one)"
    ]


def test_a_session_store_that_cannot_open_is_one_line_at_start_up(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "rlm", "serve", "--port", "0", *SCRIPTED,
         "--session-store", str(blocker / "sessions.db")],
        capture_output=True, text=True, cwd=tmp_path, env=env_for(tmp_path), timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[-1].startswith(f"rlm: error: --session-store {blocker / 'sessions.db'}: ")
    assert "Traceback" not in proc.stderr and "serving" not in proc.stderr


def test_access_log_health_and_no_secrets(tmp_path: Path) -> None:
    with rlm_serve(tmp_path, *SCRIPTED) as (base, lines, proc):
        health = call(f"{base}/health", token=None)
        unauthorized = call(f"{base}/v1/models", token="wrong-token")
        answered = call(f"{base}/v1/chat/completions", "POST", completion("notes"))
        streamed = call(f"{base}/v1/chat/completions?x=1", "POST", completion(stream=True))
        logged = finish(proc, lines)
    assert health == (200, b'{"status":"ok"}')
    assert unauthorized[0] == 401
    assert answered[0] == 200 and streamed[0] == 200
    tokens = json.loads(answered[1])["usage"]["total_tokens"]
    assert tokens > 0
    access = [line for line in logged if re.match(r"rlm: (GET|POST) /", line)]
    pattern = r"rlm: {} {} {} \d+(ms|\.\d\ds) session={} tokens={}$"
    expected = [
        ("GET", "/health", 200, "-", "-"),
        ("GET", "/v1/models", 401, "-", "-"),
        ("POST", "/v1/chat/completions", 200, "notes", f"{tokens:,}"),
        ("POST", "/v1/chat/completions", 200, "-", r"[\d,]+"),
    ]
    assert len(access) == len(expected), logged
    for line, fields in zip(access, expected, strict=True):
        assert re.match(pattern.format(*fields), line), line
    text = "\n".join(logged)
    assert TOKEN not in text and "wrong-token" not in text and "hello" not in text
    assert "Authorization" not in text and "x=1" not in text


class Refusing(BaseHTTPRequestHandler):
    """An OpenAI-compatible upstream that refuses every key."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        data = json.dumps({"error": {"message": "Incorrect API key provided"}}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.skipif(importlib.util.find_spec("openai") is None, reason="needs openai")
def test_a_failing_provider_is_logged(tmp_path: Path) -> None:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{upstream.server_address[1]}/v1"
    try:
        with rlm_serve(tmp_path, "--base-url", url, "--model", "m") as (base, lines, proc):
            failed = call(f"{base}/v1/chat/completions", "POST", completion("s1"))
            streamed = call(f"{base}/v1/chat/completions", "POST", completion(stream=True))
            logged = finish(proc, lines)
    finally:
        upstream.shutdown()
        upstream.server_close()
    assert failed[0] == 502 and streamed[0] == 200
    provider = [line for line in logged if line.startswith("rlm: the model provider failed: ")]
    assert len(provider) == 2, logged
    assert f"{url} returned HTTP 401: Incorrect API key provided" in provider[0]
    access = [line for line in logged if line.startswith("rlm: POST ")]
    assert re.match(r"rlm: POST /v1/chat/completions 502 \S+ session=s1 tokens=-$", access[0])
    assert re.match(
        r"rlm: POST /v1/chat/completions 200 \S+ session=- tokens=- error=upstream_error$",
        access[1],
    )


GGUF_READY = importlib.util.find_spec("llama_cpp") is not None and bool(
    __import__("rlm.clients.embedded_model", fromlist=["x"]).default_gguf_path()
)


@pytest.mark.llama
@pytest.mark.skipif(not GGUF_READY, reason="needs llama-cpp-python and the embedded model")
def test_the_embedded_model_loads_before_serving(tmp_path: Path) -> None:
    with rlm_serve(tmp_path) as (base, lines, proc):
        health = call(f"{base}/health", token=None)
        logged = finish(proc, lines)
    assert health[0] == 200
    loading = logged.index("rlm: loading the model (embedded) now, not on the first request…")
    loaded = next(i for i, line in enumerate(logged) if line.startswith("rlm: model loaded in "))
    serving = next(i for i, line in enumerate(logged) if line.startswith("rlm: serving "))
    assert loading < loaded < serving


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], 64),
        (["--max-concurrency", "200"], 200),
        (["--max-concurrency", "200", "--max-sessions", "10"], 10),
    ],
)
def test_live_sessions_default_to_at_least_the_concurrency(flags: list[str], expected: int) -> None:
    """Every running request may hold a session of its own: with the default
    --max-sessions, 200 concurrent conversations were refused 429 sessions_full even
    with a store."""
    from rlm.cli import build_parser
    from rlm.cli.factory import SettingsFactory, from_args
    from rlm.cli.serve import build_app

    args = build_parser().parse_args(["serve", *SCRIPTED, *flags])
    settings, setup = from_args(args)
    app = build_app(settings, SettingsFactory(settings, setup), "tok")
    assert app.state.sessions.max_sessions == expected
