"""The in-memory session registry (LRU, idle TTL, leases) and the one error translator."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from rlm.base.errors import (
    CancellationError,
    ConfigurationError,
    ProviderError,
    RLMError,
)
from rlm.server.errors import APIError, translate
from rlm.server.sessions import InMemorySessionRegistry, SessionGoneError, SessionsFullError
from rlm.server.translate import context_and_root_prompt


class Value:
    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False

    def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lru_eviction_closes_the_oldest() -> None:
    registry: InMemorySessionRegistry[Value] = InMemorySessionRegistry(max_sessions=2, grace=0)
    a = registry.get_or_create("a", lambda: Value("a"))
    b = registry.get_or_create("b", lambda: Value("b"))
    assert registry.get_or_create("a", lambda: Value("new")) is a  # touches a
    c = registry.get_or_create("c", lambda: Value("c"))
    assert b.closed and not a.closed and not c.closed
    assert sorted(i.session_id for i in registry.list()) == ["a", "c"]
    assert registry.get("b") is None
    with pytest.raises(SessionGoneError, match="evicted"):  # never a fresh "b"
        registry.get_or_create("b", lambda: Value("reset"))
    assert registry.drop("a") and a.closed and not registry.drop("a")
    registry.close()
    assert c.closed and len(registry) == 0


def test_idle_ttl_expires_unused_sessions() -> None:
    clock = Clock()
    registry: InMemorySessionRegistry[Value] = InMemorySessionRegistry(idle_ttl=10, clock=clock)
    old = registry.get_or_create("old", lambda: Value("old"))
    clock.now = 5
    fresh = registry.get_or_create("fresh", lambda: Value("fresh"))
    clock.now = 12
    assert [i.session_id for i in registry.list()] == ["fresh"]
    assert old.closed and not fresh.closed
    with pytest.raises(SessionGoneError, match="unused for more than 10 s") as gone:
        registry.get_or_create("old", lambda: Value("reset"))
    assert gone.value.status == 410 and gone.value.code == "session_expired"
    assert registry.stats.expired == 1 and registry.stats.gone == 1


def test_a_leased_session_is_pinned_and_turns_queue() -> None:
    registry: InMemorySessionRegistry[Value] = InMemorySessionRegistry(
        max_sessions=2, grace=0, admission_timeout=0
    )
    order: list[str] = []

    async def turn(name: str, hold: float) -> None:
        async with registry.lease("s", lambda: Value("s")) as value:
            order.append(f"{name} in")
            # while leased, another session cannot push this one out
            registry.get_or_create(f"other-{name}", lambda: Value("o"))
            assert not value.closed
            await asyncio.sleep(hold)
            order.append(f"{name} out")

    async def main() -> None:
        await asyncio.gather(turn("a", 0.05), turn("b", 0))

    asyncio.run(main())
    assert order == ["a in", "a out", "b in", "b out"]  # one turn at a time per session
    (info,) = [i for i in registry.list() if i.session_id == "s"]
    assert info.turns == 2 and not info.in_use


def test_dropping_a_session_in_use_closes_it_on_release() -> None:
    registry: InMemorySessionRegistry[Value] = InMemorySessionRegistry()

    async def main() -> Value:
        async with registry.lease("s", lambda: Value("s")) as value:
            assert registry.drop("s")
            assert not value.closed
        return value

    assert asyncio.run(main()).closed


def test_sessions_in_their_grace_are_not_evicted_new_ones_wait_then_429() -> None:
    clock = Clock()
    registry: InMemorySessionRegistry[Value] = InMemorySessionRegistry(
        max_sessions=1, grace=30, clock=clock, admission_timeout=0
    )
    a = registry.get_or_create("a", lambda: Value("a"))
    with pytest.raises(SessionsFullError) as full:
        registry.get_or_create("b", lambda: Value("b"))
    assert full.value.status == 429 and full.value.code == "sessions_full"
    assert full.value.retry_after == 30  # when "a" leaves its grace
    assert not a.closed and registry.get("b") is None and registry.stats.refused == 1
    clock.now = 31  # "a" is past its grace: it makes room, and is remembered as evicted
    registry.get_or_create("b", lambda: Value("b"))
    assert a.closed and registry.stats.evicted == 1
    with pytest.raises(SessionGoneError, match="--max-sessions"):
        registry.get_or_create("a", lambda: Value("a again"))


def test_a_new_session_waits_for_a_place_freed_by_a_lease() -> None:
    registry: InMemorySessionRegistry[Value] = InMemorySessionRegistry(
        max_sessions=1, grace=0, admission_timeout=5
    )
    order: list[str] = []

    async def hold() -> None:
        async with registry.lease("a", lambda: Value("a")):
            order.append("a in")
            await asyncio.sleep(0.1)
            order.append("a out")

    async def newcomer() -> None:
        await asyncio.sleep(0.02)  # "a" holds the only place
        async with registry.lease("b", lambda: Value("b")):
            order.append("b in")

    async def main() -> None:
        await asyncio.gather(hold(), newcomer())

    asyncio.run(main())
    assert order == ["a in", "a out", "b in"]
    assert [i.session_id for i in registry.list()] == ["b"]


def test_sessions_are_built_off_the_event_loop() -> None:
    registry: InMemorySessionRegistry[Value] = InMemorySessionRegistry()
    ticks: list[int] = []
    building = threading.Event()

    def slow() -> Value:  # a durable session waiting for another process's lock
        building.set()
        time.sleep(0.3)
        return Value("slow")

    async def ticker() -> None:
        while not building.is_set():
            await asyncio.sleep(0.005)
        for i in range(5):
            ticks.append(i)
            await asyncio.sleep(0.01)

    async def main() -> list[int]:
        tick = asyncio.create_task(ticker())
        async with registry.lease("s", slow):
            seen = list(ticks)  # what the loop did while the factory blocked
        await tick
        return seen

    assert asyncio.run(main()) == [0, 1, 2, 3, 4]
    assert registry.get("s") is not None


def test_a_failed_build_frees_its_place() -> None:
    registry: InMemorySessionRegistry[Value] = InMemorySessionRegistry(max_sessions=1)

    def broken() -> Value:
        raise RLMError("store locked")

    async def main() -> None:
        with pytest.raises(RLMError):
            async with registry.lease("s", broken):
                pass
        async with registry.lease("t", lambda: Value("t")):
            pass

    asyncio.run(main())
    assert [i.session_id for i in registry.list()] == ["t"]


@pytest.mark.parametrize(
    ("exc", "status", "kind", "code"),
    [
        (APIError(429, "busy", code="overloaded"), 429, "rate_limit_error", "overloaded"),
        (ConfigurationError("bad env"), 500, "server_error", "configuration_error"),
        (ProviderError("upstream 500"), 502, "api_error", "upstream_error"),
        (CancellationError("stop"), 503, "server_error", "cancelled"),
        (RLMError("boom"), 500, "server_error", "rlm_error"),
        (KeyError("x"), 500, "server_error", "internal_error"),
    ],
)
def test_translate(exc: BaseException, status: int, kind: str, code: str) -> None:
    got_status, body = translate(exc)
    assert got_status == status
    assert body["error"]["type"] == kind and body["error"]["code"] == code
    assert set(body["error"]) == {"message", "type", "param", "code"}


def test_context_rule() -> None:
    user = {"role": "user", "content": "q?"}
    doc = {"role": "user", "content": "doc"}
    assistant = {"role": "assistant", "content": "a"}
    assert context_and_root_prompt([user], None) == ("q?", "q?")
    assert context_and_root_prompt([doc, user], None) == ("doc", "q?")
    assert context_and_root_prompt([doc, assistant], None) == ([doc, assistant], None)
    assert context_and_root_prompt([doc, user], "why?") == ([doc, user], "why?")
