"""``rlm serve`` stops work that hangs: ``--max-timeout`` ends a run stuck on a model
that never answers, and SIGTERM drains, then cancels, within ``--shutdown-timeout``."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("openai")

from test_serve_edges import TOKEN, completion, rlm_serve


@contextmanager
def hung_upstream() -> Iterator[tuple[str, threading.Event]]:
    """A model server that accepts connections and reads requests, but never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    asked = threading.Event()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            held.append(conn)
            asked.set()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1", asked
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()


def post(url: str, timeout: float) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        url, data=json.dumps(completion()).encode(), method="POST",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


MODEL = ["--model", "m", "--api-key-env", "HUNG_KEY"]


def test_max_timeout_ends_a_run_stuck_on_a_hung_model(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HUNG_KEY", "x")
    with hung_upstream() as (url, asked):
        args = ["--base-url", url, *MODEL, "--max-timeout", "1"]
        with rlm_serve(tmp_path, *args) as (base, _lines, _proc):
            status, body = post(f"{base}/v1/chat/completions", timeout=60)
    assert asked.is_set()
    assert status == 200, body
    choice = body["choices"][0]  # type: ignore[index]
    assert choice["finish_reason"] == "length"
    assert body["rlm"]["limit"] == "TimeoutExceededError"  # type: ignore[index]


def test_sigterm_drains_then_cancels_a_hung_request(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HUNG_KEY", "x")
    with hung_upstream() as (url, asked):
        args = ["--base-url", url, *MODEL, "--shutdown-timeout", "1"]
        with rlm_serve(tmp_path, *args) as (base, _lines, proc):
            caller = threading.Thread(
                target=lambda: _ignore(lambda: post(f"{base}/v1/chat/completions", 60)),
                daemon=True,
            )
            caller.start()
            assert asked.wait(30)  # the request is stuck on the model
            stopped_at = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)  # without a bound uvicorn waits for the request
            took = time.monotonic() - stopped_at
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has stopped
    assert took < 25  # a bound, not a benchmark: one second of grace, then cancelled


def _ignore(call: object) -> None:
    with contextlib.suppress(Exception):
        call()  # type: ignore[operator]
