"""Two store-backed registries over one store, as two ``rlm serve`` replicas would be:
a session's store lock is held only during a turn, so either can serve the next turn,
and the one whose live copy fell behind rebuilds it from the store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from rlm import RLM
from rlm.base.errors import SessionLockedError
from rlm.server.sessions import StoreBackedSessionRegistry
from rlm.sessions import show

COUNT = "```repl\nn = globals().get('n', 0) + 1\nanswer['content'] = f'n={n}'\nanswer['ready'] = True\n```"


def durable(store: str, session_id: str) -> RLM:
    return RLM(
        backend="scripted",
        backend_kwargs={"responses": [COUNT]},
        persistent=True,
        session_id=session_id,
        session_store=store,
    )


async def turn(registry: StoreBackedSessionRegistry[RLM], store: str, prompt: str) -> str:
    async with registry.lease("s", lambda: durable(store, "s")) as rlm:
        result = await rlm.acompletion(prompt, root_prompt=prompt)
    return result.response


def test_replicas_take_turns_on_one_session(tmp_path: Path) -> None:
    store = str(tmp_path / "shared.db")
    a: StoreBackedSessionRegistry[RLM] = StoreBackedSessionRegistry(store, lock_timeout=2)
    b: StoreBackedSessionRegistry[RLM] = StoreBackedSessionRegistry(store, lock_timeout=2)
    try:
        assert asyncio.run(turn(a, store, "one")) == "n=1"
        assert asyncio.run(turn(b, store, "two")) == "n=2"  # a let go of the lock
        assert asyncio.run(turn(a, store, "three")) == "n=3"  # a's live copy was stale
        assert a.stats.rehydrated == 1 and b.stats.rehydrated == 1
        assert asyncio.run(turn(a, store, "four")) == "n=4"  # current: no rebuild
        assert a.stats.rehydrated == 1
        assert [t.root_prompt for t in show("s", store).turns] == ["one", "two", "three", "four"]
    finally:
        a.close()
        b.close()


def test_a_session_in_use_elsewhere_is_a_bounded_wait_then_locked(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'shared.db'}?lock_timeout=0.2"  # the wait's bound
    registry: StoreBackedSessionRegistry[RLM] = StoreBackedSessionRegistry(store)
    holder = durable(store, "s")  # another process in the middle of a turn
    try:
        with pytest.raises(SessionLockedError):
            asyncio.run(turn(registry, store, "one"))
        assert len(registry) == 0  # the failed build left no entry behind
        holder.close()
        assert asyncio.run(turn(registry, store, "one")) == "n=1"
    finally:
        holder.close()
        registry.close()


def test_an_idempotent_retry_finds_the_committed_turn_on_another_replica(
    tmp_path: Path,
) -> None:
    pytest.importorskip("starlette")
    httpx = pytest.importorskip("httpx")
    from rlm.server import create_app

    store = str(tmp_path / "shared.db")

    def factory(*, session_id: str | None = None, trajectory: bool = False) -> RLM:
        assert session_id is not None
        return durable(store, session_id)

    async def ask(app: object, key: str) -> dict[str, object]:
        transport = httpx.ASGITransport(app=app)
        payload = {"model": "rlm", "session_id": "s",
                   "messages": [{"role": "user", "content": "count"}]}  # fmt: skip
        headers = {"Authorization": "Bearer tok", "Idempotency-Key": key}
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.post("/v1/chat/completions", json=payload, headers=headers)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def replica() -> tuple[object, StoreBackedSessionRegistry[RLM]]:
        registry: StoreBackedSessionRegistry[RLM] = StoreBackedSessionRegistry(store)
        return create_app(factory, token="tok", sessions=registry), registry

    a, a_sessions = replica()
    b, b_sessions = replica()
    try:
        first = asyncio.run(ask(a, "turn-1"))
        retried = asyncio.run(ask(b, "turn-1"))  # A committed, then "died" before replying
        second = asyncio.run(ask(b, "turn-2"))
    finally:
        a_sessions.close()
        b_sessions.close()
    content = [body["choices"][0]["message"]["content"] for body in (first, retried, second)]  # type: ignore[index]
    assert content == ["n=1", "n=1", "n=2"]
    assert retried["usage"] == first["usage"]
    turns = show("s", store).turns
    assert [t.root_prompt for t in turns] == ["count", "count"]  # the retry ran nothing
