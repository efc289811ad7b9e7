"""The sans-IO NATS protocol: parsing what a server sends (hostile input included) and
encoding what a client sends."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiotmc import LocalProtocolError, RemoteProtocolError
from aiotmc.protocol.nats import (
    MAX_CONTROL_LINE,
    NEED_DATA,
    Err,
    Info,
    Msg,
    NatsParser,
    Ping,
    Pong,
    encode_connect,
    encode_headers,
    encode_pub,
    encode_sub,
    encode_unsub,
    parse_headers,
)


def events(data: bytes, *, chunk: int = 0, max_payload: int = 1 << 20) -> list[object]:
    parser = NatsParser(max_payload=max_payload)
    out: list[object] = []
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)] if chunk else [data]
    for piece in pieces:
        parser.feed(piece)
        while (event := parser.next_event()) is not NEED_DATA:
            out.append(event)
    return out


STREAM = (
    b'INFO {"server_id":"x","max_payload":1048576,"headers":true}\r\n'
    b"PING\r\n"
    b"MSG a.b 7 5\r\nhello\r\n"
    b"MSG a.b 7 _INBOX.x.1 0\r\n\r\n"
    b"HMSG _INBOX.x.2 1 31 34\r\nNATS/1.0\r\nAiotmc-Status: ok\r\n\r\nabc\r\n"
    b"HMSG _INBOX.x.3 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n"
    b"PONG\r\n-ERR 'Authorization Violation'\r\n"
)


@pytest.mark.parametrize("chunk", [0, 1, 2, 7, 64])
def test_a_server_stream_parses_the_same_however_it_is_cut(chunk: int) -> None:
    got = events(STREAM, chunk=chunk)
    assert isinstance(got[0], Info) and got[0].max_payload == 1048576
    assert got[1] == Ping()
    assert got[2] == Msg("a.b", 7, None, b"hello")
    assert got[3] == Msg("a.b", 7, "_INBOX.x.1", b"")
    assert got[4] == Msg("_INBOX.x.2", 1, None, b"abc", {"Aiotmc-Status": "ok"}, None)
    assert isinstance(got[5], Msg) and got[5].status == 503 and got[5].payload == b""
    assert got[6] == Pong()
    assert got[7] == Err("Authorization Violation")
    assert len(got) == 8


def test_the_servers_two_spaces_where_the_reply_is_missing_parse() -> None:
    got = events(b"MSG a.b 7  5\r\nhello\r\nHMSG c 1  12 12\r\nNATS/1.0\r\n\r\n\r\n")
    assert got == [Msg("a.b", 7, None, b"hello"), Msg("c", 1, None, b"", {}, None)]


def test_a_length_beyond_the_limit_is_refused_before_any_payload_is_buffered() -> None:
    parser = NatsParser(max_payload=1000)
    parser.feed(b"MSG a 1 2147483648\r\n")
    with pytest.raises(RemoteProtocolError, match="exceeds the limit"):
        parser.next_event()


def test_a_control_line_without_end_is_bounded() -> None:
    parser = NatsParser()
    parser.feed(b"MSG " + b"a" * (MAX_CONTROL_LINE + 10))
    with pytest.raises(RemoteProtocolError, match="control line"):
        parser.next_event()


@pytest.mark.parametrize(
    "line",
    [
        b"MSG a\r\n",
        b"MSG a 1 x\r\n",
        b"MSG a 1 -5\r\n",
        b"HMSG a 1 10 5\r\n",
        b"HMSG a 1 5\r\n",
        b"BOGUS\r\n",
        b"INFO [1,2]\r\n",
        b"INFO {nope\r\n",
    ],
)
def test_malformed_lines_are_typed_errors(line: bytes) -> None:
    parser = NatsParser()
    parser.feed(line)
    with pytest.raises(RemoteProtocolError):
        parser.next_event()


def test_a_payload_not_followed_by_crlf_is_refused() -> None:
    parser = NatsParser()
    parser.feed(b"MSG a 1 3\r\nabcXY")
    with pytest.raises(RemoteProtocolError, match="CRLF"):
        parser.next_event()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_gives_events_or_typed_errors_only(data: bytes) -> None:
    parser = NatsParser(max_payload=1000)
    parser.feed(data)
    try:
        for _ in range(400):  # bounded: each event consumes input
            if parser.next_event() is NEED_DATA:
                break
    except RemoteProtocolError:
        pass


def test_headers_round_trip() -> None:
    block = encode_headers({"Aiotmc-Op": "query", "X": "1 2"})
    assert parse_headers(block) == (None, {"Aiotmc-Op": "query", "X": "1 2"})
    with pytest.raises(LocalProtocolError):
        encode_headers({"Bad": "a\r\nInjected: 1"})
    with pytest.raises(RemoteProtocolError):
        parse_headers(b"HTTP/1.1 200\r\n\r\n")


def test_encoders() -> None:
    assert b"".join(encode_pub("a.b", b"xy")) == b"PUB a.b 2\r\nxy\r\n"
    assert b"".join(encode_pub("a.b", b"xy", reply="r.1")) == b"PUB a.b r.1 2\r\nxy\r\n"
    pub = b"".join(encode_pub("a", b"p", headers={"K": "v"}))
    assert pub == b"HPUB a 18 19\r\nNATS/1.0\r\nK: v\r\n\r\np\r\n"
    assert events(pub.replace(b"HPUB a", b"HMSG a 3"))[0] == Msg("a", 3, None, b"p", {"K": "v"})
    assert encode_sub("a.*", 4) == b"SUB a.* 4\r\n"
    assert encode_sub("a", 4, queue="q") == b"SUB a q 4\r\n"
    assert encode_unsub(4) == b"UNSUB 4\r\n" and encode_unsub(4, 1) == b"UNSUB 4 1\r\n"
    with pytest.raises(LocalProtocolError):
        encode_pub("a b", b"")
    connect = encode_connect(name="n", version="1", user="u", password="p")
    assert connect.startswith(b"CONNECT {") and connect.endswith(b"}\r\nPING\r\n")
    assert b'"headers": true' in connect and b'"pass": "p"' in connect
