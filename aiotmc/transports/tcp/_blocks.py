"""IEEE 488.2 block responses over a raw socket, straight into the caller's buffer (one job).

:class:`BlockReading` adds :meth:`receive_block`: the header is parsed where the first
read landed (at most :data:`_BLOCK_FIRST_READ` bytes, copied once into the target), then
the rest of the payload is read with exact-size ``recv_into`` calls straight into the
target, waking once per megabyte rather than per segment batch on a long rest
(:func:`aiotmc._wake_threshold.wake_threshold`); then the terminator. An indefinite
``#0`` block is framed by the terminator. A layer of the transport for the reason given
in :mod:`._core`. Finding the header (:func:`~aiotmc.protocol.ieee4882.find_block_header`)
and where a payload goes (:mod:`.._block_into`) are shared with the other byte streams.
"""

from __future__ import annotations

import math
import socket
from typing import Final

from anyio.lowlevel import cancel_shielded_checkpoint

from ..._exceptions import ConnectionLostError, LocalProtocolError, RemoteProtocolError
from ..._fastpath import schedule_point_due
from ..._wake_threshold import wake_threshold
from ...protocol.ieee4882 import decode_block, find_block_header
from .._block_into import TRAILER_LIMIT, block_target, buffer_too_small, deliver_block
from ._reconnect import Reconnecting

__all__ = ["BlockReading"]

#: The first read of a block response: the header and the start of the payload, which is
#: then copied once more; the rest of the payload goes straight into the target.
_BLOCK_FIRST_READ: Final = 16 * 1024


class BlockReading(Reconnecting):
    """A raw-socket link that reads block responses into the caller's buffer."""

    async def receive_block(
        self, into: memoryview | None = None, *, max_size: int, deadline: float = math.inf
    ) -> memoryview:
        """Receive a block response; the payload is read straight into ``into``."""
        sock = self._claim() or await self._begin(deadline)
        try:
            payload = await self._receive_block(sock, into, max_size, deadline)
        except (RemoteProtocolError, LocalProtocolError):
            # Normally raised once the whole message was consumed: in step. If the framing
            # itself broke (the decoder is in an error state, or mid-message), the end of
            # the message cannot be found: replace the connection before the next exchange.
            if not self._decoder.at_message_start:
                self._stale = True
            raise
        except BaseException:
            self._stale = True
            raise
        finally:
            self._busy = False
        if schedule_point_due():  # a small block already buffered never waited
            await cancel_shielded_checkpoint()
        return payload

    async def _receive_block(
        self, sock: socket.socket, into: memoryview | None, max_size: int, deadline: float
    ) -> memoryview:
        decoder = self._decoder
        if not decoder.pending and decoder.at_message_start:
            started = await self._receive_block_start(sock, into, max_size, deadline)
            if started is not None:
                return started
        # 1. Skip leading whitespace and parse "#<n><len>" from what is buffered. The view
        # of the decoder's buffer is released before the decoder changes: a live view would
        # make it copy the whole buffer instead of growing or trimming it in place.
        while True:
            with decoder.buffered as buffered:
                try:
                    found = find_block_header(buffered, max_size=max_size)
                except RemoteProtocolError:
                    self._stale = True  # unknown length: cannot find the message's end
                    raise
            if found is None:  # not a block: consume it and complain
                head = await self._skip_message(sock, max_size, deadline)
                raise RemoteProtocolError(f"expected an IEEE 488.2 block, got {head!r}")
            start, header = found
            if header is not None:
                break
            await self._fill(sock, deadline)
        if header.payload_length is None:  # indefinite "#0...<NL>": framed by the terminator
            # max_size bounds the payload; the message also holds "#0" and the terminator
            message = await self._receive_message(sock, max_size + TRAILER_LIMIT, deadline)
            payload = decode_block(message, terminator=self._terminator, max_size=max_size)
            return deliver_block(payload, into)
        size = header.payload_length
        decoder.consume(start + header.header_length)
        target, too_small = block_target(into, size)
        # 2. The part already buffered, then exact-size reads straight into the target.
        have = min(decoder.pending, size)
        target[:have] = decoder.buffered[:have]
        decoder.consume(have)
        return await self._receive_block_rest(sock, target, have, too_small, deadline)

    async def _receive_block_start(
        self, sock: socket.socket, into: memoryview | None, max_size: int, deadline: float
    ) -> memoryview | None:
        """The common start of a block response, with nothing buffered: one read of at
        most :data:`_BLOCK_FIRST_READ` bytes, the header parsed where it landed, and the
        payload bytes that came with it copied once into the target (the rest of the
        payload then goes straight from the socket to the target).

        ``None``: what arrived is not a whole definite-length header; it is then in the
        decoder and the general path takes over.
        """
        first = self._chunk[:_BLOCK_FIRST_READ]
        n = await self._recv_some(sock, first, deadline)
        got = first[:n]
        try:
            found = find_block_header(got, max_size=max_size)
        except RemoteProtocolError:
            self._stale = True  # unknown length: cannot find the message's end
            raise
        header = None if found is None else found[1]
        if found is None or header is None or header.payload_length is None:
            self._decoder.receive_data(got)
            return None
        size = header.payload_length
        begin = found[0] + header.header_length
        target, too_small = block_target(into, size)
        have = min(n - begin, size)
        target[:have] = got[begin : begin + have]
        if begin + have < n:  # the terminator (or more) came along
            self._decoder.receive_data(got[begin + have :])
        return await self._receive_block_rest(sock, target, have, too_small, deadline)

    async def _receive_block_rest(
        self,
        sock: socket.socket,
        target: memoryview,
        have: int,
        too_small: int | None,
        deadline: float,
    ) -> memoryview:
        """Exact-size reads straight into ``target`` from ``have`` on, then the rest of the
        message (normally just the terminator). ``too_small``: the length of the caller's
        buffer that could not hold the block (``target`` is then a scratch buffer): raise
        once the message is consumed."""
        size = len(target)
        pos = have
        progress = self.block_progress
        if progress is not None:
            progress(pos, size)
        try:
            while pos < size:
                try:  # what is there already, without the receiver's layers
                    n = sock.recv_into(target[pos:])
                except BlockingIOError:
                    # a long rest: wake once per megabyte, not per segment batch
                    self._lowat = wake_threshold(sock, size - pos, self._lowat)
                    n = await self._recv_into(sock, target[pos:], deadline, False)
                except OSError as exc:
                    raise self._receive_failed(exc) from exc
                if n == 0:
                    raise ConnectionLostError(
                        f"connection closed after {pos} of {size} block bytes",
                        resource=self._info.resource,
                    )
                pos += n
                if progress is not None:
                    progress(pos, size)
        finally:
            if self._lowat != 1:
                self._lowat = wake_threshold(sock, 0, self._lowat)
        if not await self._terminator_alone(sock, deadline):
            rest = await self._skip_message(sock, TRAILER_LIMIT, deadline)
            if rest.strip():
                raise RemoteProtocolError(f"unexpected bytes after the block: {rest!r}")
        if too_small is not None:
            raise buffer_too_small(size, too_small)
        return target

    async def _terminator_alone(self, sock: socket.socket, deadline: float) -> bool:
        """After a block's payload, with nothing buffered: read what follows; True when it
        is exactly the terminator (the common end), else it goes to the decoder."""
        if self._decoder.pending:
            return False
        chunk = self._chunk
        try:
            n = sock.recv_into(chunk)
        except BlockingIOError:
            n = await self._recv_into(sock, chunk, deadline, False)
        except OSError as exc:
            raise self._receive_failed(exc) from exc
        if n == 0:
            raise self._closed_by_peer()
        if chunk[:n] == self._terminator:
            return True
        self._decoder.receive_data(chunk[:n])
        return False
