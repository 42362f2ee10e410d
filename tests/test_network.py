"""The tests cannot reach the network beyond this machine: pytest-socket (named in
``pyproject.toml``'s ``addopts``, as plugins are not loaded from entry points) refuses every
connection to a host other than the loopback addresses. It warns first, then raises; the warning
alone would fail a test, as warnings are errors here."""

from __future__ import annotations

import socket

import httpx
import pytest
from pytest_socket import SocketConnectBlockedError


def test_a_connection_beyond_the_loopback_is_refused_before_it_is_made() -> None:
    with (
        pytest.raises(SocketConnectBlockedError),
        pytest.warns(UserWarning, match='use socket.socket.connect.. with host "192.0.2.1"'),
    ):
        socket.create_connection(("192.0.2.1", 80), timeout=1)  # TEST-NET-1: never routed


def test_an_http_client_cannot_reach_a_public_address() -> None:
    with (
        pytest.raises(SocketConnectBlockedError),
        pytest.warns(UserWarning, match='with host "198.51.100.7"'),
    ):
        httpx.get("http://198.51.100.7/", timeout=1)  # TEST-NET-2


def test_the_loopback_is_allowed() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname(), timeout=1):
            pass
