"""XDR encoding: known encodings, limits, and round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiotmc import LocalProtocolError, RemoteProtocolError
from aiotmc.protocol.xdr import Packer, Unpacker, padding


def test_known_encodings() -> None:
    p = Packer()
    p.pack_uint(0xDEADBEEF)
    p.pack_int(-1)
    p.pack_bool(True)
    p.pack_opaque(b"abcde")
    p.pack_string("inst0")
    assert p.getvalue() == (
        b"\xde\xad\xbe\xef\xff\xff\xff\xff\x00\x00\x00\x01"
        b"\x00\x00\x00\x05abcde\x00\x00\x00"
        b"\x00\x00\x00\x05inst0\x00\x00\x00"
    )


def test_padding() -> None:
    assert [len(padding(n)) for n in range(5)] == [0, 3, 2, 1, 0]


@pytest.mark.parametrize("value", [-1, 0x1_0000_0000])
def test_uint_out_of_range_is_local_error(value: int) -> None:
    with pytest.raises(LocalProtocolError):
        Packer().pack_uint(value)


@pytest.mark.parametrize("value", [-0x80000001, 0x80000000])
def test_int_out_of_range_is_local_error(value: int) -> None:
    with pytest.raises(LocalProtocolError):
        Packer().pack_int(value)


def test_non_ascii_string_is_local_error() -> None:
    with pytest.raises(LocalProtocolError, match="ASCII"):
        Packer().pack_string("inst\u00e9")


def test_opaque_longer_than_limit_is_local_error() -> None:
    with pytest.raises(LocalProtocolError, match="exceeds 40"):
        Packer().pack_opaque(b"x" * 41, max_size=40)


def test_truncated_int() -> None:
    with pytest.raises(RemoteProtocolError, match="truncated"):
        Unpacker(b"\x00\x00").unpack_int()


def test_opaque_length_beyond_data_does_not_allocate() -> None:
    # a length of 2 GB followed by 4 bytes: an error, nothing sliced
    u = Unpacker(b"\x7f\xff\xff\xffabcd")
    with pytest.raises(RemoteProtocolError, match="truncated"):
        u.unpack_opaque()


def test_opaque_over_limit_is_remote_error() -> None:
    with pytest.raises(RemoteProtocolError, match="exceeds 40"):
        Unpacker(b"\x00\x00\x00\x29" + b"x" * 44).unpack_opaque(max_size=40)


def test_missing_padding_is_error() -> None:
    with pytest.raises(RemoteProtocolError, match="padding"):
        Unpacker(b"\x00\x00\x00\x01a").unpack_opaque()


def test_bool_must_be_0_or_1() -> None:
    with pytest.raises(RemoteProtocolError, match="bool"):
        Unpacker(b"\x00\x00\x00\x02").unpack_bool()


def test_non_ascii_string_is_remote_error() -> None:
    with pytest.raises(RemoteProtocolError, match="ASCII"):
        Unpacker(b"\x00\x00\x00\x01\xff\x00\x00\x00").unpack_string()


def test_opaque_view_does_not_copy() -> None:
    data = bytearray(b"\x00\x00\x00\x03abc\x00")
    view = Unpacker(data).unpack_opaque_view()
    data[4] = ord("z")
    assert view.tobytes() == b"zbc"


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("uint"), st.integers(0, 0xFFFFFFFF)),
            st.tuples(st.just("int"), st.integers(-0x80000000, 0x7FFFFFFF)),
            st.tuples(st.just("bool"), st.booleans()),
            st.tuples(st.just("opaque"), st.binary(max_size=64)),
            st.tuples(st.just("string"), st.text(alphabet=st.characters(max_codepoint=127))),
        ),
        max_size=20,
    )
)
def test_round_trip(items: list[tuple[str, object]]) -> None:
    p = Packer()
    for kind, value in items:
        getattr(p, f"pack_{kind}")(value)
    encoded = p.getvalue()
    assert len(encoded) % 4 == 0
    u = Unpacker(encoded)
    assert [getattr(u, f"unpack_{kind}")() for kind, _ in items] == [v for _, v in items]
    assert u.remaining == 0
