"""The aiotmc exception tree, rooted at :class:`AiotmcError`.

Rules (from h11, httpcore and python-can):

* Exceptions also inherit the matching stdlib base (``TimeoutError``, ``ValueError``,
  ``PermissionError``...) so that generic handlers keep working.
* Translation from library errors (``OSError``, ``usb1.USBError``...) happens only at
  transport boundaries, with :func:`map_exceptions`, which never touches cancellation
  (it catches ``Exception`` only).
* Programmer errors reuse anyio's ``ClosedResourceError`` and ``BusyResourceError``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

__all__ = [
    "AiotmcError",
    "AiotmcTimeout",
    "AuthenticationError",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionLostError",
    "InstrumentError",
    "InvalidResourceName",
    "LocalProtocolError",
    "LockLostError",
    "PermissionDeniedError",
    "ProtocolError",
    "ReadTimeout",
    "RemoteProtocolError",
    "ResourceBusyError",
    "ResourceNotFoundError",
    "SessionBrokenError",
    "TransportError",
    "UnsupportedOperation",
    "UsbStallError",
    "UsbTransferError",
    "WriteTimeout",
    "map_exceptions",
]


class AiotmcError(Exception):
    """Root of every error aiotmc raises on purpose."""


class InvalidResourceName(AiotmcError, ValueError):
    """A resource name does not follow the grammar; the message points at the bad part."""

    def __init__(self, message: str, *, resource: str = "", position: int | None = None):
        self.resource = resource
        self.position = position
        if resource and position is not None:
            message = f"{message}\n  {resource}\n  {' ' * position}^"
        super().__init__(message)


class ResourceNotFoundError(AiotmcError, LookupError):
    """No instrument matches the resource name (USB device absent, unknown sim name...)."""


class UnsupportedOperation(AiotmcError, NotImplementedError):
    """The transport or instrument cannot do this (SRQ on a raw socket, HiSLIP not built yet)."""


class TransportError(AiotmcError):
    """The link to the instrument failed. ``resource`` names the instrument when known."""

    def __init__(self, message: str = "", *, resource: str | None = None):
        self.resource = resource
        if resource and message:
            message = f"{resource}: {message}"
        super().__init__(message)


class ConnectError(TransportError):
    """Opening the link failed (connection refused, host unknown, device absent)."""


class ResourceBusyError(ConnectError):
    """The USB interface is claimed by someone else (LIBUSB_ERROR_BUSY)."""


class AuthenticationError(ConnectError, PermissionError):
    """The secure session could not be set up: TLS handshake or certificate check failed,
    credentials refused, or one side requires encryption the other cannot give."""


class PermissionDeniedError(ConnectError, PermissionError):
    """The operating system refused access (e.g. missing udev rule for a USB device)."""


class ConnectionLostError(TransportError):
    """The peer went away: TCP EOF or reset, USB device unplugged."""


class LockLostError(ConnectionLostError):
    """The session was replaced (reconnect) and the cross-client locks it held are gone;
    the operation that found out was not performed. Lock again, then go on."""


class UsbTransferError(TransportError):
    """A USB transfer failed; ``status`` is the libusb transfer status or error code."""

    def __init__(
        self,
        message: str = "",
        *,
        resource: str | None = None,
        status: int | None = None,
        endpoint: int | None = None,
    ):
        self.status = status
        self.endpoint = endpoint
        super().__init__(message, resource=resource)


class UsbStallError(UsbTransferError):
    """An endpoint answered with STALL (halt)."""


class SessionBrokenError(TransportError):
    """The link is out of step and recovery failed: close and reopen the instrument."""


class ProtocolError(AiotmcError):
    """Framing or protocol rules were broken. Not raised directly: see the two subclasses."""


class LocalProtocolError(ProtocolError):
    """We were asked to do something the protocol forbids (message too large, bad state)."""


class RemoteProtocolError(ProtocolError):
    """The instrument broke the protocol (bad block header, bTag mismatch, oversized reply)."""


class AiotmcTimeout(AiotmcError, TimeoutError):
    """An aiotmc ``timeout=`` expired."""


class ConnectTimeout(AiotmcTimeout, ConnectError):
    """Opening the link took longer than the connect timeout."""


class WriteTimeout(AiotmcTimeout):
    """Sending a message took longer than the timeout."""


class ReadTimeout(AiotmcTimeout):
    """The instrument did not answer within the timeout."""


class InstrumentError(AiotmcError):
    """The instrument reported an error (``SYST:ERR?`` entry or ESR error bits)."""

    def __init__(self, code: int, message: str, *, resource: str | None = None):
        self.code = code
        self.message = message
        self.resource = resource
        where = f"{resource}: " if resource else ""
        super().__init__(f"{where}{code}, {message!r}")


@contextmanager
def map_exceptions(
    mapping: Mapping[type[Exception], type[AiotmcError]], *, resource: str | None = None
) -> Iterator[None]:
    """Re-raise library exceptions as aiotmc ones; anything not in ``mapping`` passes.

    Cancellation and ``KeyboardInterrupt`` are ``BaseException`` and pass untouched.
    """
    try:
        yield
    except AiotmcError:
        raise
    except Exception as exc:
        for source, target in mapping.items():
            if isinstance(exc, source):
                if issubclass(target, TransportError):
                    raise target(str(exc) or type(exc).__name__, resource=resource) from exc
                raise target(str(exc) or type(exc).__name__) from exc
        raise


class GatewayError(AiotmcError):
    """Something in ``aiotmc gateway`` failed (configuration, storage, remote control)."""


class ConfigError(GatewayError, ValueError):
    """A gateway configuration is invalid: the message names the file, line and field.

    Parts of the gateway validate their own section and raise it with ``key``, the path of
    the offending field inside the document (e.g. ``("rules", 2, "threshold")``); the
    loader fills in ``path`` and ``line`` with :meth:`located`.
    """

    def __init__(
        self,
        message: str,
        *,
        key: tuple[str | int, ...] = (),
        path: str | None = None,
        line: int | None = None,
    ):
        self.reason = message
        self.key = key
        self.path = path
        self.line = line
        where = path or "<config>"
        if line is not None:
            where = f"{where}:{line}"
        field = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in key).lstrip(".")
        super().__init__(f"{where}: {field + ': ' if field else ''}{message}")

    def located(self, path: str, line: int | None) -> ConfigError:
        """The same error, placed in ``path`` at ``line``."""
        return ConfigError(self.reason, key=self.key, path=path, line=line)


class SinkUnavailableError(GatewayError):
    """A storage sink cannot take readings right now; the gateway spools and retries."""
