"""``DELETE /v1/sessions/{id}``: a client done with a conversation frees its place now,
instead of holding it for ``--session-grace`` (in memory, finished conversations in
their grace made new ones wait, then refused them with 429). In-process over
``httpx.ASGITransport``; the RLMs are real, over the scripted backend."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

from server_support import TOKEN, ScriptedFactory  # noqa: E402

from rlm.server import create_app  # noqa: E402
from rlm.server.sessions import InMemorySessionRegistry, StoreBackedSessionRegistry  # noqa: E402

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _turn(content: str, session: str) -> dict[str, Any]:
    return {"model": "rlm", "messages": [{"role": "user", "content": content}],
            "session_id": session}  # fmt: skip


async def _conversation(app: Any) -> list[tuple[int, str]]:
    seen: list[tuple[int, str]] = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

        async def chat(content: str, session: str) -> None:
            r = await client.post(
                "/v1/chat/completions", json=_turn(content, session), headers=AUTH
            )
            text = r.json()["choices"][0]["message"]["content"] if r.status_code == 200 else ""
            seen.append((r.status_code, text or r.json()["error"]["code"]))

        async def end(session: str, headers: dict[str, str] = AUTH) -> None:
            r = await client.delete(f"/v1/sessions/{session}", headers=headers)
            seen.append((r.status_code, r.json()["error"]["code"] if r.content else ""))

        await chat("REMEMBER kiwi", "a")
        await chat("hello", "b")  # "a" holds the only place, in its grace
        await end("a", headers={})  # no token
        await end("a")
        await chat("hello", "b")  # the place is free now
        await end("a")  # already ended
        await end("b")
        await chat("RECALL", "a")  # "a" starts over: its variables are gone
    return seen


def test_ending_a_session_frees_its_place_at_once() -> None:
    sessions: InMemorySessionRegistry[Any] = InMemorySessionRegistry(
        max_sessions=1, grace=300, admission_timeout=0
    )
    factory = ScriptedFactory()
    app = create_app(factory, token=TOKEN, sessions=sessions)
    seen = asyncio.run(_conversation(app))
    assert seen[0] == (200, "stored")
    assert seen[1] == (429, "sessions_full")
    assert seen[2] == (401, "invalid_api_key")
    assert seen[3] == (204, "")
    assert seen[4] == (200, "str:5")
    assert seen[5] == (404, "session_not_found")
    assert seen[6] == (204, "")
    status, code = seen[7]
    assert status == 200 and code != "kiwi"  # a fresh session: `secret` is not defined
    assert len(sessions) == 1


def test_with_a_store_ending_a_session_deletes_its_turns(tmp_path: Path) -> None:
    store = str(tmp_path / "sessions.db")
    sessions: StoreBackedSessionRegistry[Any] = StoreBackedSessionRegistry(
        store, max_sessions=1, admission_timeout=0
    )
    factory = ScriptedFactory(session_store=store)
    app = create_app(factory, token=TOKEN, sessions=sessions)
    seen = asyncio.run(_conversation(app))
    assert seen[0] == (200, "stored")
    assert seen[1] == (200, "str:5")  # durable: "a" was evicted, not refused
    assert seen[3] == (204, "")
    from rlm.sessions import list_sessions

    assert [s.id for s in list_sessions(store)] == ["a"]  # "b" deleted, "a" begun again
    status, code = seen[7]
    assert status == 200 and code != "kiwi"
