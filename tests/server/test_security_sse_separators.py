"""SSE output survives line separators other than ``\\n`` in the answer.

httpx's ``iter_lines`` (like Python's ``str.splitlines``) also splits on U+2028, U+2029,
U+0085 and a few control characters. The server escapes everything outside ASCII in
its SSE JSON, so a line is one SSE line whoever splits it; ``iter_stream`` also
repairs lines that another server's stream had split that way.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
from server_support import TOKEN, serve_in_thread  # noqa: E402

from rlm import RLM  # noqa: E402
from rlm.server import client, create_app  # noqa: E402
from rlm.server.client import iter_events, iter_stream  # noqa: E402

TRICKY = "line\u2028sep\u2029para\x85nel\x0bvt\x1crs end: caf\u00e9 \U0001f600"


class TrickyFactory:
    """Every RLM answers with ``TRICKY`` and prints it from its cell too (so the
    trajectory events carry it as well)."""

    def __call__(self, *, session_id: str | None = None, trajectory: bool = False) -> RLM:
        code = f"print({TRICKY!r})\nanswer['content'] = {TRICKY!r}\nanswer['ready'] = True"
        return RLM(
            backend="scripted",
            backend_kwargs={"model_name": "scripted", "responses": [f"```repl\n{code}\n```"]},
            max_iterations=2,
        )


def stream_lines(base: str) -> tuple[bytes, list[str]]:
    body = {"model": "rlm", "stream": True, "messages": [{"role": "user", "content": "q"}]}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", f"{base}/chat/completions", json=body, headers=headers) as r:
            assert r.status_code == 200
            raw = r.read()
        response = httpx.Response(200, content=raw)  # split exactly as a client would
        return raw, list(response.iter_lines())


def answer_of(items: list[tuple[str, Any]]) -> str:
    parts = []
    for kind, value in items:
        if kind == "chunk":
            for choice in value.get("choices") or []:
                parts.append(choice["delta"].get("content") or "")
    return "".join(parts)


def test_stream_with_line_separators_in_the_answer() -> None:
    app = create_app(TrickyFactory(), token=TOKEN)
    with serve_in_thread(app) as base:
        raw, lines = stream_lines(base)
    assert raw.isascii(), "SSE JSON must be ASCII-escaped"
    items = list(iter_stream(lines))
    assert answer_of(items) == TRICKY
    assert items[-1] == ("done", None)
    events = list(iter_events(lines))
    (final,) = [e for e in events if e["type"] == "final_answer"]
    assert final["data"]["answer"] == TRICKY
    (cell,) = [e for e in events if e["type"] == "code_cell_finished"]
    assert cell["data"]["result"]["stdout"] == TRICKY + "\n"


def _unescaped_stream() -> bytes:
    """An SSE body as a server that does not escape would send it."""
    chunk = {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": TRICKY}}],
    }
    event = {"type": "code_cell_finished", "data": {"stdout": TRICKY}}
    return (
        f": rlm-event {json.dumps(event, ensure_ascii=False)}\n\n"
        f"data: {json.dumps(chunk, ensure_ascii=False)}\n\ndata: [DONE]\n\n"
    ).encode()


def test_iter_stream_repairs_lines_split_on_unicode_separators() -> None:
    lines = list(httpx.Response(200, content=_unescaped_stream()).iter_lines())
    assert len(lines) > 6  # httpx did split inside the JSON
    items = list(iter_stream(lines))
    assert [kind for kind, _ in items] == ["event", "chunk", "done"]
    # Which separator was lost cannot be known; the text around it survives.
    answer = answer_of(items)
    for piece in ("line", "sep", "para", "nel", "vt", "rs end: caf\u00e9 \U0001f600"):
        assert piece in answer
    assert len(answer) == len(TRICKY)


def test_iter_sse_lines_splits_raw_bytes_exactly() -> None:
    body = _unescaped_stream()
    chunks = [body[i : i + 7] for i in range(0, len(body), 7)]  # split mid-character too
    items = list(iter_stream(client.iter_sse_lines(chunks)))
    assert answer_of(items) == TRICKY
    assert items[0][1]["data"]["stdout"] == TRICKY
