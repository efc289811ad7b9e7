"""The timeout rule (aiotmc/_timeouts.py): seconds; None forever; 0 at once; no ms habit."""

from __future__ import annotations

import math

import anyio
import pytest

import aiotmc
from aiotmc._timeouts import MAX_TIMEOUT, check_timeout
from aiotmc.sim.devices import create_device

from .conftest import OpenSim


def test_check_timeout_accepts() -> None:
    assert check_timeout(None) is None
    assert check_timeout(0) == 0.0
    assert check_timeout(2.5) == 2.5
    assert check_timeout(MAX_TIMEOUT) == MAX_TIMEOUT
    assert check_timeout(math.inf) == math.inf


@pytest.mark.parametrize("value", [-1, -0.5, math.nan])
def test_check_timeout_refuses_negative_and_nan(value: float) -> None:
    with pytest.raises(ValueError, match=">= 0 seconds"):
        check_timeout(value)


def test_millisecond_habit_is_refused_with_a_hint() -> None:
    with pytest.raises(ValueError, match=r"seconds, not milliseconds: did you mean 5\?"):
        check_timeout(5000)
    with pytest.raises(TypeError):
        check_timeout("5")
    with pytest.raises(TypeError):
        check_timeout(True)


async def test_instrument_applies_the_rule(open_sim: OpenSim) -> None:
    async with open_sim("dmm") as inst:
        with pytest.raises(ValueError, match="milliseconds"):
            inst.timeout = 5000
        with pytest.raises(ValueError, match=">= 0"):
            inst.timeout = -1
        assert inst.timeout == 10.0
        with pytest.raises(ValueError, match="milliseconds"):
            await inst.query("*IDN?", timeout=10000)
        with pytest.raises(ValueError, match=">= 0"):
            await inst.query("*IDN?", timeout=-1)
        with pytest.raises(ValueError, match="milliseconds"):
            await inst.wait_for_srq(timeout=5000)
        inst.timeout = None
        assert "," in await inst.query("*IDN?")


async def test_open_refuses_before_connecting() -> None:
    with pytest.raises(ValueError, match="did you mean 2\\?"):
        async with aiotmc.open("TCPIP::127.0.0.1::1::SOCKET", timeout=2000):
            pass  # pragma: no cover
    with pytest.raises(ValueError, match="connect_timeout"):
        async with aiotmc.open("SIM::dmm", connect_timeout=-1):
            pass  # pragma: no cover


async def test_zero_means_at_once(open_sim: OpenSim) -> None:
    device = create_device("dmm")
    async with open_sim(device=device) as inst:
        device.latency = 0.2
        start = anyio.current_time()
        # at once: a bus that must wait even to send (USB) times out writing
        with pytest.raises(aiotmc.AiotmcTimeout):
            await inst.query("*IDN?", timeout=0)
        assert anyio.current_time() - start < 0.2  # did not wait for the answer
        device.latency = 0.0
        assert "," in await inst.query("*IDN?")  # and the link is still in step
