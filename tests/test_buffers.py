"""The byte views of a scatter send (aiotmc._buffers): plain sync tests."""

from __future__ import annotations

from aiotmc._buffers import byte_views, drop_sent


def test_byte_views_skip_empty_parts_and_copy_nothing() -> None:
    data = bytearray(b"abc")
    views = byte_views([b"", data, memoryview(b"de"), bytearray()])
    assert [bytes(v) for v in views] == [b"abc", b"de"]
    data[0] = ord("x")
    assert bytes(views[0]) == b"xbc"


def test_drop_sent_takes_whole_and_partial_views_off_the_front() -> None:
    views = byte_views([b"abc", b"de", b"fgh"])
    drop_sent(views, 0)
    assert [bytes(v) for v in views] == [b"abc", b"de", b"fgh"]
    drop_sent(views, 4)
    assert [bytes(v) for v in views] == [b"e", b"fgh"]
    drop_sent(views, 1)
    assert [bytes(v) for v in views] == [b"fgh"]
    drop_sent(views, 3)
    assert views == []
