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

Line splitting: SSE lines end only in ``\\r\\n``, ``\\r`` or ``\\n``, but httpx's
``iter_lines`` (like ``str.splitlines``) also splits on U+2028, U+2029, U+0085 and a few
control characters. rlmx's server escapes all of them, so its lines never split; for a
stream that did not, ``iter_stream`` and ``iter_events`` join the pieces back (each lost
separator comes back as ``\\n``). ``iter_sse_lines(response.iter_bytes())`` splits raw
bytes exactly as SSE does, losing nothing.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

EVENT_PREFIX = ": rlm-event "  # same as rlm.server.sse.EVENT_PREFIX
LOST_SEPARATOR = "\n"  # what a separator a line splitter removed is replaced with
_EOL = re.compile(r"\r\n|\r|\n")


def _text(line: str | bytes) -> str:
    return (line.decode("utf-8") if isinstance(line, bytes) else line).rstrip("\r\n")


def iter_sse_lines(chunks: Iterable[str | bytes]) -> Iterator[str]:
    """The SSE lines of a raw stream (``response.iter_bytes()`` or ``iter_text()``),
    split only where SSE splits them: at ``\\r\\n``, ``\\r`` and ``\\n``."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    pending = ""
    for chunk in chunks:
        pending += decoder.decode(chunk) if isinstance(chunk, bytes | bytearray) else chunk
        start = 0
        for match in _EOL.finditer(pending):
            if match.group() == "\r" and match.end() == len(pending):
                break  # maybe the first half of a \r\n split across chunks
            yield pending[start : match.start()]
            start = match.end()
        pending = pending[start:]
    pending += decoder.decode(b"", final=True)
    lines = _EOL.split(pending)
    yield from (lines[:-1] if lines[-1] == "" else lines)


class _Incomplete(ValueError):
    """The line's JSON does not parse (a line splitter may have cut it)."""


def _item(line: str, strict: bool = True) -> tuple[str, Any] | None:
    """``(kind, value)`` for an rlm-event, a data chunk or ``[DONE]``; ``None`` for any
    other line; raises ``_Incomplete`` when the JSON does not parse."""
    if line.startswith(EVENT_PREFIX):
        kind, payload = "event", line[len(EVENT_PREFIX) :]
    elif line.startswith("data:"):
        kind, payload = "chunk", line[5:].strip()
        if payload == "[DONE]":
            return "done", None
    else:
        return None
    try:
        return kind, json.loads(payload, strict=strict)
    except json.JSONDecodeError as exc:
        raise _Incomplete(str(exc)) from None


def _items(lines: Iterable[str | bytes]) -> Iterator[tuple[str, Any]]:
    broken: str | None = None  # a line whose JSON a line splitter cut short
    for raw in lines:
        line = _text(raw)
        try:
            if broken is None:
                item = _item(line)
            else:  # the joins are raw control characters: parse leniently
                broken += LOST_SEPARATOR + line
                item, broken = _item(broken, strict=False), None
        except _Incomplete:
            broken = line if broken is None else broken
            continue
        if item is not None:
            yield item
    if broken is not None:
        raise ValueError(f"the SSE stream ended inside a line that is not JSON: {broken[:200]!r}")


def iter_events(lines: Iterable[str | bytes]) -> Iterator[dict[str, Any]]:
    """The trajectory events (dicts, see ``rlm.server.sse``) among an SSE stream's lines."""
    for kind, value in _items(lines):
        if kind == "event":
            yield value


def iter_stream(lines: Iterable[str | bytes]) -> Iterator[tuple[str, Any]]:
    """Every item of the stream in order: ``("event", dict)`` for a trajectory event,
    ``("chunk", dict)`` for a ``chat.completion.chunk`` (or an error object) and
    ``("done", None)`` for ``data: [DONE]``."""
    yield from _items(lines)


__all__ = ["iter_events", "iter_sse_lines", "iter_stream"]
