"""``LoopbackModel``: a loopback OpenAI-compatible chat server for tests that stop work
in flight or lose the provider mid-run.

Replies are scripted per call (1-based). A call listed in ``hang`` is never answered:
the handler waits up to ``hang_seconds`` watching the client's socket and records the
client going away (``disconnected``), which is how a test sees that a request in flight
was cancelled rather than waited for. ``stop_after=n`` closes the server's listening
socket before answering call ``n``, so every later request is refused (``Connection
refused``), as when a local provider is shut down mid-run.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Replies = list[str] | Callable[[int, dict[str, Any]], str]


class LoopbackModel:
    def __init__(
        self,
        replies: Replies,
        *,
        hang: frozenset[int] = frozenset(),
        hang_seconds: float = 60.0,
        stop_after: int | None = None,
    ) -> None:
        self.replies, self.hang, self.hang_seconds = replies, hang, hang_seconds
        self.stop_after = stop_after
        self.calls = 0
        self.bodies: list[dict[str, Any]] = []
        self.hung = threading.Event()  # a call listed in ``hang`` arrived
        self.disconnected = threading.Event()  # its client went away while it hung
        self.hang_finished = threading.Event()  # a hung call waited all its time
        self.closed = threading.Event()
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                with outer._lock:
                    outer.calls += 1
                    n = outer.calls
                    outer.bodies.append(body)
                if n in outer.hang:
                    outer._hang(self.connection)
                    return
                if n == outer.stop_after:
                    outer._stop_listening()
                data = json.dumps(outer._completion(outer._reply(n, body))).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._listening = True

    def _reply(self, n: int, body: dict[str, Any]) -> str:
        if callable(self.replies):
            return self.replies(n, body)
        return self.replies[min(n, len(self.replies)) - 1]

    @staticmethod
    def _completion(text: str) -> dict[str, Any]:
        message = {"role": "assistant", "content": text}
        return {
            "id": "c1",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35},
        }

    def _hang(self, connection: socket.socket) -> None:
        self.hung.set()
        end = time.monotonic() + self.hang_seconds
        while time.monotonic() < end and not self.closed.is_set():
            readable, _, _ = select.select([connection], [], [], 0.05)
            if readable and not connection.recv(1, socket.MSG_PEEK):
                self.disconnected.set()
                return
        if not self.closed.is_set():
            self.hang_finished.set()

    def _stop_listening(self) -> None:
        with self._lock:
            if not self._listening:
                return
            self._listening = False
        self.httpd.shutdown()  # from a handler thread: serve_forever runs in another
        self.httpd.server_close()

    def close(self) -> None:
        self.closed.set()
        self._stop_listening()


@contextmanager
def loopback_model(replies: Replies, **kwargs: Any) -> Iterator[LoopbackModel]:
    server = LoopbackModel(replies, **kwargs)
    server._thread.start()
    try:
        yield server
    finally:
        server.close()
