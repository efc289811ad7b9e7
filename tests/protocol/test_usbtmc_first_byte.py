"""UsbtmcConnection.awaiting_first_byte: when a bulk-IN halt has lost nothing."""

from __future__ import annotations

from aiotmc.protocol.usbtmc import (
    NEED_DATA,
    MsgID,
    NeedRequest,
    UsbtmcConnection,
    UsbtmcState,
    pack_header,
)

from .test_usbtmc import Pair


def test_only_before_the_first_byte_of_the_first_transfer() -> None:
    conn = UsbtmcConnection(max_packet_size=8, first_read_size=8)
    assert not conn.awaiting_first_byte  # idle
    conn.request_response(100)
    assert conn.awaiting_first_byte
    assert conn.next_read_size() == 8
    conn.receive_bulk_in(pack_header(MsgID.DEV_DEP_MSG_IN, conn.in_tag, 6, 1)[:8])
    assert conn.next_event() is NEED_DATA  # a whole packet: part of the header
    assert not conn.awaiting_first_byte
    conn.reset()
    assert conn.state is UsbtmcState.IDLE and not conn.awaiting_first_byte


def test_not_for_the_rest_of_a_response() -> None:
    pair = Pair(max_transfer_size=16)
    pair.write(b"*IDN?\n")
    conn = pair.conn
    pair.out(conn.request_response(1000))
    assert conn.awaiting_first_byte
    for _ in range(10):
        event = conn.next_event()
        if event is NEED_DATA:
            conn.receive_bulk_in(pair.bulk_in(conn.next_read_size()))
        elif isinstance(event, NeedRequest):
            break
    assert conn.state is UsbtmcState.PARTIAL
    pair.out(conn.request_response(1000))
    assert not conn.awaiting_first_byte  # 16 bytes of the response arrived before
