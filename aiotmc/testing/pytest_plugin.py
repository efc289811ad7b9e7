"""pytest plugin: fixtures for testing your code against simulated instruments.

Installed with aiotmc (entry point ``pytest11``: ``aiotmc``), so the fixtures are there
in every test session. Async tests need an async runner, e.g. anyio's own pytest plugin
(``@pytest.mark.anyio`` or ``anyio_mode = "auto"``). Fixtures:

``aiotmc_sim_instrument``
    a factory: ``async with aiotmc_sim_instrument("psu", via="tcp", timeout=2) as inst:``
    opens a new simulated instrument (a model name or your own ``SimDevice``) in-process
    (``via="sim"``, default), through a ``SimServer`` on 127.0.0.1 (``"tcp"``) or over
    USBTMC through the in-process USB port (``"usb"``).
``aiotmc_sim_server``
    a factory: ``async with aiotmc_sim_server("dmm") as server:`` serves a new device on
    127.0.0.1 (``server.resource`` is its ``TCPIP0::...::SOCKET`` name).
``aiotmc_via``
    parametrized over ``"sim"``, ``"tcp"`` and ``"usb"``: a test that asks for it runs
    once per attachment (pass it as ``via=``).

Nothing here imports anyio or trio until a fixture is used.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import pytest

from .attach import ATTACHMENTS

if TYPE_CHECKING:
    from ..instrument import Instrument
    from ..sim.device import SimDevice
    from ..sim.server import SimServer

__all__ = ["aiotmc_sim_instrument", "aiotmc_sim_server", "aiotmc_via"]


@pytest.fixture
def aiotmc_sim_instrument() -> Callable[..., AbstractAsyncContextManager[Instrument]]:
    """``async with aiotmc_sim_instrument("dmm", via="sim", **open_options) as inst:``."""
    from .attach import open_sim_instrument

    return open_sim_instrument


@pytest.fixture
def aiotmc_sim_server() -> Callable[..., SimServer]:
    """``async with aiotmc_sim_server("dmm", **server_options) as server:``."""

    def serve(model: str | SimDevice = "dmm", **options: Any) -> SimServer:
        from ..sim.server import SimServer
        from .attach import sim_device

        return SimServer(sim_device(model), **options)

    return serve


@pytest.fixture(params=ATTACHMENTS)
def aiotmc_via(request: pytest.FixtureRequest) -> str:
    """Each attachment in turn: ``"sim"``, ``"tcp"``, ``"usb"``."""
    return str(request.param)
