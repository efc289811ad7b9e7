"""A nats-server shared by the remote-instrument tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ...nats_server import RunningNats, running_nats


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNats]:
    workdir: Path = tmp_path_factory.mktemp("nats")
    with running_nats(workdir) as server:
        yield server
