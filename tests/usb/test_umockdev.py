"""Real libusb + python-libusb1 against emulated instruments, through umockdev.

Each test starts a device process (conftest ``umockdev``) and runs one scenario of
``umockdev_client.py`` in a client subprocess under ``LD_PRELOAD``; both anyio backends.
The port-level scenarios test one thing each; the public-API ones (``instrument``,
``quirks``, ``quirk_controls``) group many named steps per client process, since starting
one costs about a second, and report every failing step by name. The CLI test runs the
real ``python -m aiotmc`` under the same environment.

Driver coverage: the thread driver runs every scenario. The pollfd driver runs them too
(the quirks once; the negative controls, which test the emulator, not), but under umockdev
the device node is a regular file that epoll refuses, so its device fd is *polled* (the
driver's fallback) rather than watched: this covers the notifiers, the inline
completions, closing on the loop thread and the timer, not fd readiness of a real usbfs
node (that needs the QEMU tier).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from .conftest import INSTRUMENT, STUB
from .umockdev_client import quirk_devices

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
    print(
        f"*IDN? round trip {client.result['roundtrip_ms']} ms via {client.result['via']}, "
        f"{client.result['raw_roundtrip_ms']} ms with raw framing on the port"
    )
    assert client.result["idn"].startswith("aiotmc,SIM-DMM,")


def test_big_block(umockdev: Any, anyio_backend: str, driver: str) -> None:
    _, client = run(umockdev, [stub()], "big_block", anyio_backend, driver)
    print(f"4 MB block: IN {client.result['in_MBps']} MB/s, OUT {client.result['out_MBps']} MB/s")


def test_transport_block(umockdev: Any, anyio_backend: str, driver: str) -> None:
    scope = instrument("SCOPE1", model="scope")
    _, client = run(umockdev, [scope], "transport_block", anyio_backend, driver)
    print(f"4 MB block through UsbtmcTransport: {client.result['MBps']} MB/s")


def test_pipelined_block(umockdev: Any, anyio_backend: str, driver: str) -> None:
    scope = instrument("SCOPE1", model="scope")
    _, client = run(umockdev, [scope], "pipelined_block", anyio_backend, driver)
    print(f"10 MB block, several bulk-IN URBs in flight: {client.result}")


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


def test_stall_rules(umockdev: Any, anyio_backend: str, driver: str) -> None:
    _, client = run(umockdev, [instrument()], "stall_rules", anyio_backend, driver)
    assert client.result["retried"] == "answered"


def test_misuse(umockdev: Any, anyio_backend: str, driver: str) -> None:
    run(umockdev, [stub()], "misuse", anyio_backend, driver)


@pytest.mark.slow
def test_idle_cpu(umockdev: Any, anyio_backend: str, driver: str) -> None:
    _, client = run(umockdev, [stub()], "idle_cpu", anyio_backend, driver)
    print(
        f"idle ({driver}): client {client.result['client_cpu_pct']}% "
        f"device {client.result['device_cpu_pct']}% of a core, "
        f"{client.result['polls_per_s']} polls/s (polled fd: {client.result['polled']})"
    )
    if driver == "thread":
        assert not client.result["polled"]


# -- the public API end to end ------------------------------------------------------------


def scope(serial: str, **config: Any) -> dict[str, Any]:
    return instrument(serial, model="scope", **config)


def test_instrument_end_to_end(umockdev: Any, anyio_backend: str, driver: str) -> None:
    """aiotmc.open(<VISA name>): *IDN?, 8 MB blocks, SRQ, read_stb in an SRQ storm,
    timeout and cancel recovery, hot-unplug mid-transfer (see the client for the steps)."""
    devices = [scope("SCOPE1"), scope("SPARE1", pid=0x1797), scope("SPARE2", pid=0x1798)]
    _, client = run(umockdev, devices, "instrument", anyio_backend, driver)
    print(json.dumps(client.result, indent=1))


def quirk_bed(umockdev: Any) -> Any:
    devices = quirk_devices()
    return umockdev([{"factory": d["factory"], "config": d["config"]} for d in devices])


# Quirks are about framing, not about who runs libusb's events: both backends on the
# thread driver, the pollfd driver once.
@pytest.mark.parametrize(
    ("backend", "driver"), [("asyncio", "thread"), ("trio", "thread"), ("trio", "pollfd")]
)
def test_every_quirk(umockdev: Any, backend: str, driver: str) -> None:
    """One testbed, one misbehaving device per quirk and per KNOWN_QUIRKS entry; the
    client opens each by VISA name (``quirks=`` given, or looked up by VID:PID) and runs a
    query, blocks, an upload and a device clear."""
    client = quirk_bed(umockdev).run_client("quirks", backend=backend, driver=driver)
    print(json.dumps(client.result, indent=1))


def test_quirky_devices_fail_without_their_quirk(umockdev: Any) -> None:
    """Negative controls: opened with ``quirks=Quirks()`` the emulated devices really
    misbehave (timeouts, protocol errors), so test_every_quirk is not vacuous."""
    client = quirk_bed(umockdev).run_client("quirk_controls", backend="asyncio", driver="thread")
    print(json.dumps(client.result, indent=1))


def test_cli_lists_and_queries_the_emulated_instrument(umockdev: Any) -> None:
    """``aiotmc list`` (the real CLI, both backends) prints the devices by VISA name;
    ``aiotmc query`` opens one by that name."""
    bed = umockdev([scope("SCOPE1"), instrument("DMM7", pid=0x1798)])
    names = ["USB0::0x0957::0x1796::SCOPE1::INSTR", "USB0::0x0957::0x1798::DMM7::INSTR"]
    for backend in ("asyncio", "trio"):
        listed = bed.run_process([sys.executable, "-m", "aiotmc", "list", "--backend", backend])
        lines = listed.stdout.splitlines()
        for name in names:
            assert any(line.split()[:1] == [name] for line in lines), listed.stdout
        assert "USB488" in listed.stdout, listed.stdout
    listed = bed.run_process(
        [sys.executable, "-c", "import anyio, aiotmc; print(anyio.run(aiotmc.list_resources))"]
    )
    assert all(name in listed.stdout for name in names), listed.stdout
    queried = bed.run_process([sys.executable, "-m", "aiotmc", "query", names[0], "*IDN?"])
    assert "aiotmc,SIM-SCOPE,0001,0.1" in queried.stdout, queried.stdout
