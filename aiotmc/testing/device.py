"""The instrument on the other end of the conformance kit (stdlib + ``aiotmc.sim`` only).

Every answer names the question it belongs to, so an answer that reaches the wrong
exchange (a *crossed answer*) is detected at once. Everything the kit needs is in-band,
so the same device serves every attachment, including ones in another process (the
umockdev device process, the kernel tier's usbredir hub):

==========================  =================================================================
``ECHO? <text>``             ``<text>`` as sent
``BLK? <size>,<tag>``        a definite block of ``size`` bytes: the 8-digit ``tag`` repeated
``BIN? <size>,<tag>``        a definite block: ``tag`` and then ``\\n\\r;#"'\\0\\xff``, repeated
``IBLK? <size>,<tag>``       an indefinite block (``#0``) of the ``BLK?`` payload
``TEXT? <size>,<tag>``       ``size`` characters of the ``BLK?`` payload, not a block
``SLOW? <seconds>,<text>``   ``<text>``, readable ``seconds`` after the message arrived
``UPLoad <block>``           accept a block of any size
``UPLoad?``                  ``<bytes>,<crc32>`` of the last upload
==========================  =================================================================

plus the IEEE 488.2 common commands of :class:`~aiotmc.sim.device.SimDevice` (``*SRE``,
``*ESE``, ``*OPC``... raise service requests). :func:`usb_function` is the factory the
out-of-process USB emulators take (``"aiotmc.testing.device:usb_function"``).
"""

from __future__ import annotations

import zlib
from typing import Any, Final

from ..sim.commands import Block, Call, Raw, Response, command
from ..sim.device import SimDevice

__all__ = [
    "USB_FACTORY",
    "ConformanceDevice",
    "binary_payload",
    "block_payload",
    "check_payload",
    "conformance_device",
    "usb_function",
]

IDENTITY: Final = "aiotmc,CONFORMANCE,0001,1.0"
USB_FACTORY: Final = "aiotmc.testing.device:usb_function"
"""The ``{"factory": ...}`` spec of :func:`usb_function` for the USB emulator processes."""

_NASTY: Final = b"\n\r;#\"'\x00\xff"  # bytes that end messages or strings if misframed
_MAX_SIZE: Final = 1 << 30


def block_payload(size: int, tag: int) -> bytes:
    """``size`` bytes made of the 8-digit ``tag`` repeated (cut to size)."""
    word = b"%08d" % (tag % 100_000_000)
    return (word * (size // 8 + 1))[:size]


def binary_payload(size: int, tag: int) -> bytes:
    """``size`` bytes: the 8-digit ``tag`` then framing characters, repeated."""
    word = b"%08d" % (tag % 100_000_000) + _NASTY
    return (word * (size // len(word) + 1))[:size]


def check_payload(
    payload: bytes | bytearray | memoryview, size: int, tag: int, *, binary: bool = False
) -> None:
    """Assert that ``payload`` answers ``BLK?``/``IBLK?`` (``BIN?``: ``binary``) size,tag."""
    want = (binary_payload if binary else block_payload)(size, tag)
    got = bytes(payload)
    head = want[: min(16, size)]
    assert got[: len(head)] == head, f"crossed answer: asked tag {tag}, got {got[:16]!r}"
    assert len(got) == size, f"block of {len(got)} bytes, asked {size} (tag {tag})"
    assert got == want, f"corrupt block payload for tag {tag}"


class ConformanceDevice(SimDevice):
    """A :class:`~aiotmc.sim.device.SimDevice` with the self-identifying kit commands."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("identity", IDENTITY)
        super().__init__(**kwargs)
        self.uploads: list[int] = []  #: sizes of the blocks received by ``UPLoad``
        self._last_upload = (0, 0)

    @staticmethod
    def _size_tag(call: Call) -> tuple[int, int]:
        return call.integer(0, minimum=0, maximum=_MAX_SIZE), call.integer(1, minimum=0)

    @command("ECHO?", args=1)
    def _echo(self, call: Call) -> Response:
        return call.raw(0)

    @command("BLK?", args=2)
    def _blk(self, call: Call) -> Response:
        size, tag = self._size_tag(call)
        return Block(block_payload(size, tag))

    @command("BIN?", args=2)
    def _bin(self, call: Call) -> Response:
        size, tag = self._size_tag(call)
        return Block(binary_payload(size, tag))

    @command("IBLK?", args=2)
    def _iblk(self, call: Call) -> Response:
        size, tag = self._size_tag(call)
        return Raw(b"#0" + block_payload(size, tag) + b"\n")

    @command("TEXT?", args=2)
    def _text(self, call: Call) -> Response:
        size, tag = self._size_tag(call)
        return block_payload(size, tag)

    @command("SLOW?", args=2)
    def _slow(self, call: Call) -> Response:
        self.delay_next_responses(call.number(0, minimum=0.0, maximum=1e6))
        return call.raw(1)

    @command("UPLoad", args=1)
    def _upload(self, call: Call) -> Response:
        data = call.block(0)
        self.uploads.append(len(data))
        self._last_upload = (len(data), zlib.crc32(data))
        return None

    @command("UPLoad?")
    def _upload_query(self, call: Call) -> Response:
        size, crc = self._last_upload
        return f"{size},{crc}"


def conformance_device(**kwargs: Any) -> ConformanceDevice:
    """A new :class:`ConformanceDevice` (``kwargs``: ``latency=``, ``identity=``...)."""
    return ConformanceDevice(**kwargs)


def usb_function(config: dict[str, Any]) -> Any:
    """USB emulator factory: a conformance device behind a ``UsbtmcFunction``.

    ``config`` holds ``UsbtmcFunction`` keywords (``serial``, ``vid``, ``pid``...).
    """
    from ..sim.usbtmc_device import UsbtmcFunction

    return UsbtmcFunction(conformance_device(), **config)
