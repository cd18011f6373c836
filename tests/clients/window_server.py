"""``WindowServer``: a loopback OpenAI-compatible server that can say its model's window.

``models`` is what ``GET /v1/models`` answers (``None``: 404), ``props`` what the
llama.cpp server's ``GET /props`` answers (``None``: 404). ``POST /v1/chat/completions``
answers ``"ok:<the prompt's first 12 characters>"``. Every request is counted by path.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WindowServer:
    def __init__(self, models: Any = None, props: Any = None) -> None:
        self.models, self.props = models, props
        self.hits: Counter[str] = Counter()
        self.auth: list[str | None] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                with outer._lock:
                    outer.hits["GET " + self.path] += 1
                    outer.auth.append(self.headers.get("Authorization"))
                found = {"/v1/models": outer.models, "/props": outer.props}.get(self.path)
                if found is None:
                    self._send(404, {"error": {"message": "not found"}})
                else:
                    self._send(200, found)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                with outer._lock:
                    outer.hits["POST " + self.path] += 1
                text = str(body["messages"][-1]["content"])[:12]
                self._send(
                    200,
                    {
                        "id": "chatcmpl-1",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body.get("model", "m"),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": f"ok:{text}"},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
                    },
                )

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def posts(self) -> int:
        return sum(n for key, n in self.hits.items() if key.startswith("POST "))

    @property
    def gets(self) -> int:
        return sum(n for key, n in self.hits.items() if key.startswith("GET "))

    def __enter__(self) -> WindowServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


def client_kwargs(server: WindowServer, model: str = "gpt-4o", **extra: Any) -> dict[str, Any]:
    """``backend_kwargs`` for the ``openai`` backend pointed at ``server``."""
    return {"model_name": model, "base_url": server.url, "api_key": "sk-test-key", **extra}
