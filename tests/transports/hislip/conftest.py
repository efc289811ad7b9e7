"""Fixtures of the HiSLIP client tests: a throwaway CA (``trustme``) made once per test
session for the TLS tests, and the simulator in strict mode.

Every ``HislipServer`` these tests start is strict (``strict=True`` unless a test says
otherwise): aiotmc's own client must never trip what the lenient default only counts
(RMT-delivered without a delivered response, MessageID arithmetic, message size limits).
A strict server behaves as the lenient one for a correct client, so this costs no extra
run; the pyvisa-py tests (tests/sim/test_hislip_server.py) keep the lenient default.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from aiotmc.sim.hislip_server import HislipServer


@dataclass(frozen=True)
class Pki:
    """A test CA, its PEM file, and server contexts for 127.0.0.1 and for another name."""

    ca: trustme.CA
    ca_file: str

    def server_context(self, *names: str) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(*(names or ("127.0.0.1", "localhost"))).configure_cert(context)
        return context


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = trustme.CA()
    path: Path = tmp_path_factory.mktemp("hislip-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return Pki(ca, str(path))


@pytest.fixture(scope="session")
def server_tls(pki: Pki) -> tuple[ssl.SSLContext, bytes]:
    """A server context for 127.0.0.1 and its certificate (DER)."""
    leaf = pki.ca.issue_cert("127.0.0.1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode("ascii"))
    return context, der


@pytest.fixture(autouse=True)
def strict_simulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``HislipServer(...)`` defaults to ``strict=True`` in these tests."""
    original = HislipServer.__init__

    def strict_init(self: HislipServer, *args: Any, strict: bool = True, **kwargs: Any) -> None:
        original(self, *args, strict=strict, **kwargs)

    monkeypatch.setattr(HislipServer, "__init__", strict_init)
    yield
