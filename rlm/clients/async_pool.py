"""SDK clients: shared by every client of the process, and one async client per event loop.

Building an SDK client costs 20-80 ms of CPU and about 0.8 MB (each builds a TLS
context, even for an ``http://`` URL), and an RLM builds its provider client for every
session. So the provider clients take their SDK clients from here:

* ``shared(cls, kwargs)``: the process's SDK client for that class and those
  constructor arguments, built on first use. The cache key holds only a SHA-256 of the
  arguments (the API key among them), never the key itself. A client's ``close()``
  never closes a shared SDK client: they live for the process (the most recent
  ``CAPACITY`` are kept; one dropped from the cache goes when its last user does).
* ``shared_for_loop(cls, kwargs)``: the same, per running event loop. An async SDK
  client's connections belong to the loop that opened them, so every loop gets its own
  (sessions on one loop share it); a closed loop's clients are dropped with it.
* Every SDK client built here for an SDK that accepts ``http_client`` uses the one TLS
  context of its HTTP library (``tls_http_client``): a client for another loop costs
  about 0.1 ms instead of 25.

Only the SDK's own classes are shared (``shareable``): a class a test patched (a
``Mock``) or a stand-in is built per client, as ``rlms`` does; so are SDK clients whose
arguments are not plain data (a token provider callable, an ``httpx`` client).

``PerLoop`` is the per-client form: one item per running loop, for an rlmx client's own
(unshared) SDK clients.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Hashable, Mapping
from contextlib import suppress
from typing import Any, Generic, TypeVar

T = TypeVar("T")

AsyncClose = Callable[[T], Coroutine[Any, Any, object]]

CAPACITY = 64  # shared SDK clients kept per cache (and per event loop)


# ---------------------------------------------------------------------------
# Shared SDK clients
# ---------------------------------------------------------------------------


def shareable(cls: Any, package: str) -> bool:
    """True for one of ``package``'s own classes (not a Mock or a stand-in)."""
    return isinstance(cls, type) and cls.__module__.split(".")[0] == package


# Environment variables SDKs and their HTTP libraries read when a client is built.
_SDK_ENV = ("OPENAI", "AZURE_OPENAI", "ANTHROPIC", "PORTKEY", "GOOGLE", "GEMINI")
_HTTP_ENV = frozenset(
    {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR"}
)


def _environment() -> list[tuple[str, str]]:
    return sorted(
        (name, value)
        for name, value in os.environ.items()
        if name.upper().startswith(_SDK_ENV) or name.upper() in _HTTP_ENV
    )


def _plain(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)  # pydantic options (Gemini's HttpOptions)
    if callable(dump):
        return [type(value).__qualname__, dump(mode="json", exclude_none=True)]
    raise TypeError(f"not plain data: {type(value).__name__}")


def cache_key(cls: type, kwargs: Mapping[str, Any]) -> Hashable | None:
    """``(cls, SHA-256 of the arguments)``; ``None`` when an argument is not plain data
    (it then cannot be compared, so the SDK client is not shared). The variables the SDK
    reads at construction (``OPENAI_*``, proxies, ``SSL_CERT_*``) count as arguments."""
    try:
        text = json.dumps(
            [dict(kwargs), _environment()], sort_keys=True, allow_nan=True, default=_plain
        )
    except Exception:  # TypeError, ValueError, a pydantic serialization error
        return None
    return (cls, hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest())


class _Cache:
    """A thread-safe LRU of SDK clients. Building happens outside the lock; when two
    threads race to build one, the first stored wins (the other is dropped unused)."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._capacity = capacity

    def get(self, key: Hashable, build: Callable[[], Any]) -> Any:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
                return item
        made = build()
        with self._lock:
            item = self._items.setdefault(key, made)
            self._items.move_to_end(key)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)  # its users keep it; never closed here
            return item

    def __len__(self) -> int:
        return len(self._items)


def _same(client: Any) -> Any:
    return client


_shared = _Cache()
_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Cache] = (
    weakref.WeakKeyDictionary()
)
_per_loop_lock = threading.Lock()


def _build(
    cls: type, kwargs: Mapping[str, Any], http: str | None, finish: Callable[[Any], Any]
) -> Any:
    args = dict(kwargs)
    if http is not None and "http_client" not in args:
        client = tls_http_client(sys.modules.get(cls.__module__.split(".")[0]), http)
        if client is not None:
            args["http_client"] = client
    return finish(cls(**args))


def shared(
    cls: type,
    kwargs: Mapping[str, Any],
    http: str | None = None,
    finish: Callable[[Any], Any] = _same,
) -> tuple[Any, bool]:
    """(the process's ``finish(cls(**kwargs))``, True), or a new one and False when the
    arguments are not plain data. ``http`` names the SDK's HTTP client class
    (``"DefaultHttpxClient"``) when it accepts ``http_client``, so the shared TLS
    context is used."""
    key = cache_key(cls, kwargs)
    if key is None:
        return _build(cls, kwargs, http, finish), False
    return _shared.get(key, lambda: _build(cls, kwargs, http, finish)), True


def shared_for_loop(
    cls: type,
    kwargs: Mapping[str, Any],
    http: str | None = None,
    finish: Callable[[Any], Any] = _same,
) -> tuple[Any, bool]:
    """``shared`` for the running event loop: each loop has its own SDK clients."""
    key = cache_key(cls, kwargs)
    if key is None:
        return _build(cls, kwargs, http, finish), False
    loop = asyncio.get_running_loop()
    with _per_loop_lock:
        cache = _per_loop.get(loop)
        if cache is None:
            for old in [old for old in _per_loop if old.is_closed()]:
                del _per_loop[old]  # a closed loop's clients can never be used again
            cache = _per_loop[loop] = _Cache()
    return cache.get(key, lambda: _build(cls, kwargs, http, finish)), True


def shared_counts() -> tuple[int, int]:
    """(loop-independent SDK clients cached, event loops with SDK clients cached)."""
    with _per_loop_lock:
        return len(_shared), len(_per_loop)


# ---------------------------------------------------------------------------
# One TLS context per HTTP library
# ---------------------------------------------------------------------------

_tls: dict[tuple[str, str | None, str | None], Any] = {}
_tls_lock = threading.Lock()


def _http_library(http_client_cls: type) -> Any:
    for base in http_client_cls.__mro__:
        root = base.__module__.split(".")[0]
        if root in ("httpx", "httpx2"):
            return sys.modules.get(root)
    return None


def tls_http_client(sdk: Any, name: str) -> Any:
    """``sdk.<name>(verify=context)`` (the SDK's HTTP client with its own defaults) over
    the one TLS context of its HTTP library, made as that library makes its default
    (``create_ssl_context()``: the same trust store and ``SSL_CERT_*`` handling); ``None``
    when the SDK or its library does not offer that, and the SDK then makes its own."""
    http_client_cls = getattr(sdk, name, None)
    if not isinstance(http_client_cls, type):
        return None
    library = _http_library(http_client_cls)
    create = getattr(library, "create_ssl_context", None)
    if library is None or not callable(create):
        return None
    key = (library.__name__, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    with _tls_lock:
        context = _tls.get(key)
        if context is None:
            context = _tls[key] = create()
    return http_client_cls(verify=context)


# ---------------------------------------------------------------------------
# An rlmx client's SDK clients
# ---------------------------------------------------------------------------


class SDKClients:
    """An rlmx client's SDK clients: the sync one, and an async one per event loop.

    When ``sync_cls`` and ``async_cls`` are ``package``'s own classes, both come from the
    process-wide caches (``shared``; ``shared_for_loop`` on the first async call in each
    loop), and ``close()`` closes none of them. Otherwise (a class a test patched, a
    stand-in) both are built here at once, as ``rlms`` does, and ``close()`` closes the
    sync one (``close_sync``) and, with ``aclose``, the async ones on their loops.
    ``async_cls=None``: one SDK client serves both (Gemini's ``client.aio``); each loop
    still gets its own when shared. ``finish`` adjusts each SDK client once, when it is
    built. ``http`` names the SDK's sync and async HTTP client classes when its clients
    accept ``http_client``.
    """

    def __init__(
        self,
        sync_cls: Any,
        async_cls: Any,
        kwargs: Mapping[str, Any],
        package: str,
        *,
        http: tuple[str, str] | None = None,
        finish: Callable[[Any], Any] = _same,
        aclose: AsyncClose[Any] | None = None,
        close_sync: bool = True,
    ) -> None:
        self._async_cls = sync_cls if async_cls is None else async_cls
        self._kwargs, self._finish, self._http = dict(kwargs), finish, http
        self.is_shared = shareable(sync_cls, package) and shareable(self._async_cls, package)
        self._close_sync = close_sync
        self._first_async: Any = None
        if self.is_shared:
            self.sync, cached = shared(sync_cls, self._kwargs, http and http[0], finish)
            self._own_sync = not cached  # arguments that are not plain data: built for us
            self._loops: PerLoop[Any] = PerLoop(first=self._first)
        else:
            self.sync = finish(sync_cls(**self._kwargs))
            self._own_sync = True
            self._first_async = (
                self.sync if async_cls is None else finish(async_cls(**self._kwargs))
            )
            self._loops = PerLoop(aclose=aclose, first=self._first)

    def _first(self) -> Any:
        return self._first_async

    def _for_this_loop(self) -> Any:
        if not self.is_shared:
            return self._finish(self._async_cls(**self._kwargs))
        http = self._http and self._http[1]
        return shared_for_loop(self._async_cls, self._kwargs, http, self._finish)[0]

    @property
    def first_async(self) -> Any:
        """``rlms``'s ``async_client``: the first event loop's async SDK client. Shared
        clients are made on demand: read inside a running loop, it is that loop's."""
        if self._first_async is None:
            try:
                asyncio.get_running_loop()
            except RuntimeError:  # no loop yet: one of its own, for the first loop to use
                http = self._http and self._http[1]
                self._first_async = _build(self._async_cls, self._kwargs, http, self._finish)
            else:
                return self.for_loop()
        return self._first_async

    @first_async.setter
    def first_async(self, client: Any) -> None:
        self._first_async = client

    def for_loop(self) -> Any:
        """The running loop's async SDK client."""
        return self._loops.get(self._for_this_loop)

    def close(self) -> None:
        """Close what is this client's own; shared SDK clients stay open for others."""
        if self._own_sync and self._close_sync:
            close = getattr(self.sync, "close", None)
            if callable(close):
                close()
        self._loops.close_all()


# ---------------------------------------------------------------------------
# One item per loop, per client
# ---------------------------------------------------------------------------


class SDKClient:
    """``client``: the sync SDK client of an rlmx client that keeps its SDK clients in
    ``_sdk_clients`` (rlms's attribute, settable as rlms's tests do). For Gemini it is
    the one SDK client, whose ``client.aio`` is the async side."""

    _sdk_clients: SDKClients

    @property
    def client(self) -> Any:
        return self._sdk_clients.sync

    @client.setter
    def client(self, value: Any) -> None:
        self._sdk_clients.sync = value


class SDKClientPair(SDKClient):
    """``client`` and ``async_client``: the first event loop's async SDK client."""

    @property
    def async_client(self) -> Any:
        return self._sdk_clients.first_async

    @async_client.setter
    def async_client(self, value: Any) -> None:
        self._sdk_clients.first_async = value


class PerLoop(Generic[T]):
    """A thread-safe cache of one ``T`` per running event loop.

    With ``aclose``, ``close_all`` also closes each item on its own loop (best effort);
    without it, ``close_all`` only forgets them and their connections die with the loop.
    ``first`` supplies the first loop's item (a client built ahead, as ``rlms`` builds its
    ``async_client``); every later loop gets one from ``get``'s factory.
    """

    def __init__(
        self, aclose: AsyncClose[T] | None = None, first: Callable[[], T | None] | None = None
    ) -> None:
        self._items: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self._aclose = aclose
        self._first = first

    def get(self, factory: Callable[[], T]) -> T:
        """The running loop's item, made by ``factory`` the first time (``first`` for the
        first loop, unless it gives ``None``)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            item = self._items.get(loop)
            if item is None:
                first, self._first = self._first, None
                made = first() if first is not None else None
                item = self._items[loop] = made if made is not None else factory()
            return item

    def close_all(self) -> None:
        """Forget every item, closing each on its loop when ``aclose`` was given."""
        with self._lock:
            pending = list(self._items.items())
            self._items.clear()
        if self._aclose is None:
            return
        for loop, item in pending:
            # Best effort: an async client's connections die with its loop anyway.
            with suppress(Exception):
                _close_on_loop(loop, item, self._aclose)


_closing: set[Any] = set()  # keeps fire-and-forget close tasks alive until they finish


def _close_on_loop(loop: asyncio.AbstractEventLoop, item: T, aclose: AsyncClose[T]) -> None:
    if loop.is_closed():
        return
    if not loop.is_running():
        loop.run_until_complete(aclose(item))
        return
    try:
        current = asyncio.get_running_loop()
    except RuntimeError:
        current = None
    if current is loop:
        task = loop.create_task(aclose(item))
        _closing.add(task)
        task.add_done_callback(_closing.discard)
    else:
        asyncio.run_coroutine_threadsafe(aclose(item), loop)
