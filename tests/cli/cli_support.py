"""Shared by the CLI edge tests: the ``rlm`` command in a subprocess, and a loopback
OpenAI-compatible upstream that checks the bearer key it is sent.

Every run gets a clean environment: no ``RLM_*``, ``OPENAI_*`` or ``ANTHROPIC_*``
variables unless the test passes them, ``HOME``/``XDG_*`` inside the test's folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RLM = Path(sys.executable).with_name("rlm")  # the venv's console script
GOOD_KEY = "sk-good-test-key"


def scripted(*replies: str) -> list[str]:
    """``--backend scripted`` flags replying with ``replies`` in order."""
    kwargs = {"model_name": "scripted", "responses": list(replies)}
    return ["--backend", "scripted", "--backend-kwargs", json.dumps(kwargs)]


def answer_code(expression: str) -> str:
    """A scripted reply whose REPL code answers ``expression``."""
    return f"```repl\nanswer['content'] = {expression}\nanswer['ready'] = True\n```"


def clean_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    drop = ("RLM_", "OPENAI_", "ANTHROPIC_", "XDG_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / "data"), PYTHONPATH=str(REPO))
    env.update(XDG_STATE_HOME=str(home / "state"))
    env.update(extra or {})
    return env


def rlm(
    *args: str,
    cwd: Path,
    stdin: str | None = None,
    env: Mapping[str, str] | None = None,
    console_script: bool = False,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``python -m rlm ARGS`` (or the ``rlm`` console script) in ``cwd``."""
    use_script = console_script and RLM.is_file()
    command = [str(RLM)] if use_script else [sys.executable, "-m", "rlm"]
    return subprocess.run(
        [*command, *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env=clean_env(cwd, env),
        cwd=cwd,
        timeout=timeout,
    )


class Upstream:
    """A loopback OpenAI-compatible server: 401 unless the bearer key is ``GOOD_KEY``
    (``require_key=False``: any key), else a completion whose text is ``reply``.
    ``keys`` records the Authorization header of every request."""

    def __init__(self, reply: str = "FINAL(the White Rabbit)", *, require_key: bool = True,
                 status: int | None = None) -> None:  # fmt: skip
        self.reply, self.require_key, self.status = reply, require_key, status
        self.keys: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, body = outer.answer(self.headers.get("Authorization"))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def answer(self, authorization: str | None) -> tuple[int, dict[str, Any]]:
        self.keys.append(authorization)
        if self.status is not None:
            return self.status, {"error": {"message": "upstream broke", "type": "server_error"}}
        if self.require_key and authorization != f"Bearer {GOOD_KEY}":
            return 401, {"error": {"message": "Incorrect API key provided",
                                   "type": "invalid_request_error"}}  # fmt: skip
        message = {"role": "assistant", "content": self.reply}
        return 200, {
            "id": "c1",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35},
        }


@contextmanager
def upstream(**kwargs: Any) -> Iterator[Upstream]:
    server = Upstream(**kwargs)
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
