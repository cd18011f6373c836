"""A fake OpenAI-compatible model server for ``benchmarks/serve_load.py`` (stdlib only).

It answers ``POST /v1/chat/completions`` after a random delay with one ```repl``` block
that makes the RLM reveal its session's state: the block joins every ``context_<i>``
variable of the REPL in order into ``answer["content"]`` and submits it. A one-shot
request therefore answers its own context; turn ``k`` of a persistent session answers
the contexts of turns ``0..k``, so a reset session (earlier turns missing) or a mixed
one (another client's contexts) shows in the answer. The block also compares the
newest context with the query this upstream saw in the request and appends
``XTALK:<query>`` when they differ (a reply that reached the wrong run).

Faults (``--fault``, changeable at run time through ``POST /_load/fault``):

- ``none``: every request is answered as above;
- ``html200``: HTTP 200 with an HTML page instead of JSON;
- ``429`` / ``500``: that status with an OpenAI-style error body (``Retry-After: 1`` on
  429);
- ``hang``: the request is read and never answered. A request that hung stays hung
  after the fault is cleared (as a real upstream's dead connection would); only new
  requests see the recovery. A hung request whose client closes the connection is
  counted as ``abandoned``.

``KIND:P%`` applies the fault to P % of the requests (``500:30%``), drawn from the
seeded random generator. ``GET /_load/stats`` returns the counters as JSON.

Run on its own: ``python benchmarks/serve_load_upstream.py --port 0 --delay 0.05:0.2``
prints ``upstream listening on http://127.0.0.1:PORT/v1`` and serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

FAULT_KINDS = ("none", "html200", "429", "500", "hang")
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 256 * 1024 * 1024
_QUERY = re.compile(r"Answer the following: (.*)")

READY_LINE = "upstream listening on "

# The code the root model "writes". ``{asked}`` is the query seen in the request, as a
# Python literal.
REPL_CODE = """\
_names = sorted((k for k in globals() if k.startswith("context_") and k[8:].isdigit()),
                key=lambda k: int(k[8:]))
_parts = [str(globals()[k]) for k in _names]
_asked = {asked}
if _asked is not None and (not _parts or _parts[-1] != _asked):
    _parts.append("XTALK:" + _asked)
answer["content"] = {separator}.join(_parts)
answer["ready"] = True"""

SEPARATOR = " | "  # how the answer joins the contexts


@dataclass(frozen=True)
class Fault:
    kind: str = "none"
    rate: float = 1.0  # the share of requests it applies to

    def __str__(self) -> str:
        if self.kind == "none" or self.rate >= 1.0:
            return self.kind
        return f"{self.kind}:{self.rate * 100:g}%"


def parse_fault(text: str) -> Fault:
    """``none``, ``html200``, ``429``, ``500``, ``hang``, each optionally ``:P%``."""
    kind, _, rate_text = text.strip().partition(":")
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault {kind!r}: use one of {', '.join(FAULT_KINDS)}")
    rate = 1.0
    if rate_text:
        try:
            rate = float(rate_text.removesuffix("%")) / 100.0
        except ValueError:
            raise ValueError(f"fault rate {rate_text!r} is not a percentage") from None
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault rate {rate_text!r} is not between 0% and 100%")
    return Fault(kind, rate)


def parse_delay(text: str) -> tuple[float, float]:
    """``S`` or ``LOW:HIGH`` seconds (a uniform draw per request)."""
    low_text, _, high_text = text.strip().partition(":")
    try:
        low = float(low_text)
        high = float(high_text) if high_text else low
    except ValueError:
        raise ValueError(f"delay {text!r} is not SECONDS or LOW:HIGH") from None
    if low < 0 or high < low:
        raise ValueError(f"delay {text!r}: need 0 <= LOW <= HIGH")
    return low, high


@dataclass
class Stats:
    requests: int = 0  # chat-completion requests received
    outcomes: Counter[str] = field(default_factory=Counter)  # ok, html200, 429, 500, hang
    abandoned: int = 0  # hung requests whose client closed the connection
    in_flight: int = 0
    max_in_flight: int = 0
    connections: int = 0

    def as_dict(self, fault: Fault) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "outcomes": dict(self.outcomes),
            "abandoned": self.abandoned,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "connections": self.connections,
            "fault": str(fault),
        }


def asked_query(body: Any) -> str | None:
    """The root prompt the engine put in the request's messages (the last one asked)."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return None
    found: str | None = None
    for message in body["messages"]:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            for match in _QUERY.finditer(content):
                found = match.group(1)
    return found


def completion_json(body: Any, content: str) -> dict[str, Any]:
    model = body.get("model", "fake") if isinstance(body, dict) else "fake"
    return {
        "id": f"chatcmpl-fake-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150},
    }


def reply_text(body: Any) -> str:
    asked = asked_query(body)
    literal = json.dumps(asked) if asked is not None else "None"
    code = REPL_CODE.format(asked=literal, separator=json.dumps(SEPARATOR))
    return f"```repl\n{code}\n```"


class _Closed(Exception):
    """The client closed its connection."""


class Upstream:
    """The fake model server's state and connection handler."""

    def __init__(self, delay: tuple[float, float], fault: Fault, seed: int) -> None:
        self.delay = delay
        self.fault = fault
        self.rng = random.Random(seed)
        self.stats = Stats()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                method, path, headers, raw = request
                keep = headers.get("connection", "").lower() != "close"
                status, extra, payload = await self._answer(method, path, raw, reader)
                _write(writer, status, extra, payload, keep)
                await writer.drain()
                if not keep:
                    return
        except (_Closed, ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            writer.close()

    async def _answer(
        self, method: str, path: str, raw: bytes, reader: asyncio.StreamReader
    ) -> tuple[int, dict[str, str], bytes]:
        if path == "/_load/stats" and method == "GET":
            return 200, {}, json.dumps(self.stats.as_dict(self.fault)).encode()
        if path == "/_load/fault" and method == "POST":
            try:
                self.fault = parse_fault(json.loads(raw or b"{}").get("fault", "none"))
            except (ValueError, AttributeError) as exc:
                return 400, {}, json.dumps({"error": str(exc)}).encode()
            return 200, {}, json.dumps({"fault": str(self.fault)}).encode()
        if method != "POST" or not path.rstrip("/").endswith("/chat/completions"):
            return 404, {}, _error("not found", "not_found")
        return await self._completion(raw, reader)

    async def _completion(
        self, raw: bytes, reader: asyncio.StreamReader
    ) -> tuple[int, dict[str, str], bytes]:
        stats = self.stats
        stats.requests += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            fault = self.fault
            hit = fault.kind != "none" and (fault.rate >= 1.0 or self.rng.random() < fault.rate)
            if hit and fault.kind == "hang":
                stats.outcomes["hang"] += 1
                await _hang(reader)
                stats.abandoned += 1
                raise _Closed()
            low, high = self.delay
            if high > 0:
                await asyncio.sleep(low if high == low else self.rng.uniform(low, high))
            try:
                body = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError):
                return 400, {}, _error("the body is not JSON", "invalid_json")
            if hit:
                stats.outcomes[fault.kind] += 1
                return _fault_reply(fault.kind)
            stats.outcomes["ok"] += 1
            return 200, {}, json.dumps(completion_json(body, reply_text(body))).encode()
        finally:
            stats.in_flight -= 1


def _fault_reply(kind: str) -> tuple[int, dict[str, str], bytes]:
    if kind == "html200":
        page = b"<!DOCTYPE html><html><body><h1>Bad gateway</h1></body></html>"
        return 200, {"Content-Type": "text/html"}, page
    if kind == "429":
        return 429, {"Retry-After": "1"}, _error("Rate limit reached", "rate_limit_exceeded")
    return 500, {}, _error("The server had an error", "server_error")


def _error(message: str, code: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": code, "code": code}}).encode()


async def _hang(reader: asyncio.StreamReader) -> None:
    """Never answer; return when the client closes the connection."""
    while await reader.read(65536):
        pass


async def _read_request(
    reader: asyncio.StreamReader,
) -> tuple[str, str, dict[str, str], bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError:
        raise ValueError("request head too large") from None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length") or 0)
    if length > MAX_BODY_BYTES:
        raise ValueError("body too large")
    raw = await reader.readexactly(length) if length else b""
    return method, path, headers, raw


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests",
            500: "Internal Server Error"}  # fmt: skip


def _write(
    writer: asyncio.StreamWriter, status: int, extra: dict[str, str], payload: bytes, keep: bool
) -> None:
    headers = {"Content-Type": "application/json", **extra}
    headers["Content-Length"] = str(len(payload))
    headers["Connection"] = "keep-alive" if keep else "close"
    head = f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    writer.write(head.encode("latin-1") + payload)


async def serve(host: str, port: int, upstream: Upstream) -> None:
    server = await asyncio.start_server(
        upstream.handle, host, port, limit=MAX_HEADER_BYTES, backlog=4096
    )
    bound = server.sockets[0].getsockname()
    print(f"{READY_LINE}http://{bound[0]}:{bound[1]}/v1", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--delay", default="0.05:0.2", help="SECONDS or LOW:HIGH (default 0.05:0.2)")
    p.add_argument("--fault", default="none", help="none|html200|429|500|hang, optionally :P%%")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        upstream = Upstream(parse_delay(args.delay), parse_fault(args.fault), args.seed)
    except ValueError as exc:
        p.error(str(exc))
    asyncio.run(serve(args.host, args.port, upstream))
    return 0


if __name__ == "__main__":
    sys.exit(main())
