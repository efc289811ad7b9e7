"""A simulated IEEE 488.2 / SCPI instrument: sans-IO, stdlib only, time injected.

:class:`SimDevice` models the message exchange and status reporting of IEEE 488.2:

* an input queue of program messages, executed unit by unit (compound ``A;B``, relative
  headers after ``;``, ``:`` back to the root, common commands anywhere);
* an output queue of response messages (all responses of one program message joined
  with ``;`` plus ``\\n``), readable ``latency`` seconds after the message arrived;
* the status byte (EAV, MAV, ESB, MSS/RQS from ``*SRE``), the event status register
  (``*ESE``, ``*ESR?``), ``*OPC``/``*OPC?``/``*WAI`` over pending *operations*, and an
  error queue (``SYSTem:ERRor?``, 20 entries, -350 on overflow);
* -410 Query INTERRUPTED when a program message starts while a response is unread.

Nothing here blocks or sleeps. A driver (server, USB emulator, test) calls
:meth:`~SimDevice.write` / :meth:`~SimDevice.read`, asks :meth:`~SimDevice.next_deadline`
when to come back and calls :meth:`~SimDevice.poll` then.

Fault hooks for tests: ``latency`` (``float('inf')``: the response never comes),
:meth:`~SimDevice.delay_next_responses`, :meth:`~SimDevice.add_raw_query` (arbitrary
bytes, e.g. a malformed block header or no terminator), :meth:`~SimDevice.push_error`.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import ClassVar, Final

from .._types import BytesLike, EventStatus, StatusByte
from .arguments import Call
from .common import CommonCommands
from .errors import (
    MISSING_PARAMETER,
    PARAMETER_NOT_ALLOWED,
    QUERY_INTERRUPTED,
    QUEUE_OVERFLOW,
    UNDEFINED_HEADER,
    ScpiError,
)
from .messages import Operation, OutputMessage, PendingMessage, parse_cached
from .patterns import CommandTable, Handler
from .program import MAX_DATA_ELEMENTS, ProgramUnit
from .responses import Later, Raw, Response, render, test_pattern

__all__ = ["ERROR_QUEUE_SIZE", "Operation", "SimDevice", "test_pattern"]

_log = logging.getLogger("aiotmc.sim")

ERROR_QUEUE_SIZE: Final = 20

_EAV: Final = int(StatusByte.EAV)
_MAV: Final = int(StatusByte.MAV)
_ESB: Final = int(StatusByte.ESB)
_RQS: Final = int(StatusByte.RQS)
_OPC: Final = int(EventStatus.OPC)
_MAX_STEPS: Final = 1000  # bound on operation-completion / execution rounds per call


_Spec = tuple[str, int | tuple[int, int | None], str]


def _collect_specs(cls: type) -> list[_Spec]:
    """Decorated handlers of ``cls`` and its bases, most derived class first."""
    specs: list[_Spec] = []
    seen: set[tuple[str, str]] = set()
    for klass in cls.__mro__:
        for name, value in vars(klass).items():
            for pattern, args in getattr(value, "__scpi__", ()):
                if (pattern, name) not in seen:
                    seen.add((pattern, name))
                    specs.append((pattern, args, name))
    return specs


class SimDevice(CommonCommands):
    """A simulated SCPI instrument with the IEEE 488.2 status model.

    Subclasses add commands with :func:`~aiotmc.sim.commands.command`-decorated methods
    ``(self, call: Call) -> Response`` and restore their settings in :meth:`reset`
    (called by ``__init__`` and ``*RST``; call ``super().reset()``).

    ``clock`` is the time source (``time.monotonic`` by default; tests pass a fake).
    """

    _command_specs: ClassVar[list[_Spec]] = []

    #: Most message units, parameters, strings and blocks in one program message; more
    #: give -223 Too much data and nothing of the message runs (bounds the work per
    #: message: parsing runs Python code once per element).
    max_data_elements: int = MAX_DATA_ELEMENTS

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls._command_specs = _collect_specs(cls)

    def __init__(
        self,
        *,
        identity: str = "aiotmc,SIM-DEVICE,0000,0.1",
        latency: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.identity = identity
        #: Seconds between a program message with queries arriving and its response
        #: becoming readable; ``float('inf')``: never. Applies to messages written later.
        self.latency = latency
        self.clock = clock
        self._table = CommandTable()
        for pattern, args, name in self._command_specs:
            self._table.add(pattern, getattr(self, name), args=args)
        self._esr = 0
        self._ese = 0
        self._sre = 0
        self._errors: deque[tuple[int, str]] = deque()
        self._input: deque[PendingMessage] = deque()
        self._current: PendingMessage | None = None
        self._output: deque[OutputMessage] = deque()
        self._operations: list[Operation] = []
        self._opc_armed = False
        self._listeners: list[Callable[[int], object]] = []
        self._deadline_listeners: list[Callable[[], object]] = []
        self._reported_deadline: float | None = None
        self._mss = False
        self._rqs = False
        self._delays: deque[float] = deque()
        self.reset()

    # -- the message exchange ---------------------------------------------------------------

    def write(self, message: BytesLike) -> None:
        """Receive one program message (several if it holds top-level newlines).

        A trailing ``\\n``/``\\r\\n`` is ignored; ``;``, ``,`` and newlines inside blocks
        and quoted strings are data. A message that cannot be framed (bad block, open
        string) is dropped whole with -161/-151/-102.
        """
        now = self.clock()
        try:
            programs = parse_cached(message, self.max_data_elements)
        except ScpiError as exc:
            self._input.append(PendingMessage([], now, self.latency, exc))
        else:
            for units in programs:
                self._input.append(PendingMessage(units, now, self.latency))
        self._process(now)
        self._finish()

    def read(self) -> bytes | None:
        """The next response message if it is readable now, else ``None``."""
        parts = self.read_parts()
        if parts is None:
            return None
        if len(parts) == 1 and isinstance(parts[0], bytes):
            return parts[0]
        return b"".join(parts)

    def read_parts(self) -> list[BytesLike] | None:
        """Like :meth:`read`, as the parts of the message (block payloads not copied)."""
        self._process(self.clock())
        if self._output and self._output[0].ready:
            parts: list[BytesLike] | None = self._output.popleft().parts
        else:
            parts = None
        self._finish()
        return parts

    @property
    def busy(self) -> bool:
        """True while written messages are executing, waiting, or have an unread response."""
        return self._current is not None or bool(self._input) or bool(self._output)

    def next_deadline(self) -> float | None:
        """Clock time when :meth:`poll` has work (a response or operation due), else None.

        Never ``inf``: a response delayed forever is not a deadline.
        """
        if not self._operations and not self._output:
            return None
        times = [op.due for op in self._operations if op.due is not None]
        times += [out.ready_at for out in self._output if not out.ready]
        finite = [t for t in times if not math.isinf(t)]
        return min(finite) if finite else None

    def poll(self) -> None:
        """Do the time-based work due at ``clock()``: complete operations (OPC, SRQ),
        resume sequential commands, make delayed responses readable."""
        self._process(self.clock())
        self._finish()

    def trigger(self) -> None:
        """Bus trigger (USB488 TRIGGER, GPIB GET); ``*TRG`` does the same."""
        now = self.clock()
        self._process(now)
        self.handle_trigger()
        self._process(self.clock())
        self._finish()

    def device_clear(self) -> None:
        """IEEE 488.2 device clear: drop input and output queues and any pending response.

        Status registers, error queue, settings and running operations are kept; ``*OPC``
        and ``*OPC?`` stop waiting.
        """
        self._input.clear()
        self._current = None
        self._output.clear()
        self._opc_armed = False
        self._finish()

    # -- status -----------------------------------------------------------------------------

    @property
    def status_byte(self) -> int:
        """The status byte as ``*STB?`` reports it (bit 6 is MSS)."""
        self.poll()
        return self._stb()

    def serial_poll(self) -> int:
        """The status byte as a serial poll / READ_STATUS_BYTE reports it.

        Bit 6 is RQS: set on the rising edge of the service request, cleared by this call.
        """
        self.poll()
        value = (self._stb() & ~_RQS) | (_RQS if self._rqs else 0)
        self._rqs = False
        return value

    @property
    def requesting_service(self) -> bool:
        """True while the device asserts SRQ: a service request that no serial poll has
        read yet (IEEE 488.2: the request is released when the controller polls it)."""
        self.poll()
        return self._rqs

    @property
    def event_status(self) -> int:
        """The standard event status register (not cleared by reading it here)."""
        return self._esr

    def add_srq_listener(self, callback: Callable[[int], object]) -> Callable[[], None]:
        """Call ``callback(status_byte)`` on each rising edge of the service request.

        Returns a function that unsubscribes. Exceptions from the callback are logged
        and otherwise ignored.
        """
        self._listeners.append(callback)

        def remove() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return remove

    def add_deadline_listener(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call ``callback()`` when :meth:`next_deadline` moves earlier.

        For drivers that sleep until the next deadline: a response or operation scheduled
        while they sleep (by a write from elsewhere, a trigger) should wake them. Checked
        at the end of :meth:`write`, :meth:`read`, :meth:`poll`, :meth:`trigger`...; work
        that completes within the call is never reported. The callback must not call back
        into the device. Returns a function that unsubscribes.
        """
        self._deadline_listeners.append(callback)

        def remove() -> None:
            if callback in self._deadline_listeners:
                self._deadline_listeners.remove(callback)

        return remove

    def push_error(self, code: int, message: str) -> None:
        """Queue an error as the instrument would (also sets the matching ESR bit)."""
        self._record(code, message)
        self._finish()

    @property
    def errors(self) -> list[tuple[int, str]]:
        """The error queue, oldest first, without consuming it."""
        return list(self._errors)

    # -- fault hooks and extension ----------------------------------------------------------

    def delay_next_responses(self, delay: float, count: int = 1) -> None:
        """Fault hook: the next ``count`` response messages become readable ``delay``
        seconds after their program message arrived (``float('inf')``: never)."""
        self._delays.extend([delay] * count)

    def add_command(
        self, pattern: str, handler: Handler, *, args: int | tuple[int, int | None] = 0
    ) -> None:
        """Register ``handler(call) -> Response`` for ``pattern`` on this device only.

        It takes precedence over the class's commands.
        """
        self._table.add(pattern, handler, args=args, first=True)

    def add_raw_query(
        self,
        pattern: str,
        respond: Callable[[tuple[bytes, ...]], bytes],
        *,
        args: int | tuple[int, int | None] = (0, None),
    ) -> None:
        """Fault hook: ``respond(args)`` returns the exact bytes sent for this command.

        No terminator is added: ``device.add_raw_query("GARBage?", lambda a:
        b"#9999999999\\n")`` sends a malformed block header; leave the ``\\n`` off for a
        response that never terminates.
        """

        def handler(call: Call) -> Response:
            return Raw(respond(tuple(arg.tobytes() for arg in call.args)))

        self.add_command(pattern, handler, args=args)

    @property
    def commands(self) -> list[str]:
        """The header patterns this device understands, in match order."""
        return self._table.patterns()

    def reset(self) -> None:
        """Restore power-on settings (``*RST``): cancels pending operations."""
        self.cancel_operations()
        self._opc_armed = False

    # -- operations -------------------------------------------------------------------------

    def start_operation(
        self,
        duration: float,
        *,
        wait_for_trigger: bool = False,
        on_complete: Callable[[], None] | None = None,
    ) -> Operation:
        """Begin an overlapped operation that completes ``duration`` s from now (or from
        the next trigger); ``on_complete`` runs then. ``*OPC`` and ``*WAI`` wait for it."""
        due = None if wait_for_trigger else self.clock() + duration
        op = Operation(duration, due, on_complete)
        self._operations.append(op)
        return op

    def cancel_operations(self) -> None:
        """Abandon every pending operation (their ``on_complete`` does not run)."""
        self._operations.clear()

    @property
    def operations_pending(self) -> bool:
        """True while an operation has not completed."""
        return bool(self._operations)

    # -- internals --------------------------------------------------------------------------

    def _process(self, now: float) -> None:
        try:
            self._step(now)
        except BaseException:
            # A handler or callback raised (a bug, not a SCPI error): drop the message it
            # belonged to so the device stays usable, and let the caller see the error.
            self._current = None
            raise

    def _step(self, now: float) -> None:
        for _ in range(_MAX_STEPS):
            busy = bool(self._operations) or self._opc_armed
            completed = busy and self._complete_operations(now)
            executed = (bool(self._input) or self._current is not None) and self._run(now)
            if not (self._operations or self._opc_armed or self._input or self._current):
                break
            if not completed and not executed:
                break
            now = max(now, self.clock())  # operations started just now may be due already
        for out in self._output:
            if not out.ready and out.ready_at <= now:
                out.ready = True

    def _complete_operations(self, now: float) -> bool:
        due = [op for op in self._operations if op.due is not None and op.due <= now]
        due.sort(key=lambda op: op.due or 0.0)
        for op in due:
            if op in self._operations:
                self._operations.remove(op)
                op.done = True
                if op.on_complete is not None:
                    op.on_complete()
        if self._opc_armed and not self._operations:
            self._opc_armed = False
            self._esr |= _OPC
            return True
        return bool(due)

    def handle_trigger(self) -> None:
        """Start the operations waiting for a trigger (``*TRG``, :meth:`trigger`).

        Safe to call from a command handler; override to add behaviour.
        """
        now = self.clock()
        for op in self._operations:
            if op.due is None:
                op.due = now + op.duration

    def _run(self, now: float) -> bool:
        """Execute queued messages until done or blocked; True if anything happened."""
        progressed = False
        while True:
            msg = self._current
            if msg is None:
                if not self._input:
                    return progressed
                msg = self._input.popleft()
                progressed = True
                if self._output:
                    self._output.clear()
                    self._record(QUERY_INTERRUPTED, "Query INTERRUPTED")
                if msg.error is not None:
                    self._record(msg.error.code, msg.error.message)
                    continue
                self._current = msg
            if msg.waiting is not None:
                if self._operations:
                    return progressed
                fn, msg.waiting = msg.waiting, None
                progressed = True
                self._respond(msg, self._call_later(fn))
            while msg.index < len(msg.units):
                unit = msg.units[msg.index]
                msg.index += 1
                progressed = True
                result = self._execute(msg, unit)
                if isinstance(result, Later):
                    if self._operations:
                        msg.waiting = result.fn
                        return progressed
                    result = self._call_later(result.fn)
                self._respond(msg, result)
            self._current = None
            if msg.parts:
                latency = self._delays.popleft() if self._delays else msg.latency
                ready_at = msg.arrival + latency
                if ready_at < now:
                    ready_at = now
                if not msg.last_raw:
                    msg.parts.append(b"\n")
                self._output.append(OutputMessage(msg.parts, ready_at, ready_at <= now))

    def _execute(self, msg: PendingMessage, unit: ProgramUnit) -> Response:
        try:
            tokens = unit.tokens
            if unit.common:
                resolved = self._table.resolve((), tokens, unit.query)
            else:
                path = () if unit.absolute else msg.path
                resolved = self._table.resolve(path, tokens, unit.query)
                if resolved is not None:
                    msg.path = resolved.tokens[:-1]
            if resolved is None:
                raise ScpiError(UNDEFINED_HEADER, unit.header[:40])
            entry = resolved.entry
            count = len(unit.args)
            if count < entry.min_args:
                raise ScpiError(MISSING_PARAMETER, unit.header[:40])
            if entry.max_args is not None and count > entry.max_args:
                raise ScpiError(PARAMETER_NOT_ALLOWED, unit.header[:40])
            return entry.handler(Call(unit.header, unit.args, resolved.suffixes))
        except ScpiError as exc:
            self._record(exc.code, exc.message)
            return None

    def _call_later(self, fn: Callable[[], Response]) -> Response:
        try:
            result = fn()
        except ScpiError as exc:
            self._record(exc.code, exc.message)
            return None
        if isinstance(result, Later):
            raise TypeError("a Later callback must not return another Later")
        return result

    def _respond(self, msg: PendingMessage, result: Response) -> None:
        if result is None:
            return
        if msg.count:
            msg.parts.append(b";")
        msg.parts.extend(render(result))
        msg.count += 1
        msg.last_raw = isinstance(result, Raw)

    def _record(self, code: int, message: str) -> None:
        if len(self._errors) >= ERROR_QUEUE_SIZE:
            self._errors[-1] = (QUEUE_OVERFLOW, "Queue overflow")
        else:
            self._errors.append((code, message))
        if -199 <= code <= -100:
            self._esr |= int(EventStatus.CME)
        elif -299 <= code <= -200:
            self._esr |= int(EventStatus.EXE)
        elif -499 <= code <= -400:
            self._esr |= int(EventStatus.QYE)
        elif code != 0:
            self._esr |= int(EventStatus.DDE)

    def _stb(self) -> int:
        stb = self.summary_bits() & 0x8F
        if self._errors:
            stb |= _EAV
        if self._output and self._output[0].ready:
            stb |= _MAV
        if self._esr & self._ese:
            stb |= _ESB
        if stb & self._sre & ~_RQS:
            stb |= _RQS
        return stb

    def summary_bits(self) -> int:
        """Device-specific status byte bits (0-3, 7: QUES, OPER...); override to set them."""
        return 0

    def _finish(self) -> None:
        """End of a public call: service request edge, and deadline news for drivers."""
        self._update_srq()
        if not self._deadline_listeners:
            return
        deadline = self.next_deadline()
        last, self._reported_deadline = self._reported_deadline, deadline
        if deadline is None or (last is not None and deadline >= last):
            return  # drivers wake at the old deadline anyway, then ask again
        for callback in list(self._deadline_listeners):
            try:
                callback()
            except Exception:
                _log.exception("deadline listener %r failed", callback)

    def _update_srq(self) -> None:
        stb = self._stb()
        if not stb & _RQS:
            self._mss = False
            return
        if self._mss:
            return
        self._mss = True
        self._rqs = True
        for callback in list(self._listeners):
            try:
                callback(stb)
            except Exception:
                _log.exception("SRQ listener %r failed", callback)


SimDevice._command_specs = _collect_specs(SimDevice)
