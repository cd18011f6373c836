"""rlms itself as a method, in its own interpreter, against the same model as rlmx.

The model is a real OpenAI-compatible HTTP server on loopback whose replies come from
the reference solver; rlms (through the ``openai`` SDK in its venv) and rlmx (through
its ``openai`` backend) both talk to it, on the same tasks. rlms is found at
``$RLMX_RLMS_PYTHON`` or in the benchmark venv (``benchmarks/run.py`` creates it at
``~/.cache/rlmx-bench/rlms-0.1.3``); without it the test is skipped.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import ENVIRONMENT

from rlm.evals import Suite, build_methods, run_eval
from rlm.evals.oracle import respond


def _rlms_python() -> str | None:
    candidates = [
        os.environ.get("RLMX_RLMS_PYTHON"),
        str(Path.home() / ".cache/rlmx-bench/rlms-0.1.3/bin/python"),
    ]
    return next((c for c in candidates if c and Path(c).is_file()), None)


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = respond(body["messages"])
        prompt = sum(len(str(m.get("content", ""))) for m in body["messages"]) // 4
        reply = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": text},
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": len(text) // 4,
                "total_tokens": prompt + len(text) // 4,
            },
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def model_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_rlmx_over_http_base_and_rlm(tmp_path: Path, model_server: str) -> None:
    """The paper's comparison path with a real provider client: the base model called
    directly and the RLM, through rlmx's openai backend, on an HTTP model server."""
    kwargs = {"model_name": "oracle", "base_url": model_server, "api_key": "sk-test-not-a-key"}
    rlm = {"environment": ENVIRONMENT, "max_iterations": 3}
    methods = build_methods(["base", "rlm-d1"], "openai", kwargs, rlm)
    run = run_eval(Suite(methods, ["oolong", "codeqa"], [2048], [0, 1]), tmp_path, quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(r["status"] == "ok" and r["input_tokens"] > 0 for r in rows)
    assert {m["method"]: m["mean"] for m in run.report["methods"]} == {"base": 1.0, "rlm-d1": 1.0}
    fits = [r["notes"]["window"] for r in rows if r["method"] == "base"]
    assert all(f["window_tokens"] == 128_000 and not f["truncated"] for f in fits)


def test_rlms_and_rlmx_on_the_same_model_and_tasks(tmp_path: Path, model_server: str) -> None:
    python = _rlms_python()
    if python is None:
        pytest.skip("no rlms interpreter: set RLMX_RLMS_PYTHON (a venv with pip install rlms)")
    kwargs = {"model_name": "oracle", "base_url": model_server, "api_key": "sk-test-not-a-key"}
    methods = build_methods(
        ["rlm-d1", "rlms"],
        "openai",
        kwargs,
        {"environment": ENVIRONMENT, "max_iterations": 3},
        rlms_python=python,
    )
    run = run_eval(
        Suite(methods, ["niah", "oolong", "pairs", "codeqa"], [1024], [0, 1]), tmp_path, quiet=True
    )
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    rlms_rows = [r for r in rows if r["method"] == "rlms"]
    assert len(rlms_rows) == 8 and all(r["status"] == "ok" for r in rlms_rows), rlms_rows[0]
    assert all(r["notes"]["rlms_version"] for r in rlms_rows)
    assert all(r["input_tokens"] > 0 for r in rows)
    assert {m["method"]: m["mean"] for m in run.report["methods"]} == {"rlm-d1": 1.0, "rlms": 1.0}
    assert "sk-test" not in (tmp_path / "suite.json").read_text()


def test_an_interpreter_without_rlms_is_a_setup_failure(tmp_path: Path) -> None:
    import sys

    (method,) = build_methods(
        ["rlms"], "openai", {"model_name": "x"}, {}, rlms_python=sys.executable
    )
    run = run_eval(Suite([method], ["niah"], [1024], [0]), tmp_path, quiet=True)
    (row,) = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    # this interpreter has rlmx, not rlms: the child must not mistake one for the other
    assert (row["status"], row["error_kind"]) == ("failed", "config")
    assert "has no rlms" in row["error"] and run.failed_config == 1
