"""Hardening scenarios through real libusb + python-libusb1, run under umockdev.

Started by ``tests/hardening/conftest.py`` (``run_hardening_client``) in a subprocess with
``LD_PRELOAD=libumockdev-preload.so.0``, like ``tests/usb/umockdev_client.py``. The device
is :func:`tests.hardening.support.usb_factory` (the echo device behind USBTMC); fault
knobs are set over the device process's control socket. A scenario raises on failure
(exit 1, traceback on stderr); on success one line ``RESULT <json>`` is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import anyio.abc

import aiotmc
from aiotmc import (
    ConnectError,
    ConnectionLostError,
    ReadTimeout,
    RemoteProtocolError,
    UsbStallError,
)
from aiotmc.reconnect import Reconnect
from aiotmc.resources import UsbInstr, parse_resource
from aiotmc.sim.usbtmc_device import CORRUPTIONS
from aiotmc.transports.usbtmc import UsbtmcTransport, open_usb_resource
from testbeds.umockdev.control import ControlClient
from testbeds.umockdev.host import INFO_ENV

from .storm import Storm
from .support import Resources

RESOURCE = "USB0::0x0957::0x1796::HARD1::INSTR"

Scenario = Callable[["Env", argparse.Namespace], Awaitable[dict[str, Any]]]
SCENARIOS: dict[str, Scenario] = {}


def scenario(fn: Scenario) -> Scenario:
    SCENARIOS[fn.__name__] = fn
    return fn


class Env:
    """Driver choice and the device process's control channel."""

    def __init__(self, driver: str) -> None:
        self.driver = driver
        self.info: dict[str, Any] = json.loads(os.environ[INFO_ENV])
        self.control = ControlClient()

    @asynccontextmanager
    async def transport(self, **options: Any) -> AsyncIterator[UsbtmcTransport]:
        resource = parse_resource(RESOURCE)
        assert isinstance(resource, UsbInstr)
        async with open_usb_resource(resource, driver=self.driver, **options) as transport:
            yield transport

    async def aclose(self) -> None:
        await self.control.aclose()


@scenario
async def storm(env: Env, args: argparse.Namespace) -> dict[str, Any]:
    """The cancellation storm through real libusb (see tests/hardening/storm.py)."""
    options = {"max_transfer_size": 16 * 1024, "recovery_timeout": 0.3, "poll_interval": 0.002}

    async def opener(stack: AsyncExitStack) -> aiotmc.Instrument:
        transport = await stack.enter_async_context(env.transport(**options))
        inst = aiotmc.Instrument(transport, timeout=5)
        stack.push_async_callback(inst.aclose)
        return inst

    # Warm up: the first libusb context, the worker thread, the control connection.
    async with AsyncExitStack() as stack:
        inst = await opener(stack)
        assert await inst.query("ECHO? 1") == "1"
    await env.control("ping")
    before = Resources.now()

    async def latency(delay: float) -> None:
        await env.control(f"call model.delay_next_responses [{delay}, 1]")

    rng = random.Random(args.seed)
    started = time.perf_counter()
    report = await Storm(
        rng,
        opener,
        block_sizes=(64, 40_000, 200_000),
        upload_sizes=(1000, 100_000),
        max_delay=0.004,
        latency=latency,
    ).run(args.iterations)
    elapsed = time.perf_counter() - started
    after = Resources.now()
    before.assert_no_growth(after)
    stats = await env.control("stats")
    assert stats["clients"] <= 2, stats  # this process: at most the last libusb context
    return {**report.as_dict(), "seconds": round(elapsed, 2), "fds": [before.fds, after.fds]}


MARGIN = 0.5


async def _expect(
    error: type[BaseException], action: Callable[[], Awaitable[object]], *, within: float
) -> float:
    started = time.monotonic()
    try:
        with anyio.fail_after(within + 5):
            await action()
    except error:
        elapsed = time.monotonic() - started
        assert elapsed < within + MARGIN, f"{error.__name__} after {elapsed:.3f} s"
        return elapsed
    raise AssertionError(f"no {error.__name__}")


@scenario
async def faults(env: Env, args: argparse.Namespace) -> dict[str, Any]:
    """Device faults through real libusb: typed error in time, then the next answer."""
    timeout = 0.3
    seen: dict[str, float] = {}
    options = {"recovery_timeout": 1.0, "poll_interval": 0.005}
    async with env.transport(**options) as transport:
        inst = aiotmc.Instrument(transport, timeout=timeout)
        tag = 0

        async def echo() -> None:
            nonlocal tag
            tag += 1
            with anyio.fail_after(10):
                assert await inst.query(f"ECHO? {tag}", timeout=5) == str(tag)

        await echo()
        await env.control("ping")  # the control connection is part of the baseline
        before = Resources.now()
        # 0x82: halted by the bus while the device keeps the request (the abort finds it
        # in progress, so no retry); 0x01: a halt that comes back after the retry.
        for endpoint, command in (
            ("0x82", "stall 0x82"),
            ("0x01", "call stall_bulk_out [null, 2]"),
        ):
            await env.control(command)
            seen[f"stall {endpoint}"] = await _expect(
                UsbStallError, lambda: inst.query("ECHO? 0"), within=0
            )
            await echo()
        await env.control("set response_delay 30")
        seen["late answer"] = await _expect(
            ReadTimeout, lambda: inst.query("ECHO? 0"), within=timeout
        )
        await env.control("set response_delay 0")
        await echo()
        await env.control("set max_in_transfer 4")
        await env.control("set response_delay 0.05")
        seen["slow drip"] = await _expect(
            ReadTimeout, lambda: inst.query("ECHO? 123456789012345678", timeout=0.15), within=0.15
        )
        await env.control("set max_in_transfer null")
        await env.control("set response_delay 0")
        await echo()
        for kind in CORRUPTIONS:
            await env.control(f'set corrupt_next_response "{kind}"')
            seen[kind] = await _expect(RemoteProtocolError, lambda: inst.query("ECHO? 0"), within=0)
            await echo()
        assert not transport.broken
        after = Resources.now()
        before.assert_no_growth(after)

        # Unplugged while a read waits for the answer.
        await env.control("set response_delay 30")
        requests = len(await env.control("get seen.requests"))

        async def unplug_when_requested() -> None:
            while len(await env.control("get seen.requests")) == requests:  # noqa: ASYNC110
                await anyio.sleep(0.005)  # (the device process has no event to wait on)
            await env.control("unplug")

        async def query() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(unplug_when_requested)
                await inst.query("ECHO? 0", timeout=10)

        started = time.monotonic()
        try:
            with anyio.fail_after(10):
                await query()
            raise AssertionError("the read survived the unplug")
        except* ConnectionLostError:
            seen["unplug"] = time.monotonic() - started
        assert seen["unplug"] < 2, seen
        seen["after unplug"] = await _expect(
            ConnectionLostError, lambda: inst.query("ECHO? 0"), within=0
        )
    return {"faults": {name: round(value, 3) for name, value in seen.items()}}


@scenario
async def reconnect(env: Env, args: argparse.Namespace) -> dict[str, Any]:
    """reconnect() through libusb: the same transport, a new port; SRQ subscribers keep
    receiving; after an unplug a bounded policy gives a typed error."""
    policy = Reconnect(attempts=3, backoff=0.05, max_backoff=0.1)
    async with env.transport(reconnect=policy, recovery_timeout=1.0) as transport:
        inst = aiotmc.Instrument(transport, timeout=2)
        assert await inst.query("ECHO? 1") == "1"
        srq = transport.srq
        assert srq is not None
        async with srq.subscribe() as events:
            await env.control("srq 0x41")
            with anyio.fail_after(5):
                assert (await events.receive()).status == 0x41
            with anyio.fail_after(10):
                await transport.reconnect()
            assert transport.srq is srq
            assert await inst.query("ECHO? 2") == "2"
            await env.control("srq 0x42")
            with anyio.fail_after(5):
                assert (await events.receive()).status == 0x42
        reconnects = transport.reconnects
        await env.control("unplug")
        started = time.monotonic()
        try:
            with anyio.fail_after(15):
                await inst.query("ECHO? 3")
            raise AssertionError("a query reached an unplugged device")
        except (ConnectionLostError, ConnectError):
            pass
        try:
            with anyio.fail_after(15):
                await inst.query("ECHO? 4")
            raise AssertionError("a query reached an unplugged device")
        except ConnectError:
            pass
        elapsed = time.monotonic() - started
        assert elapsed < 2 * policy.worst_case + 10, elapsed
    return {"reconnects": reconnects, "gave_up_after_s": round(elapsed, 3)}


@scenario
async def open_reconnect(env: Env, args: argparse.Namespace) -> dict[str, Any]:
    """aiotmc.open(..., reconnect=...) and Instrument.reconnect() through libusb."""
    policy = Reconnect(attempts=3, backoff=0.05, max_backoff=0.1)
    async with aiotmc.open(RESOURCE, driver=env.driver, timeout=2, reconnect=policy) as inst:
        assert await inst.query("ECHO? 1") == "1"
        await inst.reconnect()
        assert await inst.query("ECHO? 2") == "2"
        transport = inst.transport
        assert isinstance(transport, UsbtmcTransport) and transport.reconnects == 1
        await env.control("unplug")
        for tag in (3, 4):
            try:
                with anyio.fail_after(15):
                    await inst.query(f"ECHO? {tag}")
                raise AssertionError("a query reached an unplugged device")
            except (ConnectionLostError, ConnectError):
                pass
    return {"reconnects": 1}


# -- main ------------------------------------------------------------------------------------


async def _run(name: str, args: argparse.Namespace) -> dict[str, Any]:
    env = Env(args.driver)
    try:
        with anyio.fail_after(args.timeout):
            return await SCENARIOS[name](env, args)
    finally:
        await env.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument("--driver", default="thread", choices=["thread", "pollfd", "auto"])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=50.0)
    args = parser.parse_args(argv)
    try:
        result = anyio.run(_run, args.scenario, args, backend=args.backend)
    except BaseException:
        traceback.print_exc()
        return 1
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
