"""Device quirks: the table, the lookup, and every quirk against a device that has it.

For each behaviour the emulator is told to misbehave that way; a host without the quirk
fails (hangs, protocol error or wrong data) and a host with it gets the right answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

import pytest

from aiotmc import LocalProtocolError, RemoteProtocolError
from aiotmc.protocol.ieee4882 import block_header
from aiotmc.protocol.quirks import KNOWN_QUIRKS, NO_QUIRKS, Quirks, quirks_for
from aiotmc.protocol.usb488 import ren_control_request
from aiotmc.protocol.usbtmc import (
    UsbtmcStatus,
    parse_check_clear_status,
    parse_initiate_abort,
    parse_status,
)
from aiotmc.sim.device import test_pattern
from aiotmc.sim.usbtmc_device import BULK_IN, BULK_OUT

from .test_usbtmc import IDN, Hang, Pair, TmcTestDevice, block_response

# -- the table and the lookup ------------------------------------------------------------------


def test_lookup_prefers_product_then_vendor() -> None:
    rigol = quirks_for(0x1AB1, 0x1234)
    assert rigol is KNOWN_QUIRKS[(0x1AB1, None)]
    assert rigol.one_request_per_response and rigol.transfer_size_wrong_for_blocks
    ds1000z = quirks_for(0x1AB1, 0x04CE)
    assert ds1000z.clear_hangs and ds1000z.one_request_per_response
    assert quirks_for(0x1AB1, None) is rigol
    assert quirks_for(0xF4EC, 0xEE38).max_out_transfer_size == 48
    assert quirks_for(0x1334, 1).max_transfer_size == 63
    assert quirks_for(0x0957, 0x0588).remote_local_broken
    assert quirks_for(0x0957, 0x1796) is NO_QUIRKS
    assert quirks_for(None, None) is NO_QUIRKS


def test_extra_entries_win_and_replace() -> None:
    mine = Quirks(write_read_delay=0.01)
    assert quirks_for(0x1AB1, 0x04CE, {(0x1AB1, 0x04CE): mine}) is mine
    assert quirks_for(0x1AB1, 0x04CE, {(0x1AB1, None): mine}) is mine
    assert quirks_for(0x1234, 5, {(0x1234, None): mine}) is mine
    built_on = replace(KNOWN_QUIRKS[(0x1AB1, None)], write_read_delay=0.01)
    assert quirks_for(0x1AB1, 7, {(0x1AB1, 7): built_on}).one_request_per_response


def test_known_entries_and_active_names() -> None:
    assert all(isinstance(q, Quirks) for q in KNOWN_QUIRKS.values())
    assert NO_QUIRKS.active == ()
    assert Quirks(clear_hangs=True, max_transfer_size=63).active == (
        "max_transfer_size",
        "clear_hangs",
    )
    assert Quirks(max_transfer_size=63, max_out_transfer_size=48).out_transfer_limit == 48
    assert NO_QUIRKS.out_transfer_limit is None


@pytest.mark.parametrize(
    "bad",
    [
        {"max_transfer_size": 0},
        {"max_out_transfer_size": -1},
        {"write_read_delay": -1.0},
        {"terminator": 256},
    ],
)
def test_validation(bad: dict[str, Any]) -> None:
    with pytest.raises(LocalProtocolError):
        Quirks(**bad)


# -- every quirk against a device that has it ---------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Case:
    quirks: Quirks
    scenario: Callable[[Pair], None]
    options: dict[str, Any] = field(default_factory=dict)  # Pair(...) options
    host_options: dict[str, Any] = field(default_factory=dict)


def _blocks(*sizes: int, max_bytes: int = 1 << 30) -> Callable[[Pair], None]:
    def scenario(pair: Pair) -> None:
        for size in sizes:
            got = pair.query(b"DATA? %d\n" % size, max_bytes=max_bytes)
            assert got == block_response(size), f"block of {size} bytes"
        assert pair.query(b"*IDN?\n") == IDN

    return scenario


def _upload_and_query(pair: Pair) -> None:
    payload = bytes(test_pattern(300))
    pair.write(b"UPL " + block_header(300) + payload + b"\n")
    assert pair.query(b"UPL?\n").startswith(b"300,")


def _idn_twice(pair: Pair) -> None:
    for _ in range(2):
        assert pair.query(b"*IDN?\n") == IDN


def _reset_then_query(pair: Pair) -> None:
    if pair.conn.quirks.reset_on_open:  # what the transport does when opening
        pair.function.reset()
    _idn_twice(pair)


def _remote_then_query(pair: Pair) -> None:
    if pair.conn.capabilities and pair.conn.capabilities.ren_control:
        assert parse_status(pair.control(ren_control_request(True, 0))) is UsbtmcStatus.SUCCESS
    _idn_twice(pair)


def _clear_then_query(pair: Pair) -> None:
    pair.write(b"*IDN?\n")
    if pair.conn.quirks.clear_hangs:  # the transport's replacement for INITIATE_CLEAR
        reply = parse_initiate_abort(pair.control(pair.conn.initiate_abort_bulk_in(1)))
        assert reply.status is UsbtmcStatus.FAILED
        pair.function.clear_halt(BULK_OUT)
        pair.function.clear_halt(BULK_IN)
    else:
        assert parse_status(pair.control(pair.conn.initiate_clear())) is UsbtmcStatus.SUCCESS
        for _ in range(100):
            check = parse_check_clear_status(pair.control(pair.conn.check_clear_status()))
            if check.status is UsbtmcStatus.SUCCESS:
                break
        else:
            raise Hang("CHECK_CLEAR_STATUS stays PENDING")
        pair.function.clear_halt(BULK_OUT)
    pair.conn.reset()
    _idn_twice(pair)


def _delayed_read(pair: Pair) -> None:
    clock = pair.function.clock
    assert isinstance(clock, FakeClock)
    for _ in range(2):
        pair.write(b"*IDN?\n")
        clock.now += pair.conn.quirks.write_read_delay + 0.001  # the transport sleeps this long
        assert pair.read() == IDN


def _padding(pair: Pair) -> None:
    assert pair.query(b"*IDN?\n") == IDN  # 26 bytes: 2 NULs
    # A block whose payload ends in "\n\0" keeps it; only the padding goes.
    pair.model.add_raw_query("RAW?", lambda args: b"#12\n\0\n")
    assert pair.query(b"RAW?\n") == b"#12\n\0\n"
    _blocks(1, 2, 3, 4, 1000)(pair)


CASES: dict[str, Case] = {
    "one_request_per_response": Case(
        Quirks(one_request_per_response=True),
        _blocks(3000, 10, max_bytes=10_000),
        host_options={"max_transfer_size": 1000},
    ),
    "eom_unreliable": Case(
        Quirks(eom_unreliable=True),
        _blocks(20_000, 5, 0),  # 63-byte transfers, one of them ends on 0x0A inside the block
        host_options={"max_transfer_size": 63},
    ),
    "transfer_size_wrong_for_blocks": Case(
        Quirks(transfer_size_wrong_for_blocks=True), _blocks(70_000, 65_528, 100, 2_000_000)
    ),
    "no_short_packet_on_exact_multiple": Case(
        Quirks(no_short_packet_on_exact_multiple=True), _blocks(1005, 493, 1000, 1517, 100)
    ),
    "transfer_size_includes_padding": Case(Quirks(transfer_size_includes_padding=True), _padding),
    "empty_first_bulk_in_retry": Case(Quirks(empty_first_bulk_in_retry=True), _idn_twice),
    "msgid_unreliable": Case(Quirks(msgid_unreliable=True), _idn_twice),
    "max_transfer_size": Case(Quirks(max_transfer_size=63), _upload_and_query),
    "max_out_transfer_size": Case(Quirks(max_out_transfer_size=48), _upload_and_query),
    "reset_on_open": Case(Quirks(reset_on_open=True), _reset_then_query),
    "remote_local_broken": Case(Quirks(remote_local_broken=True), _remote_then_query),
    "clear_hangs": Case(Quirks(clear_hangs=True), _clear_then_query),
    "write_read_delay": Case(
        Quirks(write_read_delay=0.02), _delayed_read, options={"clock": FakeClock()}
    ),
}


def test_every_quirk_has_a_case() -> None:
    names = {f.name for f in fields(Quirks)} - {"terminator"}
    assert names == set(CASES)


def _pair(case: Case, host: Quirks) -> Pair:
    options = dict(case.options)
    if "clock" in options:
        options["clock"] = FakeClock()
    return Pair(
        TmcTestDevice(),
        quirks=host,
        device_quirks=case.quirks,
        **case.host_options,
        **options,
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_device_quirk_breaks_a_plain_host(name: str) -> None:
    case = CASES[name]
    pair = _pair(case, NO_QUIRKS)
    with pytest.raises((Hang, RemoteProtocolError, OverflowError, AssertionError)):
        case.scenario(pair)


@pytest.mark.parametrize("name", sorted(CASES))
def test_host_with_the_quirk_copes(name: str) -> None:
    case = CASES[name]
    case.scenario(_pair(case, case.quirks))


@pytest.mark.parametrize("name", sorted(CASES))
def test_quirk_on_a_well_behaved_device_is_harmless(name: str) -> None:
    case = CASES[name]
    options = {"clock": FakeClock()} if "clock" in case.options else {}
    pair = Pair(
        TmcTestDevice(),
        quirks=case.quirks,
        device_quirks=NO_QUIRKS,
        **case.host_options,
        **options,
    )
    case.scenario(pair)


@pytest.mark.parametrize(
    "key",
    [
        (0x1AB1, None),
        (0x1AB1, 0x04CE),
        (0x1AB1, 0x0588),
        (0xF4EC, None),
        (0xF4EC, 0xEE38),
        (0x1334, None),
    ],
)
def test_known_devices_against_their_emulation(key: tuple[int, int | None]) -> None:
    quirks = KNOWN_QUIRKS[key]
    pair = Pair(TmcTestDevice(), quirks=quirks)
    if quirks.reset_on_open:
        pair.function.reset()
    _blocks(0, 1005, 493, 70_000, 300_000)(pair)
    _upload_and_query(pair)


def test_remote_local_broken_masks_the_capabilities() -> None:
    pair = Pair(quirks=Quirks(remote_local_broken=True))
    assert pair.caps.usb488 and not pair.caps.ren_control and not pair.caps.rl1
