"""Fixtures for the MQTT bridge: one secured mosquitto for the session (password file, ACL,
a plain and a TLS listener), and the asyncio backend only.

The bridge uses aiomqtt, which runs on asyncio (docs/gateway.md says why), so these async
tests run on asyncio alone; the controller's tests (tests/gateway/test_control.py) run on
both backends.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .broker import ACL, USERS, Mosquitto, TlsFiles, make_tls


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("mqtt-tls"))


@pytest.fixture(scope="session")
def secure_broker(
    tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles
) -> Iterator[Mosquitto]:
    """mosquitto with USERS, ACL, and a TLS listener (``tls_port``) using ``tls_files``."""
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"), users=USERS, acl=ACL, tls=tls_files)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def plain_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """An anonymous mosquitto of this test alone (to kill -9 and restart)."""
    broker = Mosquitto(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()
