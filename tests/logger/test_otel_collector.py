"""End to end: an RLM process exports over OTLP/HTTP to a real collector process.

The collector is ``oteltap`` (a dev extra: an OTLP/HTTP receiver, ``python -m oteltap``,
that prints every span and metric it receives as one JSON line). The RLM runs in its own
process with nothing but ``RLM_OTEL=1`` and the standard ``OTEL_EXPORTER_OTLP_ENDPOINT``:
rlmx builds the SDK's OTLP/HTTP exporters itself and the SDK flushes them at exit.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.exporter.otlp.proto.http", reason="rlmx[otel]")
pytest.importorskip("oteltap", reason="the dev extras' OTLP receiver")

HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Collector:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.port = _free_port()
        self.log = out.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "oteltap", "--port", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for line in self.out.read_text().splitlines():
            if line.startswith("{"):
                found.append(json.loads(line))
        return found

    def wait(self, ready: Any, what: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Bounded wait until ``ready(lines)``; fails with what arrived."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.lines()
            if ready(lines):
                return lines
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"collector: no {what}; it printed:\n{self.out.read_text()[-3000:]}")
            time.sleep(0.1)

    def listening(self) -> None:
        self.wait(lambda _: "Listening" in self.out.read_text(), "start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    c = Collector(tmp_path / "collector.ndjson")
    try:
        c.listening()
        yield c
    finally:
        c.stop()


RUN = textwrap.dedent(
    """
    from rlm import RLM
    from otel_support import ANSWER, ROOT, rlm_kwargs

    with RLM(**rlm_kwargs(session_id="e2e-session")) as r:
        assert r.events.active, "RLM_OTEL=1 did not turn tracing on"
        result = r.completion("ctx", root_prompt=ROOT)
    assert result.response == ANSWER, result.response
    print(result.usage_summary.total_input_tokens, result.usage_summary.total_output_tokens)
    """
)


def _attrs(span: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for kv in span.get("attributes", []):
        value = kv["value"]
        out[kv["key"]] = next(iter(value.values())) if value else None
    return out


def test_spans_reach_a_real_collector_over_otlp_http(collector: Collector) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        RLM_OTEL="1",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.port}",
        OTEL_SERVICE_NAME="rlmx-e2e",
    )
    run = subprocess.run(
        [sys.executable, "-c", RUN],
        cwd=HERE,  # otel_support
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    tokens_in, tokens_out = (int(x) for x in run.stdout.split()[-2:])

    def spans_of(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [x for x in lines if "spanId" in x]

    lines = collector.wait(lambda ls: len(spans_of(ls)) >= 8, "8 spans")
    spans = spans_of(lines)
    by_id = {s["spanId"]: s for s in spans}
    names = sorted(s["name"] for s in spans)
    assert names == sorted(
        ["invoke_agent rlm"] * 2 + ["chat m1"] * 4 + ["execute_tool python_repl"] * 2
    )
    assert len({s["traceId"] for s in spans}) == 1
    (root,) = [s for s in spans if not s.get("parentSpanId")]
    root_attrs = _attrs(root)
    assert root["name"] == "invoke_agent rlm"
    assert root_attrs["gen_ai.conversation.id"] == "e2e-session"
    assert root_attrs["gen_ai.operation.name"] == "invoke_agent"
    assert int(root_attrs["gen_ai.usage.input_tokens"]) == tokens_in

    def parent(span: dict[str, Any]) -> dict[str, Any]:
        return by_id[span["parentSpanId"]]

    child = next(s for s in spans if s["name"] == "invoke_agent rlm" and s.get("parentSpanId"))
    assert parent(child)["name"] == "execute_tool python_repl"
    assert parent(parent(child)) is root
    assert _attrs(child)["rlm.depth"] in (1, "1")
    chats = [s for s in spans if s["name"] == "chat m1"]
    assert sum(int(_attrs(c)["gen_ai.usage.input_tokens"]) for c in chats) == tokens_in
    assert sum(int(_attrs(c)["gen_ai.usage.output_tokens"]) for c in chats) == tokens_out
    for chat in chats:
        assert _attrs(chat)["gen_ai.provider.name"] == "scripted"
        assert parent(chat)["name"] in ("invoke_agent rlm", "execute_tool python_repl")
    # The metrics went the same way (exported when the process exited).
    collector.wait(
        lambda ls: any("gen_ai.client.token.usage" in json.dumps(x) for x in ls),
        "gen_ai.client.token.usage metric",
    )
