"""Client helpers for rlmx's SSE extension (no server dependencies).

The official openai client skips SSE comments, so a plain ``stream=True`` call sees an
ordinary chat stream. To watch the run as well, read the raw lines::

    from openai import OpenAI
    from rlm.server.client import iter_events

    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key=TOKEN)
    with client.chat.completions.with_streaming_response.create(
        model="rlm", messages=[{"role": "user", "content": "..."}], stream=True
    ) as response:
        for event in iter_events(response.iter_lines()):
            print(event["type"], event["data"].get("iteration"))
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

EVENT_PREFIX = ": rlm-event "  # same as rlm.server.sse.EVENT_PREFIX


def _text(line: str | bytes) -> str:
    return (line.decode("utf-8") if isinstance(line, bytes) else line).rstrip("\r\n")


def iter_events(lines: Iterable[str | bytes]) -> Iterator[dict[str, Any]]:
    """The trajectory events (dicts, see ``rlm.server.sse``) among an SSE stream's lines."""
    for raw in lines:
        line = _text(raw)
        if line.startswith(EVENT_PREFIX):
            yield json.loads(line[len(EVENT_PREFIX) :])


def iter_stream(lines: Iterable[str | bytes]) -> Iterator[tuple[str, Any]]:
    """Every item of the stream in order: ``("event", dict)`` for a trajectory event,
    ``("chunk", dict)`` for a ``chat.completion.chunk`` (or an error object) and
    ``("done", None)`` for ``data: [DONE]``."""
    for raw in lines:
        line = _text(raw)
        if line.startswith(EVENT_PREFIX):
            yield "event", json.loads(line[len(EVENT_PREFIX) :])
        elif line.startswith("data:"):
            payload = line[5:].strip()
            if payload == "[DONE]":
                yield "done", None
            else:
                yield "chunk", json.loads(payload)


__all__ = ["iter_events", "iter_stream"]
