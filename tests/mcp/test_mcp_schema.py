"""``rlm_query``'s ``schema`` argument, through the official MCP client over stdio: the
answer is repaired until it matches and comes back as JSON and as ``parsed``."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")
from mcp import ClientSession, StdioServerParameters, stdio_client
from test_mcp_stdio import error_text, payload

REPO = Path(__file__).resolve().parents[2]
SCHEMA = {
    "type": "object",
    "properties": {"word": {"type": "string"}, "letters": {"type": "integer"}},
    "required": ["word", "letters"],
    "additionalProperties": False,
}
REPLIES = [
    "```repl\nanswer['content'] = {'word': context}\nanswer['ready'] = True\n```",
    "```repl\nanswer['content'] = {'word': context, 'letters': len(context)}\n"
    "answer['ready'] = True\n```",
]


async def exercise(tmp_path: Path) -> dict[str, Any]:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "rlm", "mcp"],
        env={
            "RLM_BACKEND": "scripted",
            "RLM_BACKEND_KWARGS": json.dumps({"model_name": "scripted", "responses": REPLIES}),
            "PYTHONPATH": str(REPO),
            "HOME": str(tmp_path),
        },
        cwd=str(tmp_path),
    )
    seen: dict[str, Any] = {}
    with open(tmp_path / "server.stderr", "w", encoding="utf-8") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            call = session.call_tool
            seen["typed"] = payload(
                await call("rlm_query", {"question": "q", "context": "rabbit", "schema": SCHEMA})
            )
            seen["bad"] = error_text(
                await call("rlm_query", {"question": "q", "schema": {"type": "strnig"}})
            )
    return seen


def test_rlm_query_with_a_schema(tmp_path: Path) -> None:
    seen = asyncio.run(asyncio.wait_for(exercise(tmp_path), timeout=120))
    assert seen["typed"]["parsed"] == {"word": "rabbit", "letters": 6}
    assert json.loads(seen["typed"]["answer"]) == {"word": "rabbit", "letters": 6}
    assert "unknown type 'strnig'" in seen["bad"]
