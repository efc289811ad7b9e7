"""Where a block's payload goes (aiotmc.transports._block_into): sans-IO, plain tests."""

from __future__ import annotations

import pytest

from aiotmc import LocalProtocolError
from aiotmc.transports._block_into import block_target, buffer_too_small, deliver_block


def test_block_target_uses_the_callers_buffer_when_it_fits() -> None:
    into = memoryview(bytearray(10))
    target, too_small = block_target(into, 4)
    assert too_small is None and target.obj is into.obj and len(target) == 4


def test_block_target_reads_into_scratch_when_the_buffer_is_too_small() -> None:
    into = memoryview(bytearray(3))
    target, too_small = block_target(into, 4)
    assert too_small == 3 and target.obj is not into.obj and len(target) == 4
    fresh, none = block_target(None, 5)
    assert none is None and len(fresh) == 5


def test_deliver_block_copies_into_the_buffer_or_a_new_one() -> None:
    into = memoryview(bytearray(b"xxxxxx"))
    got = deliver_block(b"abc", into)
    assert bytes(got) == b"abc" and bytes(into) == b"abcxxx"
    fresh = deliver_block(memoryview(b"abc"), None)
    assert bytes(fresh) == b"abc" and isinstance(fresh.obj, bytearray)


def test_a_buffer_too_small_is_one_typed_error() -> None:
    with pytest.raises(LocalProtocolError, match="block of 4 bytes does not fit the 3-byte"):
        deliver_block(b"abcd", memoryview(bytearray(3)))
    assert str(buffer_too_small(10, 2)) == "block of 10 bytes does not fit the 2-byte buffer"
