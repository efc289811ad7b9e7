"""Checks of the link's description and its out-of-band operations: info, service
requests, status byte, trigger, device clear."""

from __future__ import annotations

from .._exceptions import UnsupportedOperation
from .._types import StatusByte
from ..transports.base import Capabilities, TransportInfo
from ._session import MAX_SIZE, KitOptions, LinkOpener, Session, Stats, strip

__all__ = ["check_info", "check_status"]

_RQS = int(StatusByte.RQS)
_ESB = int(StatusByte.ESB)
_MAV = int(StatusByte.MAV)


async def check_info(open_link: LinkOpener, *, options: KitOptions | None = None) -> Stats:
    """``info`` describes the link; ``srq`` exists exactly when ``capabilities.srq``."""
    async with Session(open_link, "check_info", options or KitOptions()) as s:
        async with s.step("info"):
            info = s.link.info
            assert isinstance(info, TransportInfo), repr(info)
            assert isinstance(info.resource, str) and info.resource, repr(info.resource)
            assert isinstance(info.kind, str) and info.kind, repr(info.kind)
            assert isinstance(info.capabilities, Capabilities), repr(info.capabilities)
            assert s.link.info is info or s.link.info == info, "info changed"
        async with s.step("srq channel matches capabilities.srq"):
            has = s.link.srq is not None
            assert has == info.capabilities.srq, (
                f"srq is {s.link.srq!r} but capabilities.srq is {info.capabilities.srq}"
            )
        return s.stats


async def check_status(open_link: LinkOpener, *, options: KitOptions | None = None) -> Stats:
    """Service-request fan-out to every subscriber (where the link has SRQ), the status
    byte, trigger and device clear as the capabilities say; unsupported ones raise
    ``UnsupportedOperation``."""
    async with Session(open_link, "check_status", options or KitOptions()) as s:
        caps = s.link.info.capabilities
        srq = s.link.srq
        if caps.srq and srq is not None:
            async with s.step("a service request reaches two subscribers"):
                async with srq.subscribe(buffer=8) as first, srq.subscribe(buffer=8) as second:
                    await s.link.send_message(
                        [b"*CLS;*ESE 1;*SRE 32;*OPC\n"], deadline=s.deadline()
                    )
                    for stream in (first, second):
                        event = await stream.receive()
                        assert int(event.status) & (_RQS | _ESB) == _RQS | _ESB, event
                await s.link.send_message([b"*SRE 0;*ESE 0;*CLS\n"], deadline=s.deadline())
                await s.expect_in_step("a service request")
        if caps.read_stb:
            async with s.step("read_stb: MAV while an answer waits, not after"):
                tag = s.tag()
                await s.link.send_message([b"ECHO? %d\n" % tag], deadline=s.deadline())
                stb = await s.link.read_stb(deadline=s.deadline())
                assert isinstance(stb, int) and 0 <= stb <= 255, repr(stb)
                assert stb & _MAV, f"status byte {stb:#04x} without MAV while an answer waits"
                answer = await s.link.receive_message(max_size=MAX_SIZE, deadline=s.deadline())
                assert strip(answer) == b"%d" % tag, answer[:40]
                stb = await s.link.read_stb(deadline=s.deadline())
                assert not stb & _MAV, f"status byte {stb:#04x}: MAV with nothing to read"
        else:
            async with s.step("read_stb unsupported"):
                await _unsupported(s.link.read_stb(deadline=s.deadline()))
        if caps.trigger:
            async with s.step("trigger"):
                await s.link.trigger(deadline=s.deadline())
                await s.expect_in_step("a trigger")
        else:
            async with s.step("trigger unsupported"):
                await _unsupported(s.link.trigger(deadline=s.deadline()))
        async with s.step("clear drops an unread answer"):
            tag = s.tag()
            await s.link.send_message([b"ECHO? %d\n" % tag], deadline=s.deadline())
            try:
                await s.link.clear(deadline=s.deadline())
            except UnsupportedOperation:
                assert not caps.device_clear, "clear unsupported but capabilities.device_clear"
                answer = await s.link.receive_message(max_size=MAX_SIZE, deadline=s.deadline())
                assert strip(answer) == b"%d" % tag, answer[:40]
            await s.expect_in_step("a device clear")
        return s.stats


async def _unsupported(call: object) -> None:
    try:
        await call  # type: ignore[misc]
    except UnsupportedOperation:
        return
    raise AssertionError("no UnsupportedOperation")
