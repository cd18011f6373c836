"""Bad input to ``rlm serve`` is a clear 4xx in OpenAI's error JSON, never a 500, and
is refused before anything runs (issue 19, items 7 and 8).

Most tests talk to one real ``rlm serve`` subprocess on loopback (the scripted
backend, a SQLite session store; its stderr, access log included, goes to a file the
tests read). Where a test must see that no RLM was built, it runs the app in-process
through ``httpx.ASGITransport`` with the scripted factory, as ``test_app_inprocess``
does. The upstream 429 test runs ``rlm serve`` against a fake OpenAI-compatible
upstream on loopback.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from server_support import TOKEN as INPROCESS_TOKEN  # noqa: E402
from server_support import ScriptedFactory  # noqa: E402

from rlm.base.errors import RateLimitError, SessionLockedError  # noqa: E402
from rlm.server import create_app  # noqa: E402
from rlm.server.errors import APIError, error_response, translate  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TOKEN = "bad-input-token-5c1d"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
REPLY = "```repl\nanswer['content'] = 'served ' + str(len(context))\nanswer['ready'] = True\n```"
SCRIPTED = ["--backend", "scripted", "--backend-kwargs",
            json.dumps({"model_name": "scripted", "responses": [REPLY]})]  # fmt: skip


# -- a real rlm serve ------------------------------------------------------------------


@dataclass
class Served:
    base: str  # http://127.0.0.1:PORT
    log: Path  # the server's stderr: banner, access lines, warnings, tracebacks
    proc: subprocess.Popen[bytes]
    store: str  # the --session-store spec

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def mark(self) -> int:
        return len(self.text())

    def wait_for(self, pattern: str, since: int, count: int = 1, within: float = 20.0) -> str:
        """The server's log after ``since`` once ``count`` lines match ``pattern``."""
        deadline = time.monotonic() + within
        while True:
            new = self.text()[since:]
            if len(re.findall(pattern, new, re.MULTILINE)) >= count:
                return new
            assert time.monotonic() < deadline, f"no {pattern!r} in the log: {new!r}"
            assert self.proc.poll() is None, f"rlm serve exited: {self.text()}"
            time.sleep(0.05)


@contextmanager
def rlm_serve(tmp: Path, *args: str) -> Iterator[Served]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RLM_", "OPENAI_"))}
    env.update(PYTHONPATH=str(REPO), HOME=str(tmp), RLM_SERVER_TOKEN=TOKEN)
    log = tmp / "serve.log"
    store = f"sqlite:///{tmp / 'sessions.db'}?lock_timeout=0.5"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rlm", "serve", "--port", "0", "--session-store", store, *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, cwd=tmp, env=env,
        )  # fmt: skip
    served = Served("", log, proc, store)
    try:
        deadline = time.monotonic() + 60
        while not (match := re.search(r"rlm: serving (http://\S+)/v1 ", served.text())):
            assert proc.poll() is None, f"rlm serve exited: {served.text()}"
            assert time.monotonic() < deadline, f"rlm serve did not start: {served.text()}"
            time.sleep(0.05)
        served.base = match.group(1)
        yield served
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a server stuck on the event loop (old bugs)
            proc.kill()
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("bad-input")
    with rlm_serve(tmp, *SCRIPTED, "--header-timeout", "1.5") as server:
        yield server


def post_raw(served: Served, raw: bytes, timeout: float = 60) -> httpx.Response:
    with httpx.Client(base_url=served.base, timeout=timeout) as client:
        return client.post("/v1/chat/completions", content=raw, headers=AUTH)


def post(served: Served, body: dict[str, Any], timeout: float = 60) -> httpx.Response:
    return post_raw(served, json.dumps(body).encode(), timeout)


def chat(content: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": "rlm", "messages": [{"role": "user", "content": content}], **extra}


def error_of(response: httpx.Response, status: int, code: str | None) -> dict[str, Any]:
    """The OpenAI error object of ``response``, checked for ``status`` and ``code``."""
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["message"], error
    return error


def assert_quiet(served: Served, since: int) -> None:
    """Nothing after ``since`` in the server's log is a traceback or an unexpected error."""
    new = served.text()[since:]
    assert "Traceback" not in new and "unexpected error" not in new, new


# -- malformed JSON ----------------------------------------------------------------------


def test_deeply_nested_json_is_a_400_not_a_recursion_error(served: Served) -> None:
    since = served.mark()
    deep = b"[" * 100_000
    inside = (b'{"model": "rlm", "messages": [{"role": "user", "content": "hi"}], "x": '
              + b"[" * 100_000 + b"]" * 100_000 + b"}")  # fmt: skip
    for raw in (deep, inside):
        error = error_of(post_raw(served, raw), 400, "invalid_json")
        assert "nest" in error["message"] and error["type"] == "invalid_request_error"
    served.wait_for(r"^rlm: POST /v1/chat/completions 400 ", since, count=2)
    assert_quiet(served, since)


def test_a_5000_digit_integer_anywhere_is_a_400(served: Served) -> None:
    since = served.mark()
    digits = "7" * 5000
    for where in (f'"max_tokens": {digits}', f'"metadata": {{"n": {digits}}}',
                  f'"messages": [{{"role": "user", "content": "hi", "extra": [{digits}]}}]'):  # fmt: skip
        raw = ('{"model": "rlm", "messages": [{"role": "user", "content": "hi"}], '
               + where + "}").encode()  # fmt: skip
        error = error_of(post_raw(served, raw), 400, "invalid_json")
        assert "4,300 digits" in error["message"], error
    for constant in ("NaN", "Infinity", "-Infinity"):  # Python's extensions, not JSON
        raw = f'{{"model": "rlm", "temperature": {constant}, "messages": []}}'.encode()
        assert constant in error_of(post_raw(served, raw), 400, "invalid_json")["message"]
    served.wait_for(r"^rlm: POST /v1/chat/completions 400 ", since, count=6)
    assert_quiet(served, since)


# -- strings an encoder, a store or a provider cannot take -----------------------------

SURROGATE = "a\ud800b"  # json.dumps writes it as the escape "\ud800"
SURROGATE_CASES = [
    (chat(SURROGATE), "messages[0].content"),
    (
        {
            "model": "rlm",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "ok"},
                        {"type": "text", "text": SURROGATE},
                    ],
                }
            ],
        },
        "messages[0].content[1].text",
    ),
    (chat(root_prompt=SURROGATE), "root_prompt"),
    (chat(session_id="s-" + SURROGATE), "session_id"),
    (chat(user=SURROGATE), "user"),
    (chat(metadata={"session_id": SURROGATE}), "metadata.session_id"),
    ({**chat(), "model": "rlm" + SURROGATE}, "model"),
    (chat(tools=[{"description": SURROGATE}]), "tools[0].description"),
]


@pytest.mark.parametrize(("body", "param"), SURROGATE_CASES)
def test_a_lone_surrogate_is_a_400_naming_the_field(
    served: Served, body: dict[str, Any], param: str
) -> None:
    raw = json.dumps(body).encode()
    assert b"\\ud800" in raw
    error = error_of(post_raw(served, raw), 400, "invalid_unicode")
    assert error["param"] == param and "surrogate" in error["message"], error


def test_a_lone_surrogate_is_refused_before_any_rlm_is_built() -> None:
    factory = ScriptedFactory()
    app = create_app(factory, token=INPROCESS_TOKEN, model_ids=["rlm"])
    headers = {"Authorization": f"Bearer {INPROCESS_TOKEN}"}

    async def send_all() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [await client.post("/v1/chat/completions", content=json.dumps(body), headers=headers)
                    for body, _ in SURROGATE_CASES]  # fmt: skip

    responses = asyncio.run(send_all())
    assert [r.status_code for r in responses] == [400] * len(SURROGATE_CASES)
    assert factory.built == []  # no RLM started, no session made


def test_a_key_with_a_lone_surrogate_is_a_400(served: Served) -> None:
    error = error_of(post(served, chat(metadata={"k\ud800": "v"})), 400, "invalid_unicode")
    assert error["param"] == "metadata"


# -- OpenAI's typed parameters -------------------------------------------------------------

WRONG_TYPES = [
    ({"stream": "no"}, "stream", "invalid_type"),
    ({"stream": 0}, "stream", "invalid_type"),
    (
        {"stream_options": {"include_usage": "yes"}, "stream": True},
        "stream_options.include_usage",
        "invalid_type",
    ),
    ({"stream_options": "usage"}, "stream_options", "invalid_type"),
    ({"temperature": "hot"}, "temperature", "invalid_type"),
    ({"temperature": True}, "temperature", "invalid_type"),
    ({"temperature": 2.5}, "temperature", "decimal_above_max_value"),
    ({"top_p": -0.1}, "top_p", "decimal_below_min_value"),
    ({"max_tokens": "100"}, "max_tokens", "invalid_type"),
    ({"max_tokens": 1.5}, "max_tokens", "invalid_type"),
    ({"max_tokens": 0}, "max_tokens", "integer_below_min_value"),
    ({"n": "1"}, "n", "invalid_type"),
    ({"n": True}, "n", "invalid_type"),
    ({"seed": 1.0}, "seed", "invalid_type"),
    ({"stop": [1]}, "stop", "invalid_type"),
    ({"rlm_events": "off"}, "rlm_events", "invalid_type"),
    ({"session_id": 7}, "session_id", "invalid_type"),
    ({"metadata": {"session_id": 7}}, "metadata.session_id", "invalid_type"),
    ({"user": ["me"]}, "user", "invalid_type"),
    ({"root_prompt": {"text": "q"}}, "root_prompt", "invalid_type"),
    ({"messages": [{"role": ["user"], "content": "hi"}]}, "messages[0]", None),
    (
        {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
        "messages[0].content[0].text",
        "invalid_type",
    ),
]


@pytest.mark.parametrize(("extra", "param", "code"), WRONG_TYPES)
def test_a_wrong_type_is_a_400_naming_the_parameter(
    served: Served, extra: dict[str, Any], param: str, code: str | None
) -> None:
    since = served.mark()
    response = post(served, chat(**extra))
    error = error_of(response, 400, code)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    if code == "invalid_type":
        assert error["message"].startswith(f"Invalid type for '{param}': expected "), error
    assert not response.headers["content-type"].startswith("text/event-stream")
    served.wait_for(r"POST /v1/chat/completions 400 ", since)
    assert_quiet(served, since)


def test_right_types_are_accepted(served: Served) -> None:
    extra = {"stream": False, "stream_options": None, "temperature": 0.5, "top_p": 1,
             "max_tokens": 100, "n": 1, "seed": 7, "stop": ["END"], "user": None,
             "metadata": {"purpose": "test"}, "rlm_events": True}  # fmt: skip
    response = post(served, chat(**extra))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"].startswith("served ")
    streamed = post(served, chat(stream=True, stream_options={"include_usage": False}))
    assert streamed.status_code == 200
    assert streamed.headers["content-type"].startswith("text/event-stream")


# -- client text echoed back ------------------------------------------------------------------


def test_an_unknown_huge_model_name_is_cut_in_the_404(served: Served) -> None:
    name = "m" * 1_000_000
    error = error_of(post(served, {**chat(), "model": name}, timeout=30), 404, "model_not_found")
    assert "m" * 64 + "…" in error["message"] and "m" * 65 not in error["message"]
    assert len(error["message"]) < 300


# -- a client that leaves, HTTP that is not HTTP ----------------------------------------------


def test_a_client_gone_mid_body_is_a_quiet_499(served: Served) -> None:
    since = served.mark()
    port = int(served.base.rsplit(":", 1)[1])
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}"
            "\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")  # fmt: skip
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode() + b'{"model": "')
        time.sleep(0.3)  # the server is reading the body when the client goes
    new = served.wait_for(r"^rlm: POST /v1/chat/completions (499|5\d\d) ", since)
    assert re.search(r"^rlm: POST /v1/chat/completions 499 ", new, re.MULTILINE), new
    assert_quiet(served, since)
    assert post(served, chat()).status_code == 200  # and the server carries on


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nthis is not a header\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
        b"GET /v1/mo dels HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
)
def test_malformed_http_gets_a_json_400(served: Served, request_bytes: bytes) -> None:
    port = int(served.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request_bytes)
        answer = read_until_closed(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 400"), answer
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_http_request"
    assert "Invalid HTTP request" in error["message"]


def test_headers_that_never_finish_get_a_json_408(served: Served) -> None:
    port = int(served.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n")  # and nothing more
        answer = read_until_closed(sock)  # the server closes it after --header-timeout
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and b"content-type: application/json" in head
    error = json.loads(body)["error"]
    assert error["code"] == "request_timeout" and error["type"] == "invalid_request_error"


# -- errors that say when to retry -----------------------------------------------------------


def test_a_session_locked_elsewhere_is_a_409_with_retry_after(served: Served) -> None:
    from rlm.sessions.store import open_store

    store = open_store(served.store)
    lock = store.acquire_lock("held-elsewhere")  # this test's process holds it
    try:
        response = post(served, chat(session_id="held-elsewhere"))
    finally:
        lock.release()
        store.close()
    error = error_of(response, 409, "session_busy")
    assert error["type"] == "invalid_request_error" and error["param"] == "session_id"
    assert "held-elsewhere" in error["message"]
    assert int(response.headers["retry-after"]) >= 1
    assert post(served, chat(session_id="held-elsewhere")).status_code == 200  # lock gone


class Throttling(BaseHTTPRequestHandler):
    """An OpenAI-compatible upstream that answers every call with 429."""

    calls = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).calls += 1
        data = json.dumps({"error": {"message": "Rate limit reached for requests",
                                     "type": "requests", "code": "rate_limit_exceeded"}}).encode()  # fmt: skip
        self.send_response(429)
        self.send_header("Content-Type", "application/json")
        self.send_header("Retry-After", "0")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.skipif(importlib.util.find_spec("openai") is None, reason="needs openai")
def test_an_upstream_429_is_a_429_with_retry_after(tmp_path: Path) -> None:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Throttling)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{upstream.server_address[1]}/v1"
    try:
        with rlm_serve(tmp_path, "--base-url", url, "--model", "m") as server:
            response = post(server, chat())
            logged = server.text()
    finally:
        upstream.shutdown()
        upstream.server_close()
    assert Throttling.calls >= 1
    error = error_of(response, 429, "upstream_rate_limited")
    assert error["type"] == "rate_limit_error"
    assert "Rate limit reached" in error["message"]
    assert response.headers["retry-after"] == "1"  # the upstream said 0: at least 1
    assert "Traceback" not in logged


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    limited = error_response(RateLimitError("slow down", retry_after=2.2))
    assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
    unknown = error_response(RateLimitError("slow down"))
    assert unknown.headers["retry-after"] == "1"
    locked = error_response(SessionLockedError("locked by pid 1", retry_after=0.2))
    assert locked.status_code == 409 and locked.headers["retry-after"] == "1"
    assert translate(SessionLockedError("locked"))[1]["error"]["code"] == "session_busy"
    quota = RateLimitError("You exceeded your current quota (insufficient_quota)")
    assert translate(quota)[0] == 502  # billing, not pacing: a retry will not help
    overloaded = error_response(APIError(429, "busy", retry_after=0.5, headers={"X-A": "b"}))
    assert overloaded.headers["retry-after"] == "1" and overloaded.headers["x-a"] == "b"
    forever = error_response(APIError(429, "busy", retry_after=float("inf")))
    assert forever.headers["retry-after"] == "86400"
