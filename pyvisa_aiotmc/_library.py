"""``pyvisa.ResourceManager("@aiotmc")``: PyVISA's library calls served by aiotmc.

Each session is an :class:`aiotmc.sync.SyncInstrument` (the blocking API: one event-loop
thread per process), so every transport aiotmc opens is available to PyVISA scripts,
with aiotmc's recovery, and its service requests arrive as VISA events.
Errors come back as VISA status codes, the aiotmc exception chained as the cause.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable
from typing import Any, NoReturn, TypeVar

from pyvisa import constants, errors, highlevel, rname
from pyvisa.constants import EventType, StatusCode
from pyvisa.typing import VISAEventContext, VISARMSession, VISASession
from pyvisa.util import DebugInfo, LibraryPath

import aiotmc
import aiotmc.sync
from aiotmc._version import __version__
from aiotmc.sync._portal import portal_for

from ._names import resource_info
from ._session import MAX_MESSAGE_SIZE, Session, ms_to_seconds
from ._status import status_for

__all__ = ["AiotmcVisaLibrary"]

T = TypeVar("T")
AnySession = VISASession | VISARMSession | VISAEventContext

#: aiotmc's connect timeout for viOpen (seconds); VISA's open timeout is a lock wait.
CONNECT_TIMEOUT = 10.0
#: VISA's default VI_ATTR_TMO_VALUE (ms), which PyVISA assumes of a fresh session.
DEFAULT_TIMEOUT_MS = 2000
#: ``chunk_size`` of the resources this backend opens (PyVISA's default is 20 KiB): a read
#: hands out a message already received whole, so bigger pieces only save calls.
CHUNK_SIZE = 1 << 20


class _RMSession:
    """The default resource manager's session."""


class _EventContext:
    """An event delivered by ``wait_on_event`` or to a handler (closed with viClose)."""

    def __init__(self, event_type: EventType) -> None:
        self.event_type = event_type


class AiotmcVisaLibrary(highlevel.VisaLibraryBase):
    """PyVISA backend on aiotmc: ``pyvisa.ResourceManager("@aiotmc")``."""

    #: Largest message read in one piece by sessions opened from now on (bytes).
    max_message_size: int = MAX_MESSAGE_SIZE

    @staticmethod
    def get_library_paths() -> Iterable[LibraryPath]:
        """No shared library: the backend is this package."""
        return (LibraryPath("aiotmc"),)

    @staticmethod
    def get_debug_info() -> DebugInfo:
        """What ``pyvisa-info`` prints for this backend."""
        return {"Version": __version__, "Transports": "see `aiotmc info`"}

    def _init(self) -> None:
        self.sessions: dict[int, Session | _RMSession | _EventContext] = {}
        self._ids = itertools.count(0x0A10_0001)
        self._ids_lock = threading.Lock()

    # -- plumbing -------------------------------------------------------------------------

    def _register(self, obj: Session | _RMSession | _EventContext) -> int:
        with self._ids_lock:
            handle = next(self._ids)
            self.sessions[handle] = obj
        return handle

    def _fail(self, session: AnySession | None, exc: BaseException) -> NoReturn:
        """Raise the VISA error for ``exc`` (recorded as the session's last status)."""
        try:
            self.handle_return_value(session, status_for(exc))
        except errors.VisaIOError as visa_error:
            raise visa_error from exc
        raise AssertionError("unreachable: status_for returns error codes")  # pragma: no cover

    def _session(self, session: AnySession) -> Session:
        obj = self.sessions.get(session)
        if not isinstance(obj, Session):
            self.handle_return_value(session, StatusCode.error_invalid_object)
            raise AssertionError("unreachable")  # pragma: no cover
        return obj

    def _do(self, session: VISASession, func: Callable[[Session], T]) -> T:
        """``func(the session)``, an aiotmc error turned into the VISA one."""
        sess = self._session(session)
        try:
            return func(sess)
        except (aiotmc.AiotmcError, TimeoutError, ValueError, TypeError) as exc:
            self._fail(session, exc)
        except Exception as exc:  # anyio.ClosedResourceError and the like
            self._fail(session, exc)

    def _ok(self, session: AnySession) -> StatusCode:
        return self.handle_return_value(session, StatusCode.success)

    # -- resource manager -----------------------------------------------------------------

    def open_default_resource_manager(self) -> tuple[VISARMSession, StatusCode]:
        """viOpenDefaultRM."""
        handle = VISARMSession(self._register(_RMSession()))
        return handle, self._ok(handle)

    def parse_resource_extended(
        self, session: VISARMSession, resource_name: str
    ) -> tuple[highlevel.ResourceInfo, StatusCode]:
        """viParseRsrcEx, with aiotmc's grammar (``SIM::``, ``PRLGX-...`` too)."""
        try:
            return resource_info(resource_name), StatusCode.success
        except aiotmc.InvalidResourceName as exc:
            self._fail(session, exc)

    def list_resources(self, session: VISARMSession, query: str = "?*::INSTR") -> tuple[str, ...]:
        """viFindRsrc: what :func:`aiotmc.list_resources` finds, filtered by ``query``."""
        found = portal_for().run(aiotmc.list_resources)
        return rname.filter(found, query)

    def open(
        self,
        session: VISARMSession,
        resource_name: str,
        access_mode: constants.AccessModes = constants.AccessModes.no_lock,
        open_timeout: int | None = constants.VI_TMO_IMMEDIATE,
    ) -> tuple[VISASession, StatusCode]:
        """viOpen: open the resource through aiotmc (``exclusive_lock``: lock it too)."""
        try:
            info = resource_info(resource_name)
            instrument = aiotmc.sync.open(
                resource_name,
                timeout=ms_to_seconds(DEFAULT_TIMEOUT_MS),
                connect_timeout=CONNECT_TIMEOUT,
                max_message_size=self.max_message_size,
            )
        except Exception as exc:
            self._fail(session, exc)
        sess = Session(instrument, info, DEFAULT_TIMEOUT_MS)
        if access_mode & constants.AccessModes.exclusive_lock:
            try:
                instrument.lock_excl(ms_to_seconds(open_timeout) or 0.0)
            except Exception as exc:
                instrument.close()
                self._fail(session, exc)
        handle = VISASession(self._register(sess))
        return handle, self._ok(handle)

    def open_resource(
        self,
        resource_name: str,
        access_mode: constants.AccessModes,
        open_timeout: int,
        resource_pyclass: type[Any],
        **kwargs: Any,
    ) -> Any:
        """What ``ResourceManager.open_resource`` does, with a larger default
        ``chunk_size`` (:data:`CHUNK_SIZE`; a ``chunk_size=`` argument still wins)."""
        resource = resource_pyclass(self.resource_manager, resource_name)
        for key in kwargs:
            try:
                getattr(resource, key)
            except AttributeError:
                raise ValueError(
                    f"{key!r} is not a valid attribute for type {type(resource).__name__}"
                ) from None
            except errors.InvalidSession:
                pass
        resource.open(access_mode, open_timeout)
        if hasattr(resource, "chunk_size"):
            resource.chunk_size = CHUNK_SIZE
        for key, value in kwargs.items():
            setattr(resource, key, value)
        return resource

    def close(self, session: AnySession) -> StatusCode:
        """viClose: a resource (its link closes), an event context or the manager."""
        obj = self.sessions.pop(session, None)
        if obj is None:
            return self.handle_return_value(session, StatusCode.error_invalid_object)
        if isinstance(obj, Session):
            try:
                obj.close()
            except Exception as exc:
                self._fail(session, exc)
        elif isinstance(obj, _RMSession):
            for handle, other in list(self.sessions.items()):
                if isinstance(other, Session):
                    self.close(VISASession(handle))
        return self._ok(session)

    # -- I/O ------------------------------------------------------------------------------

    def read(self, session: VISASession, count: int) -> tuple[bytes, StatusCode]:
        """viRead: up to ``count`` bytes of the current message."""
        data, status = self._do(session, lambda s: s.read(count, self.max_message_size))
        return data, self.handle_return_value(session, status)

    def write(self, session: VISASession, data: bytes) -> tuple[int, StatusCode]:
        """viWrite."""
        written, status = self._do(session, lambda s: s.write(data))
        return written, self.handle_return_value(session, status)

    def buffer_read(self, session: VISASession, count: int) -> tuple[bytes, StatusCode]:
        """viBufRead: there is no separate formatted-I/O buffer."""
        return self.read(session, count)

    def buffer_write(self, session: VISASession, data: bytes) -> tuple[int, StatusCode]:
        """viBufWrite: there is no separate formatted-I/O buffer."""
        return self.write(session, data)

    def flush(self, session: VISASession, mask: constants.BufferOperation) -> StatusCode:
        """viFlush: discarding the read buffer drops the unread rest of a message."""
        discard = (
            constants.BufferOperation.discard_read_buffer
            | constants.BufferOperation.discard_read_buffer_no_io
            | constants.BufferOperation.discard_receive_buffer
            | constants.BufferOperation.discard_receive_buffer2
        )
        self._do(session, lambda s: s.discard_input() if mask & discard else None)
        return self._ok(session)

    def read_stb(self, session: VISASession) -> tuple[int, StatusCode]:
        """viReadSTB: serial poll where the bus has one, ``*STB?`` otherwise."""
        stb = self._do(session, lambda s: s.call(s.instrument.read_stb))
        return int(stb), self._ok(session)

    def assert_trigger(
        self, session: VISASession, protocol: constants.TriggerProtocol
    ) -> StatusCode:
        """viAssertTrigger: bus trigger where the bus has one, ``*TRG`` otherwise."""
        self._do(session, lambda s: s.call(s.instrument.trigger))
        return self._ok(session)

    def clear(self, session: VISASession) -> StatusCode:
        """viClear: device clear."""
        self._do(session, Session.clear)
        return self._ok(session)

    def gpib_control_ren(
        self, session: VISASession, mode: constants.RENLineOperation
    ) -> StatusCode:
        """viGpibControlREN (USB488, GPIB through Prologix, VXI-11, HiSLIP)."""
        self._do(session, lambda s: s.call(s.instrument.control_ren, int(mode)))
        return self._ok(session)

    def lock(
        self,
        session: VISASession,
        lock_type: constants.Lock,
        timeout: int,
        requested_key: str | None = None,
    ) -> tuple[str, StatusCode]:
        """viLock: exclusive locks where the instrument has them (VXI-11, HiSLIP)."""
        if lock_type != constants.Lock.exclusive:
            self._fail(session, aiotmc.UnsupportedOperation("only exclusive locks are supported"))
        seconds = ms_to_seconds(timeout) or 0.0
        self._do(session, lambda s: s.instrument.lock_excl(seconds))
        return "", self._ok(session)

    def unlock(self, session: VISASession) -> StatusCode:
        """viUnlock."""
        self._do(session, lambda s: s.call(s.instrument.unlock))
        return self._ok(session)

    # -- attributes -----------------------------------------------------------------------

    def get_attribute(
        self,
        session: AnySession,
        attribute: constants.ResourceAttribute | constants.EventAttribute,
    ) -> tuple[Any, StatusCode]:
        """viGetAttribute."""
        obj = self.sessions.get(session)
        if isinstance(obj, _EventContext):
            if attribute == constants.EventAttribute.event_type:
                return obj.event_type, self._ok(session)
        elif isinstance(obj, Session):
            try:
                return obj.get_attribute(attribute), self._ok(session)
            except KeyError:
                pass
        elif obj is None:
            return None, self.handle_return_value(session, StatusCode.error_invalid_object)
        return None, self.handle_return_value(session, StatusCode.error_nonsupported_attribute)

    def set_attribute(
        self, session: VISASession, attribute: constants.ResourceAttribute, attribute_state: Any
    ) -> StatusCode:
        """viSetAttribute."""
        sess = self._session(session)
        try:
            sess.set_attribute(attribute, attribute_state)
        except KeyError:
            return self.handle_return_value(session, StatusCode.error_nonsupported_attribute)
        except (ValueError, TypeError) as exc:
            try:
                self.handle_return_value(session, StatusCode.error_nonsupported_attribute_state)
            except errors.VisaIOError as visa_error:
                raise visa_error from exc
        return self._ok(session)

    # -- events ---------------------------------------------------------------------------

    def _check_event(self, session: VISASession, event_type: EventType) -> None:
        if event_type != EventType.service_request:
            self.handle_return_value(session, StatusCode.error_invalid_event)

    def enable_event(
        self,
        session: VISASession,
        event_type: EventType,
        mechanism: constants.EventMechanism,
        context: None = None,
    ) -> StatusCode:
        """viEnableEvent: service requests, queued and/or to the installed handlers."""
        self._check_event(session, event_type)
        self._do(session, lambda s: s.events.enable(mechanism, self._dispatcher(session)))
        return self._ok(session)

    def _dispatcher(self, session: VISASession) -> Callable[[EventType], None]:
        def dispatch(event_type: EventType) -> None:
            sess = self.sessions.get(session)
            if not isinstance(sess, Session):
                return
            for handler, user_handle in list(sess.events.handlers):
                context = VISAEventContext(self._register(_EventContext(event_type)))
                try:
                    handler(session, event_type, context, user_handle)
                finally:
                    self.sessions.pop(context, None)

        return dispatch

    def disable_event(
        self, session: VISASession, event_type: EventType, mechanism: constants.EventMechanism
    ) -> StatusCode:
        """viDisableEvent."""
        if event_type in (EventType.service_request, EventType.all_enabled):
            self._do(session, lambda s: s.events.disable(mechanism))
            return self._ok(session)
        return self.handle_return_value(session, StatusCode.error_invalid_event)

    def discard_events(
        self, session: VISASession, event_type: EventType, mechanism: constants.EventMechanism
    ) -> StatusCode:
        """viDiscardEvents: drop the queued service requests."""
        if event_type in (EventType.service_request, EventType.all_enabled):
            if mechanism & constants.EventMechanism.queue:
                self._do(session, lambda s: s.events.discard())
            return self._ok(session)
        return self.handle_return_value(session, StatusCode.error_invalid_event)

    def wait_on_event(
        self, session: VISASession, in_event_type: EventType, timeout: int
    ) -> tuple[EventType, VISAEventContext, StatusCode]:
        """viWaitOnEvent: the next queued service request within ``timeout`` ms."""
        if in_event_type not in (EventType.service_request, EventType.all_enabled):
            self.handle_return_value(session, StatusCode.error_invalid_event)
        sess = self._session(session)
        if not sess.events.queue_enabled:
            self.handle_return_value(session, StatusCode.error_not_enabled)
        if not sess.events.wait(ms_to_seconds(timeout)):
            self.handle_return_value(session, StatusCode.error_timeout)
        context = VISAEventContext(self._register(_EventContext(EventType.service_request)))
        return EventType.service_request, context, self._ok(session)

    def install_handler(
        self, session: VISASession, event_type: EventType, handler: Any, user_handle: Any
    ) -> tuple[Any, Any, Any, StatusCode]:
        """viInstallHandler: ``handler(session, event_type, context, user_handle)`` is
        called from the session's event thread once the handler mechanism is enabled."""
        self._check_event(session, event_type)
        self._session(session).events.handlers.append((handler, user_handle))
        return handler, user_handle, handler, self._ok(session)

    def uninstall_handler(
        self, session: VISASession, event_type: EventType, handler: Any, user_handle: Any = None
    ) -> StatusCode:
        """viUninstallHandler."""
        handlers = self._session(session).events.handlers
        for index, (installed, handle) in enumerate(handlers):
            if installed == handler and handle == user_handle:
                del handlers[index]
                return self._ok(session)
        return self.handle_return_value(session, StatusCode.error_invalid_handler_reference)
