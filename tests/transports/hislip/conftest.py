"""A throwaway CA (``trustme``) made once per test session for the HiSLIP TLS tests."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme


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
