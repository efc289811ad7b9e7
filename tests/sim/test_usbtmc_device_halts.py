"""The emulator's endpoint halts: at a chosen byte, repeated, and like a real device (a
halt before a transfer's first byte keeps the response queued; one inside a transfer
leaves it in progress)."""

from __future__ import annotations

from aiotmc.protocol.usbtmc import UsbtmcStatus, parse_initiate_abort
from aiotmc.sim.usb_function import STALL
from aiotmc.sim.usbtmc_device import BULK_IN, BULK_OUT

from ..protocol.test_usbtmc import IDN, Pair, block_response


def abort_in(pair: Pair) -> UsbtmcStatus:
    reply = pair.control(pair.conn.initiate_abort_bulk_in())
    return parse_initiate_abort(reply).status


def test_halt_before_the_first_byte_keeps_the_response() -> None:
    pair = Pair()
    pair.write(b"*IDN?\n")
    pair.function.stall_bulk_in(0)
    pair.out(pair.conn.request_response(1000))
    assert pair.function.bulk_in(BULK_IN, 512) is STALL
    pair.function.clear_halt(BULK_IN)
    assert abort_in(pair) is UsbtmcStatus.FAILED  # the request is forgotten...
    pair.conn.reset()
    assert pair.read() == IDN  # ... the response is not


def test_halt_inside_a_transfer_leaves_it_in_progress() -> None:
    pair = Pair()
    pair.write(b"DATA? 5000\n")
    pair.function.stall_bulk_in(512)
    pair.out(pair.conn.request_response(1 << 20))
    assert pair.function.bulk_in(BULK_IN, 4096) is STALL  # 512 bytes left, then the halt
    pair.function.clear_halt(BULK_IN)
    assert abort_in(pair) is UsbtmcStatus.SUCCESS


def test_halt_after_a_whole_read_then_the_rest() -> None:
    pair = Pair()
    pair.write(b"DATA? 5000\n")
    pair.function.stall_bulk_in(1024)
    pair.out(pair.conn.request_response(1 << 20))
    first = pair.function.bulk_in(BULK_IN, 1024)
    assert isinstance(first, bytes) and len(first) == 1024
    assert pair.function.bulk_in(BULK_IN, 4096) is STALL
    assert pair.function.bulk_in(BULK_IN, 4096) is STALL  # until CLEAR_FEATURE
    pair.function.clear_halt(BULK_IN)
    rest = pair.function.bulk_in(BULK_IN, 8192)  # the transfer continues
    assert isinstance(rest, bytes)
    expected = block_response(5000)
    assert (first + rest)[12 : 12 + len(expected)] == expected


def test_repeated_halts_rearm_on_each_clear() -> None:
    pair = Pair()
    pair.function.stall_bulk_out(times=2)
    transfer = pair.conn.send_message(b"*IDN?\n")[0]
    assert pair.function.bulk_out(BULK_OUT, transfer) is STALL
    pair.function.clear_halt(BULK_OUT)
    assert pair.function.bulk_out(BULK_OUT, transfer) is STALL
    pair.function.clear_halt(BULK_OUT)
    assert pair.function.bulk_out(BULK_OUT, transfer) is None
    assert pair.read() == IDN


def test_bulk_out_halt_after_whole_packets() -> None:
    pair = Pair(max_packet_size=64)
    pair.function.stall_bulk_out(100)  # the device takes one packet, then halts
    transfer = pair.conn.send_message(b"*IDN?;" + b" " * 200 + b"\n")[0]
    assert pair.function.bulk_out(BULK_OUT, transfer) is STALL
    assert pair.function.seen.out_transfers[-1][1] == 207  # its header arrived
    assert pair.function.seen.messages == 0
