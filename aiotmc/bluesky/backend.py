"""``ScpiSignalBackend``: an ophyd-async signal backend reading and writing one SCPI value.

Reading sends the signal's query (``MEAS:VOLT:DC?``) and parses the answer into the
datatype (:mod:`aiotmc.bluesky.convert`); putting fills the write template
(``VOLT {value}``), sends it with ``*OPC?`` appended (so the put completes once the
instrument has executed it) and then drains the error queue (an error there fails the
put with :class:`~aiotmc.InstrumentError`); a monitored signal is then read back, so that a
staged signal's cache follows every put. Monitoring (``set_callback``) re-reads the
value on service requests where the instrument has them, else polls
(:class:`~aiotmc.bluesky.Monitor`).

asyncio only, like ophyd-async: every call comes from the event loop that connected the
signal (bluesky's RunEngine loop).
"""

from __future__ import annotations

import logging
import string
import time
from collections.abc import Callable
from typing import Any, Generic, Literal

import anyio
import numpy as np
from bluesky.protocols import Reading
from event_model import DataKey
from ophyd_async.core import (
    NotConnectedError,
    SignalBackend,
    SignalDatatypeT,
    SignalMetadata,
    get_enum_cls,
    make_datakey,
)

from .._background import BackgroundTask, spawn
from .._exceptions import LocalProtocolError, RemoteProtocolError, UnsupportedOperation
from ..instrument import Instrument
from ..protocol.scpi import join_compound
from .convert import ScpiConverter, make_converter
from .link import ScpiLink
from .monitor import DEFAULT_MONITOR, Monitor

__all__ = ["ScpiSignalBackend", "check_template"]

log = logging.getLogger("aiotmc.bluesky")

_UNSET: Any = object()


def check_template(template: str) -> str:
    """``template`` if it names ``{value}`` (with an optional format spec) and no other
    field; ``ValueError`` otherwise."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ValueError(f"bad write template {template!r}: {exc}") from None
    if not fields or any(f != "value" for f in fields):
        raise ValueError(f"a write template names {{value}} and nothing else: {template!r}")
    return template


class ScpiSignalBackend(SignalBackend[SignalDatatypeT], Generic[SignalDatatypeT]):
    """Reads, writes and monitors one SCPI value of an instrument.

    Args:
        datatype: ``float``, ``int``, ``bool``, ``str``, an ophyd-async enum,
            ``Array1D[numpy.<dtype>]`` or ``Sequence[str]`` (``TypeError`` otherwise).
        link: the :class:`ScpiLink` (shared by a device's signals) or an open
            :class:`~aiotmc.Instrument`.
        read: the query (``"VOLT?"``); ``None`` for a write-only signal.
        write: the write template (``"VOLT {value}"``, ``"VOLT {value:.3f}"``); ``None``
            for a read-only signal.
        units, precision: for the data key (``describe()``).
        monitor: how ``set_callback`` learns of new values (default :class:`Monitor`).
        binary, big_endian: an ``Array1D`` read as an IEEE 488.2 binary block.
        wait: append ``*OPC?`` to a put so that it completes once executed.
        check_errors: drain the error queue after a put and raise the first error.

    ``TypeError`` for an unsupported datatype, ``ValueError`` for a bad write template or
    for neither ``read`` nor ``write``: when the signal is made, before any I/O.
    """

    def __init__(
        self,
        datatype: type[SignalDatatypeT],
        link: ScpiLink | Instrument,
        *,
        read: str | None,
        write: str | None = None,
        units: str | None = None,
        precision: int | None = None,
        monitor: Monitor | None = None,
        binary: bool = False,
        big_endian: bool = False,
        wait: bool = True,
        check_errors: bool = True,
    ) -> None:
        if read is None and write is None:
            raise ValueError("a SCPI signal needs a query, a write template or both")
        self.converter: ScpiConverter = make_converter(
            datatype,  # type: ignore[arg-type]
            binary=binary,
            big_endian=big_endian,
        )
        self.link = link if isinstance(link, ScpiLink) else ScpiLink.of(link)
        self.query = read
        self.write_template = None if write is None else check_template(write)
        self.monitor = monitor or DEFAULT_MONITOR
        self.wait = wait
        self.check_errors = check_errors
        self.metadata: SignalMetadata = {}
        if units is not None:
            self.metadata["units"] = units
        if precision is not None:
            self.metadata["precision"] = precision
        enum_cls = get_enum_cls(datatype)
        if enum_cls is not None:
            self.metadata["choices"] = [str(m.value) for m in enum_cls]
        self._last: Reading[SignalDatatypeT] | None = None
        self._setpoint: Any = _UNSET
        self._callback: Callable[[Reading[SignalDatatypeT]], None] | None = None
        self._task: BackgroundTask | None = None
        #: The last error a monitor met (logged too); ``None`` if none.
        self.monitor_error: Exception | None = None
        super().__init__(datatype)

    # -- SignalBackend ------------------------------------------------------------------------

    def source(self, name: str, read: bool) -> str:
        """``scpi://<resource>/<query>`` (``read``), ``scpi://<resource>/<template>``."""
        command = self.query if (read and self.query) or not self.write_template else None
        return f"scpi://{self.link.resource}/{command or self.write_template}"

    async def connect(self, timeout: float) -> None:
        """Open the link's instrument unless it is open (no I/O to the instrument)."""
        await self.link.open(timeout=timeout)

    async def put(self, value: SignalDatatypeT | None) -> None:
        """Write ``value`` with the template (``*OPC?`` appended unless ``wait=False``),
        then drain the error queue (``check_errors``); a monitored signal then reads the
        value back and hands it to its monitor.

        Raises ``UnsupportedOperation`` for a read-only signal, ``LocalProtocolError`` for
        a value the datatype cannot write (before any I/O), ``InstrumentError`` for an
        error the instrument queued, ``RemoteProtocolError`` if ``*OPC?`` answers
        something else than 1, and what the exchanges raise.
        """
        if self.write_template is None:
            raise UnsupportedOperation(f"{self.source('', False)} is read-only")
        if value is None:
            raise UnsupportedOperation(f"{self.source('', False)}: no default value to put")
        encoded = self.converter.encode(value)
        try:
            command = self.write_template.format(value=encoded)
        except (ValueError, TypeError) as exc:
            raise LocalProtocolError(
                f"{value!r} does not fit the write template {self.write_template!r}: {exc}"
            ) from None
        inst = self.link.instrument
        async with inst.lock():
            if self.wait:
                answer = await inst.query(join_compound([command, "*OPC?"]))
                if answer.strip() != "1":
                    raise RemoteProtocolError(
                        f"{inst.resource}: {command!r};*OPC? answered {answer[:80]!r}, not 1"
                    )
            else:
                await inst.write(command)
            if self.check_errors:
                await inst.check_errors()
        self._setpoint = value
        if self._callback is not None and self.query is not None:
            await self._deliver(_UNSET)  # monitors (a staged signal's cache) see the new value

    async def get_datakey(self, source: str) -> DataKey:
        """dtype, shape, source, units/precision/choices; an array's shape is that of its
        last value (read now if it was never read)."""
        value = self.converter.placeholder
        if value is None:  # an array or list: its shape is the current value's
            value = (self._last or await self.get_reading())["value"]
        return make_datakey(self.datatype or float, value, source, self.metadata)

    async def get_reading(self) -> Reading[SignalDatatypeT]:
        """Query the value now; the timestamp is when the answer arrived."""
        if self.query is None:
            raise UnsupportedOperation(f"{self.source('', False)} is write-only")
        value = await self.converter.read(self.link.instrument, self.query)
        self._last = Reading(value=value, timestamp=time.time(), alarm_severity=0)
        return self._last

    async def get_value(self) -> SignalDatatypeT:
        """Query the value now."""
        return (await self.get_reading())["value"]

    async def get_setpoint(self) -> SignalDatatypeT:
        """The last value put, else the value read now."""
        if self._setpoint is not _UNSET:
            return self._setpoint  # type: ignore[no-any-return]
        return await self.get_value()

    def set_callback(self, callback: Callable[[Reading[SignalDatatypeT]], None] | None) -> None:
        """Start (``callback``) or stop (``None``) monitoring; see :class:`Monitor`."""
        if callback is None:
            self._callback = None
            task, self._task = self._task, None
            if task is not None:
                task.cancel()
                self.link.untrack(task)
            return
        if self._callback is not None:
            raise RuntimeError("Cannot set a callback when one is already set")
        if self.query is None:
            raise UnsupportedOperation(f"{self.source('', False)} is write-only")
        self.link.instrument  # noqa: B018 - NotConnectedError now, not a silent monitor
        self._callback = callback
        self._task = spawn(self._run_monitor, name=f"aiotmc monitor {self.source('', True)}")
        self.link.track(self._task)

    # -- monitoring ---------------------------------------------------------------------------

    @property
    def monitor_mode(self) -> Literal["srq", "poll"]:
        """``"srq"`` when monitoring uses the instrument's service requests, else ``"poll"``
        (needs the open instrument)."""
        inst = self.link.instrument
        native = inst.transport.info.capabilities.srq and inst.transport.srq is not None
        has_srq = native or inst.srq_poller is not None
        return "srq" if self.monitor.srq and has_srq else "poll"

    async def _run_monitor(self) -> None:
        try:
            if self.monitor_mode == "srq":
                await self._monitor_srq()
            else:
                await self._monitor_poll()
        except (NotConnectedError, anyio.ClosedResourceError) as exc:
            log.debug("%s: monitor ends: %r", self.source("", True), exc)

    async def _monitor_srq(self) -> None:
        monitor = self.monitor
        async with self.link.instrument.service_requests() as events:  # before the first read
            await self._deliver(_UNSET, shield=True)
            async for event in events:
                if not monitor.wants(event):
                    continue
                if monitor.event_status:
                    try:
                        with anyio.CancelScope(shield=True):  # stopping waits for the answer
                            esr = await self.link.event_status(event)
                    except Exception as exc:
                        self._failed(exc)
                        continue
                    if not esr & monitor.event_status:
                        continue
                await self._deliver(_UNSET, shield=True)

    async def _monitor_poll(self) -> None:
        last: Any = _UNSET
        while True:
            last = await self._deliver(last, shield=True)
            await anyio.sleep(self.monitor.poll_period)

    async def _deliver(self, unless_equal: Any, *, shield: bool = False) -> Any:
        """Read and hand the reading to the callback (unless its value is ``unless_equal``);
        a failed read is logged and kept in :attr:`monitor_error`. Returns the value.

        ``shield``: a monitor being stopped finishes the exchange in progress (bounded by
        the instrument's timeout) instead of cancelling it half-way."""
        try:
            with anyio.CancelScope(shield=shield):
                reading = await self.get_reading()
        except (NotConnectedError, anyio.ClosedResourceError):
            raise  # closed under us: the monitor ends
        except Exception as exc:
            self._failed(exc)
            return unless_equal
        value = reading["value"]
        if unless_equal is not _UNSET and _same(value, unless_equal):
            return value
        callback = self._callback
        if callback is not None:
            try:
                callback(reading)
            except Exception:
                log.exception("%s: monitor callback failed", self.source("", True))
        return value

    def _failed(self, exc: Exception) -> None:
        self.monitor_error = exc
        log.warning("%s: monitor read failed: %r", self.source("", True), exc)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(a, b))
    return bool(a == b) and type(a) is type(b)
