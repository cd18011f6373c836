"""Suite-wide fixtures. Tests never reach the network: only loopback and Unix sockets."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest

_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class NetworkAccessError(RuntimeError):
    """A test tried to open a connection to a non-loopback host."""


def _is_local(address: Any) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX paths, abstract sockets, socketpair
        return True
    host = address[0]
    if isinstance(host, bytes):
        host = host.decode()
    host = str(host).split("%", 1)[0].lower()  # drop an IPv6 zone id
    if host in _LOCAL_NAMES:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False  # a hostname other than localhost would need DNS and the network
    return ip.is_loopback or ip.is_unspecified


def _check(address: Any) -> None:
    if not _is_local(address):
        raise NetworkAccessError(f"tests may only connect to loopback, not {address!r}")


@pytest.fixture(autouse=True)
def _no_network(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail any non-loopback connection (opt out with ``@pytest.mark.network``)."""
    if request.node.get_closest_marker("network"):
        yield
        return
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex
    create_connection = socket.create_connection

    def guarded_connect(self: socket.socket, address: Any) -> None:
        _check(address)
        return connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> int:
        _check(address)
        return connect_ex(self, address)

    def guarded_create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        _check(address)  # before DNS resolution, which would itself touch the network
        return create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    monkeypatch.setattr(socket, "create_connection", guarded_create_connection)
    yield


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "network: the test may open non-loopback connections")
