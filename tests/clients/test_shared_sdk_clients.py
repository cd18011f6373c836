"""SDK clients are shared by every client of the process (``rlm.clients.async_pool``).

Building an SDK client costs two TLS contexts; a server builds a provider client per
session. So clients with the same class and arguments share one sync SDK client and, per
event loop, one async SDK client, made on the first async call there. One client's
``close()`` leaves them open for the others; another loop (a new ``asyncio.run``) gets
its own, since an async client's connections belong to the loop that opened them. Real
SDKs, real sockets, a loopback server.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fake_providers import FakeProviderServer

from rlm import RLM
from rlm.clients.async_pool import shared_counts, tls_http_client

openai = pytest.importorskip("openai")

from rlm.clients.openai import OpenAIClient  # noqa: E402


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProviderServer]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with FakeProviderServer() as fake:
        yield fake


def _client(server: FakeProviderServer, key: str = "k-1", **kwargs: Any) -> OpenAIClient:
    return OpenAIClient(api_key=key, model_name="m", base_url=f"{server.url}/v1", **kwargs)


class Built:
    """Counts the async SDK clients built (the class itself stays the SDK's own)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = openai.AsyncOpenAI.__init__

        def counting(this: Any, *args: Any, **kwargs: Any) -> None:
            self.count += 1
            original(this, *args, **kwargs)

        monkeypatch.setattr(openai.AsyncOpenAI, "__init__", counting)


def test_clients_with_the_same_arguments_share_one_sdk_client(server: FakeProviderServer) -> None:
    one, two = _client(server), _client(server)
    other_key = _client(server, key="k-2")
    other_timeout = _client(server, timeout=12.0)

    assert one.client is two.client
    assert other_key.client is not one.client and other_timeout.client is not one.client
    assert one.completion("a") == two.completion("b") == "Hello from the OpenAI wire"
    assert [r.headers["authorization"] for r in server.requests] == ["Bearer k-1"] * 2
    assert other_key.completion("c") and server.last.headers["authorization"] == "Bearer k-2"


def test_closing_one_client_leaves_the_shared_sdk_client_open(server: FakeProviderServer) -> None:
    one, two = _client(server), _client(server)
    assert one.completion("warm") and asyncio.run(one.acompletion("warm"))
    one.close()
    assert not two.client.is_closed()
    assert two.completion("still") == "Hello from the OpenAI wire"
    assert asyncio.run(two.acompletion("still")) == "Hello from the OpenAI wire"
    assert len(server.requests) == 4


def test_the_async_sdk_client_is_built_on_the_first_async_call(
    server: FakeProviderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = Built(monkeypatch)
    clients = [_client(server) for _ in range(5)]
    assert built.count == 0  # five clients, no async SDK client yet
    assert clients[0].completion("sync calls need none") and built.count == 0

    async def calls() -> list[str]:
        return list(await asyncio.gather(*(c.acompletion("hi") for c in clients)))

    assert asyncio.run(calls()) == ["Hello from the OpenAI wire"] * 5
    assert built.count == 1  # one for this loop, shared by all five


def test_each_event_loop_gets_its_own_async_sdk_client(
    server: FakeProviderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = Built(monkeypatch)
    clients = [_client(server) for _ in range(3)]
    seen: list[Any] = []

    async def calls() -> None:
        for client in clients:
            await client.acompletion("hi")  # a closed loop's connections would fail here
        seen.append({id(c._sdk_clients.for_loop()) for c in clients})

    for _ in range(3):  # three loops, one after another (as asyncio.run per request does)
        asyncio.run(calls())

    assert [len(ids) for ids in seen] == [1, 1, 1]  # one per loop, shared by the clients
    assert built.count == 3
    assert len(server.requests) == 9


def test_a_loop_on_another_thread_gets_its_own_while_both_run(
    server: FakeProviderServer,
) -> None:
    client = _client(server)
    inner: list[Any] = []
    errors: list[BaseException] = []

    async def on_thread() -> None:
        inner.append(client._sdk_clients.for_loop())
        await client.acompletion("there")

    def thread() -> None:
        try:
            asyncio.run(on_thread())
        except BaseException as exc:  # reported below
            errors.append(exc)

    async def here() -> Any:
        mine = client._sdk_clients.for_loop()
        worker = threading.Thread(target=thread)
        worker.start()
        await client.acompletion("here")
        await asyncio.to_thread(worker.join, 30)
        return mine

    mine = asyncio.run(here())
    assert not errors and inner and inner[0] is not mine
    assert len(server.requests) == 2


def test_clients_built_on_many_threads_at_once_share_one(server: FakeProviderServer) -> None:
    made: list[OpenAIClient] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def build() -> None:
        start.wait()
        client = _client(server, key="k-threads")
        with lock:
            made.append(client)

    threads = [threading.Thread(target=build) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 8 and len({id(c.client) for c in made}) == 1


def test_rlms_share_their_clients_sdk_client_and_closing_one_spares_it(
    server: FakeProviderServer,
) -> None:
    kwargs = {"base_url": f"{server.url}/v1", "api_key": "x", "model_name": "m"}
    rlms = [RLM(backend="openai", backend_kwargs=kwargs) for _ in range(20)]
    handlers = [r._get_session().ensure_handler() for r in rlms]
    assert len({id(h.default_client.client) for h in handlers}) == 1
    before = shared_counts()[0]
    rlms[0].close()
    survivor = handlers[1].default_client
    assert survivor.completion("after a close") == "Hello from the OpenAI wire"
    assert shared_counts()[0] == before
    for r in rlms[1:]:
        r.close()


def test_sdk_clients_share_one_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpcore2

    made: list[Any] = []
    original = httpcore2.default_ssl_context

    def counting(*args: Any, **kwargs: Any) -> Any:
        made.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(httpcore2, "default_ssl_context", counting)
    clients = [tls_http_client(openai, "DefaultAsyncHttpxClient") for _ in range(5)]
    clients += [tls_http_client(openai, "DefaultHttpxClient") for _ in range(5)]
    assert all(c is not None for c in clients)
    shared = len(made)
    assert shared <= 1  # built once per process (maybe by an earlier test), not 10 times
    openai.DefaultAsyncHttpxClient()  # the SDK's own default: a context of its own
    assert len(made) == shared + 1
