"""Record a run against the real llama.cpp server, then replay it with no server.

SmolLM2-135M cannot write the code an RLM run needs, so a loopback proxy in front of
``llama_cpp.server`` adds a GBNF grammar that makes the real model emit the scripted
reply (real tokens, real usage); plain sub-calls are answered freely by the model. The
proxy is shut down before the replay: the recorded run must come back identical
without any model, and a changed environment must show up at its cell.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from rlm import RLM
from rlm.logger import RLMLogger
from rlm.testing import replay_run

pytestmark = [pytest.mark.llama, pytest.mark.timeout(300)]


def _script(messages: list[dict[str, Any]], data: Path) -> str | None:
    if len(messages) == 1:
        return None  # llm_query: the model answers as it likes
    if not any(m["role"] == "assistant" for m in messages):
        return f"```repl\nnote = open({str(data)!r}).read()\nprint(note)\nprint(llm_query('Say hi'))\n```"
    return "FINAL(done)"


class Proxy:
    """Forwards chat requests to the llama server, forcing the scripted replies."""

    def __init__(self, upstream: str, data: Path) -> None:
        self.calls = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                forced = _script(body["messages"], data)
                body.update(max_tokens=16, temperature=0, seed=1)
                if forced is not None:
                    literal = forced.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
                    body.update(grammar=f'root ::= "{literal}"', max_tokens=256)
                request = urllib.request.Request(
                    f"{upstream}/chat/completions",
                    data=json.dumps(body).encode(),
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(request, timeout=200) as resp:
                    reply = resp.read()
                proxy.calls += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def recorded(llama_server: Any, tmp_path: Path) -> Iterator[tuple[str, Any, Path, int]]:
    data = tmp_path / "note.txt"
    data.write_text("first note")
    proxy = Proxy(llama_server.base_url, data)
    try:
        logger = RLMLogger(log_dir=str(tmp_path / "logs"))
        with RLM(
            backend="openai",
            backend_kwargs={"model_name": "smollm2", "base_url": proxy.base_url, "api_key": "k"},
            logger=logger,
            record=True,
            max_iterations=3,
        ) as rlm:
            result = rlm.completion("a context", root_prompt="Read the note.")
    finally:
        proxy.close()  # the model is gone from here on
    assert logger.log_file_path is not None
    yield logger.log_file_path, result, data, proxy.calls


def test_a_llama_run_replays_offline_identically(recorded: tuple[str, Any, Path, int]) -> None:
    log, result, _, calls = recorded
    assert result.response == "done" and calls == 3
    recorded_usage = result.usage_summary.model_usage_summaries["smollm2"]
    assert recorded_usage.total_input_tokens > 0  # real tokens from the real model
    with RLM(
        backend="openai",
        backend_kwargs={"model_name": "smollm2", "base_url": "http://127.0.0.1:9/v1"},
        replay=log,
        max_iterations=3,
    ) as rlm:
        again = rlm.completion("a context", root_prompt="Read the note.")
        report = rlm.replay_report()
    assert report.identical, report.summary()
    assert again.response == "done" and report.calls_answered == 3
    replayed_usage = again.usage_summary.model_usage_summaries["smollm2"]
    assert replayed_usage.total_input_tokens == recorded_usage.total_input_tokens
    assert replay_run(log).identical  # rlm.testing, from the recorded settings alone


def test_a_changed_environment_diverges_at_its_cell(recorded: tuple[str, Any, Path, int]) -> None:
    log, _, data, _ = recorded
    data.write_text("second note")
    report = replay_run(log)
    first = report.divergences[0]
    assert (first.kind, first.where) == ("cell_output", "completion 1, iteration 1, cell 1")
    assert first.recorded.startswith("first note") and first.new.startswith("second note")
