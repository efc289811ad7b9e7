"""Checks of what goes over the link: message framing and IEEE 488.2 blocks."""

from __future__ import annotations

import zlib

from .._exceptions import LocalProtocolError, ProtocolError, RemoteProtocolError
from .._types import BytesLike
from ..protocol.ieee4882 import block_header, decode_block
from ._session import MAX_SIZE, KitOptions, LinkOpener, Session, Stats, strip
from .device import binary_payload, block_payload, check_payload

__all__ = ["check_blocks", "check_framing"]


async def check_framing(open_link: LinkOpener, *, options: KitOptions | None = None) -> Stats:
    """Messages arrive whole and answers come back whole, whatever bytes they hold.

    Parts of a message are sent as one message; ``end=False`` continues a message;
    terminators inside quoted strings and blocks are data; ``max_size`` rejects a long
    answer after consuming it; an upload in parts arrives byte for byte.
    """
    opts = options or KitOptions()
    async with Session(open_link, "check_framing", opts) as s:
        async with s.step("exchange"):
            tag = s.tag()
            assert await s.ask(b"ECHO? %d\n" % tag) == b"%d" % tag
        async with s.step("send_message in parts of every buffer type, receive_message"):
            tag = s.tag()
            parts: list[BytesLike] = [b"EC", bytearray(b"HO? "), memoryview(b"%d" % tag), b"\n"]
            await s.link.send_message(parts, deadline=s.deadline())
            answer = await s.link.receive_message(max_size=MAX_SIZE, deadline=s.deadline())
            assert strip(answer) == b"%d" % tag, answer[:40]
        async with s.step("a message sent with end=False, then its end"):
            tag = s.tag()
            await s.link.send_message([b"ECHO? %d" % tag], end=False, deadline=s.deadline())
            await s.link.send_message([b"\n"], deadline=s.deadline())
            answer = await s.link.receive_message(max_size=MAX_SIZE, deadline=s.deadline())
            assert strip(answer) == b"%d" % tag, answer[:40]
        async with s.step("compound query: one answer message"):
            a, b = s.tag(), s.tag()
            assert await s.ask(b"ECHO? %d;ECHO? %d\n" % (a, b)) == b"%d;%d" % (a, b)
        async with s.step("terminator and separator inside a quoted string"):
            text = b'"x;y\nz %d"' % s.tag()
            assert await s.ask(b"ECHO? " + text + b"\n") == text
        async with s.step("definite block holding terminators, read as a message"):
            tag = s.tag()
            message = await s.link.exchange(
                b"BIN? 300,%d\n" % tag, max_size=MAX_SIZE, deadline=s.deadline()
            )
            check_payload(decode_block(message, max_size=300), 300, tag, binary=True)
        for size in (1000, 70_000):
            async with s.step(f"answer of {size} bytes over max_size, then in step"):
                try:
                    await s.link.exchange(
                        b"TEXT? %d,%d\n" % (size, s.tag()),
                        max_size=size // 2,
                        deadline=s.deadline(),
                    )
                except RemoteProtocolError:
                    pass
                else:
                    raise AssertionError("no RemoteProtocolError")
                await s.expect_in_step(f"an answer over max_size ({size} bytes)")
            async with s.step(f"answer of {size} bytes within max_size"):
                tag = s.tag()
                answer = await s.ask(b"TEXT? %d,%d\n" % (size, tag))
                assert answer == block_payload(size, tag), answer[:40]
        for size in (10, 300_000):
            async with s.step(f"upload of {size} bytes in parts"):
                payload = binary_payload(size, s.tag())
                upload: list[BytesLike] = [b"UPL ", block_header(size), memoryview(payload), b"\n"]
                await s.link.send_message(upload, deadline=s.deadline())
                answer = await s.ask(b"UPL?\n")
                assert answer == b"%d,%d" % (size, zlib.crc32(payload)), answer
        async with s.step("in step at the end"):
            await s.expect_in_step("the framing checks")
        return s.stats


async def check_blocks(open_link: LinkOpener, *, options: KitOptions | None = None) -> Stats:
    """``receive_block``: definite and indefinite blocks, into a new or the caller's buffer,
    ``max_size`` and a short buffer refused (and the link in step after each)."""
    opts = options or KitOptions()
    async with Session(open_link, "check_blocks", opts) as s:

        async def block(command: bytes, **kwargs: object) -> memoryview:
            await s.link.send_message([command], deadline=s.deadline())
            view = await s.link.receive_block(
                deadline=s.deadline(),
                **kwargs,  # type: ignore[arg-type]
            )
            assert isinstance(view, memoryview), f"receive_block returned {type(view)}"
            return view

        for size in opts.block_sizes:
            async with s.step(f"definite block of {size} bytes"):
                tag = s.tag()
                view = await block(b"BIN? %d,%d\n" % (size, tag), max_size=size)
                check_payload(view, size, tag, binary=True)
            async with s.step(f"indefinite block of {size} bytes"):
                tag = s.tag()
                view = await block(b"IBLK? %d,%d\n" % (size, tag), max_size=size)
                check_payload(view, size, tag)
            async with s.step(f"definite block of {size} bytes into a larger buffer"):
                tag = s.tag()
                buffer = bytearray(size + 7)
                into = memoryview(buffer)
                view = await block(b"BLK? %d,%d\n" % (size, tag), into=into, max_size=size)
                check_payload(view, size, tag)
                check_payload(buffer[:size], size, tag)  # read in place, not copied elsewhere
        size = opts.block_sizes[-1]
        async with s.step("block over max_size"):
            await s.link.send_message([b"BLK? %d,%d\n" % (size, s.tag())], deadline=s.deadline())
            try:
                await s.link.receive_block(max_size=size - 1, deadline=s.deadline())
            except ProtocolError:
                pass
            else:
                raise AssertionError("no ProtocolError")
            await s.expect_in_step("a block over max_size")
        async with s.step("block larger than the buffer"):
            await s.link.send_message([b"BLK? %d,%d\n" % (size, s.tag())], deadline=s.deadline())
            try:
                await s.link.receive_block(
                    memoryview(bytearray(size - 1)), max_size=MAX_SIZE, deadline=s.deadline()
                )
            except (LocalProtocolError, RemoteProtocolError):
                pass
            else:
                raise AssertionError("no ProtocolError")
            await s.expect_in_step("a block larger than the buffer")
        async with s.step("an answer that is not a block"):
            await s.link.send_message([b"ECHO? %d\n" % s.tag()], deadline=s.deadline())
            try:
                await s.link.receive_block(max_size=MAX_SIZE, deadline=s.deadline())
            except RemoteProtocolError:
                pass
            else:
                raise AssertionError("no RemoteProtocolError")
            await s.expect_in_step("an answer that is not a block")
        async with s.step("empty definite block"):
            tag = s.tag()
            view = await block(b"BLK? 0,%d\n" % tag, max_size=16)
            assert len(view) == 0, bytes(view[:16])
            await s.expect_in_step("an empty block")
        return s.stats
