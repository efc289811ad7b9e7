"""Real libusb + python-libusb1 against emulated instruments, through umockdev.

Each test starts a device process (conftest ``umockdev``) and runs one scenario of
``umockdev_client.py`` in a client subprocess under ``LD_PRELOAD``; both anyio backends.

Driver coverage: the thread driver runs every scenario. The pollfd driver runs them too,
but under umockdev the device node is a regular file that epoll refuses, so its device
fd is *polled* (the driver's fallback) rather than watched: this covers the notifiers,
the inline completions, closing on the loop thread and the timer, not fd readiness of a
real usbfs node (that needs the QEMU tier).
"""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import INSTRUMENT, STUB

pytestmark = pytest.mark.umockdev

DRIVERS = ["thread", "pollfd"]


def stub(serial: str = "MY123", **config: Any) -> dict[str, Any]:
    return {"factory": STUB, "config": {"serial": serial, **config}}


def instrument(serial: str = "DMM1", **config: Any) -> dict[str, Any]:
    return {"factory": INSTRUMENT, "config": {"model": "dmm", "serial": serial, **config}}


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def run(umockdev: Any, devices: list[dict[str, Any]], scenario: str, backend: str, driver: str):  # type: ignore[no-untyped-def]
    bed = umockdev(devices)
    return bed, bed.run_client(scenario, backend=backend, driver=driver)


def test_open_close(umockdev: Any, anyio_backend: str, driver: str) -> None:
    run(umockdev, [stub()], "open_close", anyio_backend, driver)


def test_idn_roundtrip(umockdev: Any, anyio_backend: str, driver: str) -> None:
    _, client = run(umockdev, [instrument()], "idn_roundtrip", anyio_backend, driver)
    print(f"*IDN? round trip {client.result['roundtrip_ms']} ms via {client.result['via']}")
    assert client.result["idn"].startswith("aiotmc,SIM-DMM,")


def test_big_block(umockdev: Any, anyio_backend: str, driver: str) -> None:
    _, client = run(umockdev, [stub()], "big_block", anyio_backend, driver)
    print(f"4 MB block: IN {client.result['in_MBps']} MB/s, OUT {client.result['out_MBps']} MB/s")


def test_transport_block(umockdev: Any, anyio_backend: str, driver: str) -> None:
    scope = instrument("SCOPE1", model="scope")
    _, client = run(umockdev, [scope], "transport_block", anyio_backend, driver)
    print(f"4 MB block through UsbtmcTransport: {client.result['MBps']} MB/s")


def test_read_status_byte_on_interrupt_in(umockdev: Any, anyio_backend: str, driver: str) -> None:
    run(umockdev, [instrument()], "read_stb", anyio_backend, driver)


def test_srq(umockdev: Any, anyio_backend: str, driver: str) -> None:
    run(umockdev, [instrument()], "srq", anyio_backend, driver)


def test_cancelled_bulk_in_is_discarded(umockdev: Any, anyio_backend: str, driver: str) -> None:
    bed, _ = run(umockdev, [stub()], "cancel_bulk_in", anyio_backend, driver)
    assert bed.command("stats")["endpoints"]["0x82"]["discarded"] == 1


def test_uncancellable_transfer_is_leaked(umockdev: Any, anyio_backend: str, driver: str) -> None:
    bed, _ = run(umockdev, [stub()], "leak", anyio_backend, driver)
    assert bed.command("stats")["endpoints"]["0x82"]["discarded"] == 1


def test_latency_and_lost_cancel_race(umockdev: Any, anyio_backend: str, driver: str) -> None:
    _, client = run(umockdev, [stub()], "latency", anyio_backend, driver)
    print(client.result)


def test_discovery(umockdev: Any, anyio_backend: str, driver: str) -> None:
    devices = [stub("A1"), stub("B2"), stub("C3", pid=0x0001)]
    run(umockdev, devices, "discovery", anyio_backend, driver)


def test_unplug_mid_transfer(umockdev: Any, anyio_backend: str, driver: str) -> None:
    run(umockdev, [stub()], "unplug", anyio_backend, driver)


def test_interface_busy(umockdev: Any, anyio_backend: str, driver: str) -> None:
    run(umockdev, [stub()], "busy", anyio_backend, driver)


def test_stall_and_clear_halt(umockdev: Any, anyio_backend: str, driver: str) -> None:
    run(umockdev, [stub()], "stall", anyio_backend, driver)


def test_misuse(umockdev: Any, anyio_backend: str, driver: str) -> None:
    run(umockdev, [stub()], "misuse", anyio_backend, driver)


@pytest.mark.slow
def test_idle_cpu(umockdev: Any, anyio_backend: str, driver: str) -> None:
    _, client = run(umockdev, [stub()], "idle_cpu", anyio_backend, driver)
    print(
        f"idle ({driver}): client {client.result['client_cpu_pct']}% "
        f"device {client.result['device_cpu_pct']}% of a core"
    )
