"""Shared by the server tests: a scripted RLM factory and a uvicorn server on loopback.

The scripted root model answers by keywords in the root prompt, so a test says what
the "model" does in the question itself:

- ``REMEMBER <word>``: stores the word in the REPL variable ``secret``;
- ``RECALL``: answers with ``secret`` (a NameError unless an earlier turn set it);
- anything else: answers ``<type of context>:<len(context)>``.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rlm import RLM
from rlm.base.types import Prompt

TOKEN = "test-token-123"


def repl(code: str) -> str:
    return f"```repl\n{code}\n```"


def respond(prompt: Prompt) -> str:
    if isinstance(prompt, str):  # a sub-call
        return "sub:" + prompt[:20]
    text = "\n".join(str(m.get("content")) for m in prompt if isinstance(m, dict))
    if match := re.search(r"REMEMBER (\w+)", text):
        return repl(f"secret = {match.group(1)!r}\nanswer['content'] = 'stored'\n"
                    "answer['ready'] = True")  # fmt: skip
    if "RECALL" in text:
        return repl("answer['content'] = secret\nanswer['ready'] = True")
    return repl(
        "answer['content'] = f'{type(context).__name__}:{len(context)}'\nanswer['ready'] = True"
    )


class ScriptedFactory:
    """An ``RLMFactory`` over the scripted backend; records what it built."""

    def __init__(self, latency: float = 0.0, **rlm_kwargs: Any) -> None:
        self.latency = latency
        self.rlm_kwargs = rlm_kwargs
        self.built: list[RLM] = []

    def __call__(self, *, session_id: str | None = None, trajectory: bool = False) -> RLM:
        kwargs: dict[str, Any] = {"model_name": "scripted", "responder": respond}
        if self.latency:
            kwargs["latency"] = self.latency
        options: dict[str, Any] = {"max_iterations": 3, **self.rlm_kwargs}
        rlm = RLM(
            backend="scripted",
            backend_kwargs=kwargs,
            persistent=session_id is not None,
            session_id=session_id,
            **options,
        )
        self.built.append(rlm)
        return rlm


@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free loopback port; yields the /v1 base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
