"""``rlm serve`` as a user starts it: a subprocess, a printed token, the openai client."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

REPO = Path(__file__).resolve().parents[2]
REPLY = "```repl\nanswer['content'] = 'served ' + str(len(context))\nanswer['ready'] = True\n```"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def rlm_serve(tmp_path: Path, token: str | None) -> Iterator[tuple[str, list[str]]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RLM_", "OPENAI_"))}
    env.update(PYTHONPATH=str(REPO), RLM_BACKEND="scripted")
    env["RLM_BACKEND_KWARGS"] = json.dumps({"model_name": "scripted", "responses": [REPLY]})
    if token:
        env["RLM_SERVER_TOKEN"] = token
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlm", "serve", "--port", str(port)],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        while not any(line.startswith("rlm: serving") for line in lines):
            line = proc.stderr.readline()
            assert line, f"rlm serve exited early: {lines}"
            lines.append(line.rstrip("\n"))
        lines.append(proc.stderr.readline().rstrip("\n"))  # the token line
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 15
        while True:  # uvicorn binds just after the banner
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, lines
                time.sleep(0.05)
        yield url, lines
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


def test_generated_token_is_printed_and_works(tmp_path: Path) -> None:
    with rlm_serve(tmp_path, token=None) as (url, lines):
        assert lines[0] == f"rlm: serving {url} · models: rlm, rlm:scripted"
        assert lines[1].startswith("rlm: token: ")
        token = lines[1].split()[2]
        client = openai.OpenAI(base_url=url, api_key=token, max_retries=0)
        reply = client.chat.completions.create(
            model="rlm", messages=[{"role": "user", "content": "hello"}]
        )
        assert reply.choices[0].message.content == "served 5"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="x", max_retries=0).models.list()


def test_given_token_is_never_echoed(tmp_path: Path) -> None:
    with rlm_serve(tmp_path, token="my-secret-token") as (url, lines):
        assert "my-secret-token" not in "\n".join(lines)
        client = openai.OpenAI(base_url=url, api_key="my-secret-token", max_retries=0)
        assert [m.id for m in client.models.list()] == ["rlm", "rlm:scripted"]
