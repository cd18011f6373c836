"""``rlm mcp`` through the official SDK's own client over stdio, calling every tool.

The server process gets the scripted backend from the environment, as any user can:
``RLM_BACKEND=scripted`` and ``RLM_BACKEND_KWARGS`` holding the replies (each new RLM
starts the list from the top; a session keeps one RLM, so its turns walk down it).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")
from mcp import ClientSession, StdioServerParameters, stdio_client

REPO = Path(__file__).resolve().parents[2]
REPLIES = [
    "```repl\nx = 42\nanswer['content'] = 'noted ' + str(len(context))\nanswer['ready'] = True\n```",
    "```repl\nanswer['content'] = context_1.strip().upper() + ' ' + str(x)\n"
    "answer['ready'] = True\n```",
]


def _get(result: Any, snake: str, camel: str) -> Any:
    return getattr(result, snake, None) if hasattr(result, snake) else getattr(result, camel)


def payload(result: Any) -> dict[str, Any]:
    assert not _get(result, "is_error", "isError"), result.content
    structured = _get(result, "structured_content", "structuredContent")
    return structured if structured is not None else json.loads(result.content[0].text)


def error_text(result: Any) -> str:
    assert _get(result, "is_error", "isError")
    return " ".join(getattr(c, "text", "") for c in result.content)


async def exercise(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "notes.txt").write_text("the white rabbit\n", encoding="utf-8")
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
            seen["tools"] = sorted(t.name for t in (await session.list_tools()).tools)
            call = session.call_tool
            seen["first"] = payload(await call("rlm_query", {"question": "hi", "session_id": "s1"}))
            seen["added"] = payload(
                await call("add_context", {"session_id": "s1", "context_path": "notes.txt"})
            )
            seen["second"] = payload(
                await call("rlm_query", {"question": "shout it", "session_id": "s1"})
            )
            seen["one_off"] = payload(await call("rlm_query", {"question": "q", "context": "abc"}))
            seen["sessions"] = payload(await call("list_sessions", {}))
            seen["last"] = payload(await call("get_trajectory", {"session_id": "s1"}))
            seen["turn0"] = payload(await call("get_trajectory", {"session_id": "s1", "turn": 0}))
            seen["no_session"] = error_text(await call("get_trajectory", {"session_id": "zz"}))
            seen["both"] = error_text(
                await call("rlm_query", {"question": "q", "context": "a", "context_path": "b"})
            )
            seen["missing"] = error_text(
                await call("add_context", {"session_id": "s1", "context_path": "nope.txt"})
            )
    return seen


def test_every_tool_over_stdio(tmp_path: Path) -> None:
    seen = asyncio.run(asyncio.wait_for(exercise(tmp_path), timeout=60))
    assert seen["tools"] == ["add_context", "get_trajectory", "list_sessions", "rlm_query"]
    assert seen["first"]["answer"] == "noted 2"  # a lone question is its own context
    assert (seen["first"]["session_id"], seen["first"]["turn"]) == ("s1", 0)
    assert seen["added"] == {"session_id": "s1", "queued": 1}
    assert seen["second"]["answer"] == "THE WHITE RABBIT 42"  # queued file + turn 0's x
    assert seen["second"]["turn"] == 1
    assert seen["one_off"]["answer"] == "noted 3" and "session_id" not in seen["one_off"]
    (listed,) = seen["sessions"]["sessions"]
    assert (listed["session_id"], listed["queries"], listed["queued_contexts"]) == ("s1", 2, 0)
    last = seen["last"]
    assert last["turn"] == 1 and last["run_metadata"]["backend"] == "scripted"
    codes = [b["code"] for it in last["iterations"] for b in it["code_blocks"]]
    assert any("context_1" in code for code in codes)
    assert seen["turn0"]["turn"] == 0 and "x = 42" in json.dumps(seen["turn0"])
    assert "no session 'zz'" in seen["no_session"]
    assert "not both" in seen["both"]
    assert "no such file" in seen["missing"]
    assert "Traceback" not in (tmp_path / "server.stderr").read_text(encoding="utf-8")
