"""Fixtures for the GPIB tests: the linux-gpib stub library, built once per session."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .stub_bus import build_stub


@pytest.fixture(scope="session")
def stub_library() -> Iterator[Path]:
    """``libgpib-stub.so.0`` compiled from ``libgpib_stub.c`` (skipped without ``cc``
    outside CI; in CI a missing compiler fails)."""
    directory = Path(tempfile.mkdtemp(prefix="aiotmc-gpib-"))
    try:
        try:
            yield build_stub(directory)
        except RuntimeError as exc:
            if os.environ.get("CI"):
                raise
            pytest.skip(str(exc))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def bus_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A short Unix socket path for a :class:`StubBus`, exported as AIOTMC_GPIB_STUB."""
    directory = Path(tempfile.mkdtemp(prefix="aiotmc-bus-", dir="/tmp"))
    path = directory / "bus"
    monkeypatch.setenv("AIOTMC_GPIB_STUB", str(path))
    try:
        yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)
