"""The unit layer: pure domain logic, no database, no Redis, no sandbox, no network. Any
attempt to open a connection fails the test, so a test that needs a server belongs in the
suite beside this folder, not here."""

from __future__ import annotations

import socket

import pytest


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: socket.socket, address: object) -> None:
        raise AssertionError(f"a unit test opened a connection to {address!r}: it belongs outside tests/unit")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
