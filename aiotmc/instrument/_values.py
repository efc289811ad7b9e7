"""Blocks and values: IEEE 488.2 blocks, ASCII and binary value lists (PyVISA's
``query_ascii_values``/``query_binary_values`` vocabulary)."""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable, Iterable
from typing import Any, overload

import anyio

from .._exceptions import RemoteProtocolError
from .._fastpath import running_loop
from .._log import io_log, show
from .._types import DEFAULT, Default
from .._values import (
    HEADER_FORMATS,
    binary_letter,
    numpy_dtype,
    parse_hp_header,
    resolve_converter,
    resolve_format,
)
from ..protocol.ieee4882 import block_header
from ..protocol.scpi import format_values, pack_binary, parse_values, unpack_binary
from ..transports.base import BytesLike
from ._base import DEBUG, InstrumentBase, T

__all__ = ["ValueMethods"]


class ValueMethods(InstrumentBase):
    """Block and value methods of :class:`~aiotmc.Instrument`."""

    @overload
    async def query_block(
        self,
        command: str,
        *,
        into: None = None,
        max_size: int | None = None,
        delay: float | None = None,
        timeout: float | Default | None = DEFAULT,
    ) -> bytearray: ...

    @overload
    async def query_block(
        self,
        command: str,
        *,
        into: bytearray | memoryview,
        max_size: int | None = None,
        delay: float | None = None,
        timeout: float | Default | None = DEFAULT,
    ) -> memoryview: ...

    async def query_block(
        self,
        command: str,
        *,
        into: bytearray | memoryview | None = None,
        max_size: int | None = None,
        delay: float | None = None,
        timeout: float | Default | None = DEFAULT,
    ) -> bytearray | memoryview:
        """Query and return the payload of the IEEE 488.2 block that answers it.

        Without ``into`` a new ``bytearray`` holds exactly the payload. With ``into`` (a
        writable buffer, e.g. reused between calls) the payload is read straight into it and
        a ``memoryview`` of the filled part is returned. ``delay``: as in :meth:`query`.
        """
        target = memoryview(into).cast("B") if into is not None else None
        loop = running_loop()
        deadline = self._deadline(timeout, loop)
        data = self._encode(command)
        trace = io_log.isEnabledFor(DEBUG)
        if trace:
            io_log.debug("%s write %s", self.resource, show(data))
        pause = self.query_delay if delay is None else delay
        locked = await self._acquire(loop)
        try:
            await self.transport.send_message((data,), deadline=deadline)
            if pause:
                await anyio.sleep(pause)
            view = await self.transport.receive_block(
                target, max_size=max_size or self.max_message_size, deadline=deadline
            )
        except Exception as exc:
            self._failed(f"query {command!r}", exc)
            raise
        finally:
            if locked:
                self._lock.release()
        if trace:
            io_log.debug("%s read block %s", self.resource, show(view))
        if target is None:
            buffer = view.obj
            if isinstance(buffer, bytearray) and len(buffer) == len(view):
                return buffer
            return bytearray(view)
        return view

    async def query_values(
        self,
        command: str,
        *,
        converter: Callable[[str], T] | str = float,  # type: ignore[assignment]
        separator: str = ",",
        container: type[Any] = list,
        delay: float | None = None,
        timeout: float | Default | None = DEFAULT,
    ) -> Any:
        """Query a list of ASCII values (``1.0,2.5,...``); PyVISA's ``query_ascii_values``.

        ``converter``: a callable per item or a PyVISA letter (``"f"``/``"e"``/``"g"``:
        float, ``"d"``: int, ``"x"``: hex, ``"o"``: octal, ``"b"``: binary, ``"s"``: str).
        A bad converter raises :class:`ValueError`/:class:`TypeError` before any I/O.
        """
        parse = resolve_converter(converter)
        text = await self.query(command, delay=delay, timeout=timeout)
        return _contain(parse_values(text, converter=parse, separator=separator), container)

    query_ascii_values = query_values

    async def read_ascii_values(
        self,
        *,
        converter: Callable[[str], Any] | str = float,
        separator: str = ",",
        container: type[Any] = list,
        timeout: float | Default | None = DEFAULT,
    ) -> Any:
        """Read a list of ASCII values (after a write); arguments as :meth:`query_values`."""
        parse = resolve_converter(converter)
        text = await self.read(timeout=timeout)
        return _contain(parse_values(text, converter=parse, separator=separator), container)

    async def write_ascii_values(
        self,
        command: str,
        values: Iterable[Any],
        *,
        converter: Callable[[Any], str] | str | None = None,
        separator: str = ",",
        timeout: float | Default | None = DEFAULT,
    ) -> None:
        """Send ``command`` followed by ``values`` as text (``"VOLT:LIST 1.5,2"``).

        ``converter``: ``None`` writes each number's shortest exact form (``INF``/``NAN``
        as SCPI keywords); a PyVISA format letter (``"f"``, ``"e"``, ``"d"``, ``"x"``...)
        or a callable returning text formats each value. PyVISA's default is ``"f"``.
        """
        fmt = None if converter is None else resolve_format(converter)
        if fmt is None:
            text = format_values(values, separator=separator)
        elif isinstance(fmt, str):
            text = format_values(values, separator=separator, fmt=fmt)
        else:
            text = separator.join(fmt(value) for value in values)
        await self.write(
            f"{command}{text}" if command.endswith(" ") else f"{command} {text}", timeout=timeout
        )

    async def read_bytes(
        self,
        count: int,
        *,
        break_on_termchar: bool = False,
        timeout: float | Default | None = DEFAULT,
    ) -> bytes:
        """Read exactly ``count`` bytes, across response messages; PyVISA's ``read_bytes``.

        With ``break_on_termchar=True`` the first message end stops the read early. A
        message that would run past ``count`` raises :class:`~aiotmc.RemoteProtocolError`
        (its rest is discarded): messages are the unit every bus delivers.
        """
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        loop = running_loop()
        deadline = self._deadline(timeout, loop)
        out = bytearray()
        locked = await self._acquire(loop)
        try:
            while len(out) < count:
                out += await self.transport.receive_message(
                    max_size=count - len(out), deadline=deadline
                )
                if break_on_termchar:
                    break
        except Exception as exc:
            self._failed("read_bytes", exc)
            raise
        finally:
            if locked:
                self._lock.release()
        if io_log.isEnabledFor(DEBUG):
            io_log.debug("%s read %s", self.resource, show(out))
        return bytes(out)

    async def query_binary_values(
        self,
        command: str,
        datatype: str | Any = "f",
        *,
        is_big_endian: bool = False,
        container: type[Any] = list,
        into: bytearray | memoryview | None = None,
        header_fmt: str = "ieee",
        expect_termination: bool = True,
        data_points: int | None = None,
        delay: float | None = None,
        timeout: float | Default | None = DEFAULT,
    ) -> Any:
        """Query a block and unpack it as ``datatype`` items.

        ``datatype``: a struct letter (``f``, ``h``...) or a numpy name (``"int16"``,
        ``"float32"``). ``container`` may be ``list``, ``tuple`` or ``numpy.ndarray``
        (zero-copy view when numpy is installed). ``header_fmt``: ``"ieee"`` (``#<n><len>``),
        ``"hp"`` (``#A`` + 2-byte length) or ``"empty"`` (raw data; ``data_points`` then
        says how many items to read, ``expect_termination`` whether a terminator follows).
        With ``data_points`` the answer must hold exactly that many items.
        """
        letter = self._check_values(datatype, header_fmt, data_points, into)
        if header_fmt != "ieee":
            async with self.lock():
                await self.write(command, timeout=timeout)
                pause = self.query_delay if delay is None else delay
                if pause:
                    await anyio.sleep(pause)
                payload: Any = await self._read_headed(
                    header_fmt, letter, is_big_endian, expect_termination, data_points, timeout
                )
        else:
            payload = await self.query_block(command, into=into, delay=delay, timeout=timeout)
        return _unpack(payload, letter, is_big_endian, container, data_points)

    async def read_binary_values(
        self,
        datatype: str | Any = "f",
        *,
        is_big_endian: bool = False,
        container: type[Any] = list,
        header_fmt: str = "ieee",
        expect_termination: bool = True,
        data_points: int | None = None,
        timeout: float | Default | None = DEFAULT,
    ) -> Any:
        """Read binary values (after a write); arguments as :meth:`query_binary_values`."""
        letter = self._check_values(datatype, header_fmt, data_points, None)
        if header_fmt == "ieee":
            loop = running_loop()
            deadline = self._deadline(timeout, loop)
            locked = await self._acquire(loop)
            try:
                payload: Any = await self.transport.receive_block(
                    None, max_size=self.max_message_size, deadline=deadline
                )
            except Exception as exc:
                self._failed("read_binary_values", exc)
                raise
            finally:
                if locked:
                    self._lock.release()
            if io_log.isEnabledFor(DEBUG):
                io_log.debug("%s read block %s", self.resource, show(payload))
        else:
            payload = await self._read_headed(
                header_fmt, letter, is_big_endian, expect_termination, data_points, timeout
            )
        return _unpack(payload, letter, is_big_endian, container, data_points)

    @staticmethod
    def _check_values(
        datatype: object, header_fmt: str, data_points: int | None, into: object
    ) -> str:
        """Validate binary-value arguments before any I/O; the struct letter."""
        letter = binary_letter(datatype)
        if header_fmt not in HEADER_FORMATS:
            raise ValueError(f"header_fmt must be one of {HEADER_FORMATS}, got {header_fmt!r}")
        if data_points is not None and data_points < 0:
            raise ValueError(f"data_points must be >= 0, got {data_points}")
        if into is not None and header_fmt != "ieee":
            raise ValueError("into= is only supported with header_fmt='ieee'")
        return letter

    async def _read_headed(
        self,
        header_fmt: str,
        letter: str,
        big_endian: bool,
        expect_termination: bool,
        data_points: int | None,
        timeout: float | Default | None,
    ) -> bytes:
        """The payload of an ``hp`` or ``empty`` block (read under the caller's lock)."""
        term = len(self._read_termination) if expect_termination else 0
        size = struct.calcsize(letter)
        if header_fmt == "empty" and data_points is not None:
            data = await self.read_bytes(data_points * size + term, timeout=timeout)
            return data[: len(data) - term]
        data = await self.read_raw(timeout=timeout)
        if header_fmt == "empty":
            return (
                data[: len(data) - term]
                if term and data.endswith(self._read_termination.encode(self.encoding))
                else data
            )
        length = parse_hp_header(data, big_endian=big_endian)
        total = 4 + length + term
        if total > self.max_message_size:
            raise RemoteProtocolError(f"HP block of {length} bytes exceeds max_message_size")
        if len(data) < total:  # a payload byte equal to the terminator ended a message
            data += await self.read_bytes(total - len(data), timeout=timeout)
        return data[4 : 4 + length]

    async def write_binary_values(
        self,
        command: str,
        values: Iterable[float | int] | Any,
        datatype: str | Any = "f",
        *,
        is_big_endian: bool = False,
        timeout: float | Default | None = DEFAULT,
    ) -> None:
        """Send ``command`` followed by ``values`` as a definite-length block.

        Header, payload and termination go out as separate buffers (no concatenation);
        numpy arrays are sent without copying when their byte order already matches.
        ``datatype``: a struct letter or a numpy name (``"int16"``).
        """
        letter = binary_letter(datatype)
        payload: BytesLike
        if hasattr(values, "__array__") and hasattr(values, "dtype"):
            numpy = sys.modules["numpy"]
            dtype = numpy.dtype(numpy_dtype(letter)).newbyteorder(">" if is_big_endian else "<")
            array = numpy.ascontiguousarray(values, dtype=dtype)
            payload = memoryview(array).cast("B")
        else:
            payload = pack_binary(list(values), letter, big_endian=is_big_endian)
        parts: tuple[BytesLike, ...] = (
            command.encode(self.encoding),
            block_header(len(payload)),
            payload,
            self.write_termination.encode(self.encoding),
        )
        loop = running_loop()
        deadline = self._deadline(timeout, loop)
        if io_log.isEnabledFor(DEBUG):
            io_log.debug("%s write %s + block %s", self.resource, show(parts[0]), show(payload))
        locked = await self._acquire(loop)
        try:
            await self.transport.send_message(parts, deadline=deadline)
        except Exception as exc:
            self._failed(f"write {command!r} + block", exc)
            raise
        finally:
            if locked:
                self._lock.release()


def _contain(values: list[Any], container: type[Any]) -> Any:
    """``values`` in ``container`` (``list`` as is)."""
    if container is list:
        return values
    if container.__module__ == "numpy" and container.__name__ == "ndarray":
        return sys.modules["numpy"].asarray(values)
    return container(values)


def _unpack(
    payload: Any, letter: str, big_endian: bool, container: type[Any], data_points: int | None
) -> Any:
    """Unpack a block payload into ``container``; checks ``data_points`` if given."""
    size = struct.calcsize(letter)
    if data_points is not None and len(payload) != data_points * size:
        raise RemoteProtocolError(
            f"expected {data_points} {letter!r} items ({data_points * size} bytes), "
            f"got {len(payload)} bytes"
        )
    if container.__module__ == "numpy" and container.__name__ == "ndarray":
        numpy = sys.modules["numpy"]
        dtype = numpy.dtype(numpy_dtype(letter)).newbyteorder(">" if big_endian else "<")
        if len(payload) % size:
            raise RemoteProtocolError(
                f"block of {len(payload)} bytes is not a whole number of {size}-byte items"
            )
        return numpy.frombuffer(payload, dtype=dtype)
    values = unpack_binary(payload, letter, big_endian=big_endian)
    return values if container is list else container(values)
