"""VISA-style resource names: one frozen dataclass per kind, parsed and printed.

Grammar (keywords are case-insensitive, ``board`` defaults to 0)::

    TCPIP[board]::host::port::SOCKET                 -> TcpipSocket   (raw SCPI socket)
    TCPIP[board]::host[::lan_device][::INSTR]        -> TcpipInstr    (VXI-11, device inst0)
    TCPIP[board]::host::hislipN[,port][::INSTR]      -> TcpipHislip   (HiSLIP, port 4880)
    USB[board]::vid::pid[::serial[::iface]][::INSTR] -> UsbInstr
    SIM::model[::name][::INSTR]                      -> SimInstr      (aiotmc extension)
    ASRL<n>[::INSTR] | ASRL<path>[::INSTR]           -> AsrlInstr     (serial port)
    PRLGX-TCPIP[board]::host::port::pad[::sad][::INSTR]
                                                     -> PrologixInstr (aiotmc extension:
                                                        GPIB through a Prologix/AR488 adapter)
    PRLGX-ASRL[board]::port::pad[::sad][::INSTR]     -> PrologixAsrlInstr (the same over serial)
    GPIB[board]::pad[::sad][::INSTR]                 -> GpibInstr     (GPIB board ``board``: a
                                                        local card or an attached adapter)

* Hosts are names, IPv4 addresses or IPv6 addresses, bare (``TCPIP::fe80::1::INSTR``)
  or in brackets (``TCPIP::[fe80::1]::INSTR``). The canonical form always brackets IPv6.
* Vendor and product IDs are hexadecimal with ``0x`` or decimal; canonical ``0x%04X``.
* aiotmc extension: the USB serial number may be left out (``USB::0x0957::0x1796::INSTR``)
  to mean "the only instrument with these IDs"; opening it fails if several are attached.
* Serial ports: ``ASRL1::INSTR`` is port 1 (``COM1``; ``/dev/ttyS0`` on Linux) and
  ``ASRL/dev/ttyUSB0::INSTR`` names the device path (as pyvisa-py accepts it).
* aiotmc extension: ``PRLGX-TCPIP0::host::1234::12::INSTR`` is GPIB primary address 12
  behind the Prologix-compatible adapter at ``host:1234`` (one string instead of
  pyvisa-py's ``PRLGX-TCPIP0::host::1234::INTFC`` followed by ``GPIB0::12::INSTR``).
* ``GPIB0::12::INSTR`` is GPIB primary address 12 on board 0; which controller board 0 is
  (a linux-gpib card, a Prologix adapter, a VXI-11.2 gateway) is the GPIB transport's
  board table (docs/gpib.md).
* aiotmc extension: ``SIM::<model>[::<name>]`` names a simulated instrument (``dmm``,
  ``psu``, ``wavegen``, ``scope``...); ``name`` defaults to the model and tells several
  simulated instruments of one model apart.

``str(resource)`` gives the canonical form, and ``parse_resource(str(r)) == r``. Errors raise
:class:`~aiotmc.InvalidResourceName` whose message draws a caret under the bad part.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import sys
from dataclasses import dataclass
from typing import ClassVar, NoReturn

from ._exceptions import InvalidResourceName

__all__ = [
    "DEFAULT_HISLIP_PORT",
    "DEFAULT_LAN_DEVICE",
    "AsrlInstr",
    "GpibInstr",
    "NatsInstr",
    "PrologixAsrlInstr",
    "PrologixInstr",
    "ResourceName",
    "SimInstr",
    "TcpipHislip",
    "TcpipInstr",
    "TcpipSocket",
    "UsbInstr",
    "parse_resource",
]

DEFAULT_HISLIP_PORT = 4880
DEFAULT_LAN_DEVICE = "inst0"

_HOSTNAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?")
_HISLIP = re.compile(r"(hislip\d+)(?:,(.*))?", re.IGNORECASE)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_PREFIX = re.compile(r"([A-Za-z]+)(\d*)")
_CLASSES = ("SOCKET", "INSTR", "RAW")
_PRLGX_TCPIP = re.compile(r"PRLGX-TCPIP(\d*)::", re.IGNORECASE)
_PRLGX_ASRL = re.compile(r"PRLGX-ASRL(\d*)::", re.IGNORECASE)
_GPIB = re.compile(r"GPIB(\d*)::", re.IGNORECASE)
_UNSUPPORTED = ("GPIB", "VXI", "GPIB-VXI", "PXI", "VICP", "FIREWIRE")


# --------------------------------------------------------------------------- value checks
# Each returns an error message, or None when the value is fine: shared by __post_init__
# (construction in code) and the parser (which adds the caret).


def _check_port(port: int) -> str | None:
    if not 1 <= port <= 65535:
        return f"port must be 1..65535, got {port}"
    return None


def _check_host(host: str) -> str | None:
    if not host:
        return "missing host"
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"invalid IPv6 address {host!r}"
        return None
    if not _HOSTNAME.fullmatch(host):
        return f"invalid host {host!r}, expected a host name or an IP address"
    return None


def _check_board(board: int) -> str | None:
    return f"board number must be >= 0, got {board}" if board < 0 else None


def _check_name(what: str, value: str) -> str | None:
    # A ':' at either end would merge with the '::' beside it: the name would not parse back.
    if (
        not value
        or "::" in value
        or value.startswith(":")
        or value.endswith(":")
        or any(c.isspace() or not c.isprintable() for c in value)
    ):
        return f"invalid {what} {value!r}"
    return None


def _normalise_host(host: str) -> str:
    """Compress IPv6 addresses so that equal addresses compare equal."""
    return str(ipaddress.IPv6Address(host)) if ":" in host else host


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _raise_if(message: str | None) -> None:
    if message is not None:
        raise InvalidResourceName(message)


# --------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True, slots=True)
class ResourceName:
    """Base of every parsed resource name; ``str()`` is the canonical VISA form."""

    kind: ClassVar[str] = ""
    """Short stable identifier of the kind: ``tcpip-socket``, ``usb``, ``sim``..."""
    interface_type: ClassVar[str] = ""
    """The VISA interface type keyword: ``TCPIP``, ``USB`` or ``SIM``."""
    resource_class: ClassVar[str] = ""
    """The VISA resource class: ``SOCKET`` or ``INSTR``."""

    @classmethod
    def parse(cls, text: str) -> ResourceName:
        """Same as :func:`parse_resource`."""
        return parse_resource(text)

    def __str__(self) -> str:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError


@dataclass(frozen=True, slots=True, kw_only=True)
class TcpipSocket(ResourceName):
    """``TCPIP[board]::host::port::SOCKET``: SCPI over a raw TCP socket (often port 5025)."""

    kind: ClassVar[str] = "tcpip-socket"
    interface_type: ClassVar[str] = "TCPIP"
    resource_class: ClassVar[str] = "SOCKET"

    board: int = 0
    host: str
    port: int

    def __post_init__(self) -> None:
        _raise_if(_check_board(self.board) or _check_host(self.host) or _check_port(self.port))
        object.__setattr__(self, "host", _normalise_host(self.host))

    def __str__(self) -> str:
        return f"TCPIP{self.board}::{_format_host(self.host)}::{self.port}::SOCKET"


@dataclass(frozen=True, slots=True, kw_only=True)
class TcpipInstr(ResourceName):
    """``TCPIP[board]::host[,port][::lan_device]::INSTR``: VXI-11 (device name ``inst0`` by
    default). ``port`` (pyvisa-py's ``host,port`` form) skips the portmapper."""

    kind: ClassVar[str] = "tcpip-instr"
    interface_type: ClassVar[str] = "TCPIP"
    resource_class: ClassVar[str] = "INSTR"

    board: int = 0
    host: str
    lan_device_name: str = DEFAULT_LAN_DEVICE
    port: int | None = None  #: the VXI-11 core channel's port; None: ask the portmapper

    def __post_init__(self) -> None:
        problem = _check_board(self.board) or _check_host(self.host)
        problem = problem or (None if self.port is None else _check_port(self.port))
        problem = problem or _check_name("LAN device name", self.lan_device_name)
        if problem is None and _HISLIP.fullmatch(self.lan_device_name):
            problem = f"{self.lan_device_name!r} is a HiSLIP device: use TcpipHislip"
        if problem is None and (
            self.lan_device_name.isdigit() or self.lan_device_name.upper() in _CLASSES
        ):
            problem = f"invalid LAN device name {self.lan_device_name!r}"
        _raise_if(problem)
        object.__setattr__(self, "host", _normalise_host(self.host))

    def __str__(self) -> str:
        port = "" if self.port is None else f",{self.port}"
        host = _format_host(self.host)
        return f"TCPIP{self.board}::{host}{port}::{self.lan_device_name}::INSTR"


@dataclass(frozen=True, slots=True, kw_only=True)
class TcpipHislip(ResourceName):
    """``TCPIP[board]::host::hislipN[,port]::INSTR``: HiSLIP (port 4880 by default)."""

    kind: ClassVar[str] = "hislip"
    interface_type: ClassVar[str] = "TCPIP"
    resource_class: ClassVar[str] = "INSTR"

    board: int = 0
    host: str
    session_name: str = "hislip0"
    port: int = DEFAULT_HISLIP_PORT

    def __post_init__(self) -> None:
        problem = _check_board(self.board) or _check_host(self.host) or _check_port(self.port)
        if problem is None and not re.fullmatch(r"hislip\d+", self.session_name, re.IGNORECASE):
            problem = f"HiSLIP session name must look like 'hislip0', got {self.session_name!r}"
        _raise_if(problem)
        object.__setattr__(self, "host", _normalise_host(self.host))
        object.__setattr__(self, "session_name", self.session_name.lower())

    def __str__(self) -> str:
        port = "" if self.port == DEFAULT_HISLIP_PORT else f",{self.port}"
        return f"TCPIP{self.board}::{_format_host(self.host)}::{self.session_name}{port}::INSTR"


@dataclass(frozen=True, slots=True, kw_only=True)
class UsbInstr(ResourceName):
    """``USB[board]::vid::pid[::serial[::interface]]::INSTR``: USBTMC / USB488.

    ``serial=None`` (an aiotmc extension) matches the only attached device with these IDs.
    ``interface=None`` picks the first USBTMC interface of the device.
    """

    kind: ClassVar[str] = "usb"
    interface_type: ClassVar[str] = "USB"
    resource_class: ClassVar[str] = "INSTR"

    board: int = 0
    vid: int
    pid: int
    serial: str | None = None
    interface: int | None = None

    def __post_init__(self) -> None:
        problem = _check_board(self.board)
        for what, value in (("vendor ID", self.vid), ("product ID", self.pid)):
            if problem is None and not 0 <= value <= 0xFFFF:
                problem = f"{what} must be 0x0000..0xFFFF, got {value:#x}"
        if problem is None and self.serial is not None:
            problem = _check_name("serial number", self.serial)
            if problem is None and self.serial.upper() in ("INSTR", "RAW"):
                problem = f"serial number {self.serial!r} would read as a resource class"
        if problem is None and self.interface is not None:
            if not 0 <= self.interface <= 255:
                problem = f"USB interface number must be 0..255, got {self.interface}"
            elif self.serial is None:
                problem = "a USB interface number needs a serial number before it"
        _raise_if(problem)

    def __str__(self) -> str:
        parts = [f"USB{self.board}", f"0x{self.vid:04X}", f"0x{self.pid:04X}"]
        if self.serial is not None:
            parts.append(self.serial)
        if self.interface is not None:
            parts.append(str(self.interface))
        parts.append("INSTR")
        return "::".join(parts)


@dataclass(frozen=True, slots=True, kw_only=True)
class SimInstr(ResourceName):
    """``SIM::model[::name]`` (aiotmc extension): an in-process simulated instrument.

    ``model`` is stored in lower case; ``name`` defaults to the model.
    """

    kind: ClassVar[str] = "sim"
    interface_type: ClassVar[str] = "SIM"
    resource_class: ClassVar[str] = "INSTR"

    model: str
    name: str = ""

    def __post_init__(self) -> None:
        if not _IDENTIFIER.fullmatch(self.model):
            raise InvalidResourceName(f"simulated model must be an identifier, got {self.model!r}")
        object.__setattr__(self, "model", self.model.lower())
        if not self.name:
            object.__setattr__(self, "name", self.model)
        elif not _IDENTIFIER.fullmatch(self.name) or self.name.upper() == "INSTR":
            raise InvalidResourceName(f"simulated name must be an identifier, got {self.name!r}")

    def __str__(self) -> str:
        return (
            f"SIM::{self.model}" if self.name == self.model else f"SIM::{self.model}::{self.name}"
        )


_NATS_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NATS_URL = re.compile(
    r"nats://(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s/:@\[\]]+)(?::(?P<port>[0-9]{1,5}))?"
    r"/(?P<agent>[^/\s]*)/(?P<instrument>[^/\s]*)/?",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class NatsInstr(ResourceName):
    """``nats://server[:port]/<agent>/<instrument>`` (aiotmc extension): an instrument
    served by ``aiotmc agent`` on another host, reached through a NATS server (port 4222 by
    default). Credentials are options of :func:`aiotmc.open`, never part of the name."""

    kind: ClassVar[str] = "nats"
    interface_type: ClassVar[str] = "NATS"
    resource_class: ClassVar[str] = "INSTR"

    host: str
    port: int = 4222
    agent: str
    instrument: str

    def __post_init__(self) -> None:
        _raise_if(_check_host(self.host) or _check_port(self.port))
        for what, value in (("agent", self.agent), ("instrument", self.instrument)):
            if not _NATS_NAME.fullmatch(value):
                raise InvalidResourceName(
                    f"NATS {what} name must be 1-64 letters, digits, '_' or '-', got {value!r}"
                )
        object.__setattr__(self, "host", _normalise_host(self.host))

    def __str__(self) -> str:
        return f"nats://{_format_host(self.host)}:{self.port}/{self.agent}/{self.instrument}"

    @classmethod
    def from_url(cls, text: str) -> NatsInstr:
        """Parse ``nats://server[:port]/<agent>/<instrument>``."""
        match = _NATS_URL.fullmatch(text.strip())
        if match is None:
            raise InvalidResourceName(
                f"{text!r}: expected nats://server[:port]/<agent>/<instrument>"
            )
        host = match["host"].strip("[]")
        port = int(match["port"]) if match["port"] else 4222
        return cls(host=host, port=port, agent=match["agent"], instrument=match["instrument"])


@dataclass(frozen=True, slots=True, kw_only=True)
class AsrlInstr(ResourceName):
    """``ASRL<n>::INSTR`` (port number) or ``ASRL<path>::INSTR`` (device path): a serial port.

    Exactly one of ``board`` and ``path`` is set. :attr:`device` is the path opened:
    ``path`` itself, or ``COM<n>`` on Windows and ``/dev/ttyS<n-1>`` elsewhere.
    """

    kind: ClassVar[str] = "asrl"
    interface_type: ClassVar[str] = "ASRL"
    resource_class: ClassVar[str] = "INSTR"

    board: int | None = None
    path: str | None = None

    def __post_init__(self) -> None:
        if (self.board is None) == (self.path is None):
            raise InvalidResourceName("a serial resource names a port number or a device path")
        if self.board is not None and self.board < 0:
            _raise_if(_check_board(self.board))
        if self.path is not None:
            _raise_if(_check_name("serial device path", self.path))

    @property
    def device(self) -> str:
        """The operating system's name of the port."""
        if self.path is not None:
            return self.path
        assert self.board is not None
        return (
            f"COM{self.board}" if sys.platform == "win32" else f"/dev/ttyS{max(self.board - 1, 0)}"
        )

    def __str__(self) -> str:
        return f"ASRL{self.path if self.path is not None else self.board}::INSTR"


@dataclass(frozen=True, slots=True, kw_only=True)
class PrologixInstr(ResourceName):
    """``PRLGX-TCPIP[board]::host::port::pad[::sad]::INSTR`` (aiotmc extension): the GPIB
    instrument at primary address ``pad`` (secondary ``sad``) behind a Prologix-compatible
    GPIB-ETHERNET adapter (Prologix, AR488 on an ESP32...) listening on ``host:port``."""

    kind: ClassVar[str] = "prologix-tcpip"
    interface_type: ClassVar[str] = "PRLGX-TCPIP"
    resource_class: ClassVar[str] = "INSTR"

    board: int = 0
    host: str
    port: int = 1234
    primary: int
    secondary: int | None = None

    def __post_init__(self) -> None:
        problem = _check_board(self.board) or _check_host(self.host) or _check_port(self.port)
        if problem is None and not 0 <= self.primary <= 30:
            problem = f"GPIB primary address must be 0..30, got {self.primary}"
        if problem is None and self.secondary is not None and not 0 <= self.secondary <= 30:
            problem = f"GPIB secondary address must be 0..30, got {self.secondary}"
        _raise_if(problem)
        object.__setattr__(self, "host", _normalise_host(self.host))

    @property
    def adapter(self) -> str:
        """The adapter's interface resource, as pyvisa-py names it."""
        return f"PRLGX-TCPIP{self.board}::{_format_host(self.host)}::{self.port}::INTFC"

    def __str__(self) -> str:
        sad = "" if self.secondary is None else f"::{self.secondary}"
        host = _format_host(self.host)
        return f"PRLGX-TCPIP{self.board}::{host}::{self.port}::{self.primary}{sad}::INSTR"


@dataclass(frozen=True, slots=True, kw_only=True)
class PrologixAsrlInstr(ResourceName):
    """``PRLGX-ASRL[board]::port::pad[::sad]::INSTR`` (aiotmc extension): the GPIB
    instrument at ``pad`` (``sad``) behind a Prologix GPIB-USB adapter or an AR488 on a
    serial port (``port``: a device path such as ``/dev/ttyUSB0``, or a port number)."""

    kind: ClassVar[str] = "prologix-asrl"
    interface_type: ClassVar[str] = "PRLGX-ASRL"
    resource_class: ClassVar[str] = "INSTR"

    board: int = 0
    port: str
    primary: int
    secondary: int | None = None

    def __post_init__(self) -> None:
        problem = _check_board(self.board) or _check_name("serial port", self.port)
        if problem is None and not 0 <= self.primary <= 30:
            problem = f"GPIB primary address must be 0..30, got {self.primary}"
        if problem is None and self.secondary is not None and not 0 <= self.secondary <= 30:
            problem = f"GPIB secondary address must be 0..30, got {self.secondary}"
        _raise_if(problem)

    @property
    def device(self) -> str:
        """The serial port opened (a number n means the port of ``ASRL<n>``)."""
        if self.port.isdigit():
            return AsrlInstr(board=int(self.port)).device
        return self.port

    @property
    def adapter(self) -> str:
        """The adapter's interface resource, as pyvisa-py names it."""
        return f"PRLGX-ASRL{self.board}::{self.port}::INTFC"

    def __str__(self) -> str:
        sad = "" if self.secondary is None else f"::{self.secondary}"
        return f"PRLGX-ASRL{self.board}::{self.port}::{self.primary}{sad}::INSTR"


@dataclass(frozen=True, slots=True, kw_only=True)
class GpibInstr(ResourceName):
    """``GPIB[board]::pad[::sad]::INSTR``: the instrument at GPIB primary address ``pad``
    (secondary ``sad``, 0..30) on board ``board``."""

    kind: ClassVar[str] = "gpib"
    interface_type: ClassVar[str] = "GPIB"
    resource_class: ClassVar[str] = "INSTR"

    board: int = 0
    primary: int
    secondary: int | None = None

    def __post_init__(self) -> None:
        problem = _check_board(self.board)
        if problem is None and not 0 <= self.primary <= 30:
            problem = f"GPIB primary address must be 0..30, got {self.primary}"
        if problem is None and self.secondary is not None and not 0 <= self.secondary <= 30:
            problem = f"GPIB secondary address must be 0..30, got {self.secondary}"
        _raise_if(problem)

    def __str__(self) -> str:
        sad = "" if self.secondary is None else f"::{self.secondary}"
        return f"GPIB{self.board}::{self.primary}{sad}::INSTR"


# --------------------------------------------------------------------------- parser


@dataclass(frozen=True, slots=True)
class _Segment:
    text: str
    start: int  # offset in the full resource string

    @property
    def end(self) -> int:
        return self.start + len(self.text)


class _Parser:
    """Parses one resource string; every error carries the offset of the bad part."""

    def __init__(self, text: str) -> None:
        self.text = text

    def fail(self, message: str, position: int) -> NoReturn:
        raise InvalidResourceName(message, resource=self.text, position=position)

    def split(self, start: int) -> list[_Segment]:
        """Split ``text[start:]`` on ``::``, remembering where each segment starts.

        Nothing may follow a resource class keyword (``SOCKET``, ``INSTR``, ``RAW``).
        """
        segments = []
        for piece in self.text[start:].split("::"):
            segments.append(_Segment(piece, start))
            start += len(piece) + 2
        for before, after in itertools.pairwise(segments[1:]):
            if before.text.upper() in _CLASSES:
                self.fail(f"unexpected {after.text!r} after ::{before.text}", after.start)
        return segments

    def parse(self) -> ResourceName:
        self.text = text = self.text.rstrip()
        if not text:
            self.fail("empty resource name, expected TCPIP, USB or SIM", 0)
        begin = len(text) - len(text.lstrip())
        if text[begin : begin + 4].upper() == "ASRL":
            return self.asrl(begin + 4)
        prologix = _PRLGX_TCPIP.match(text, begin)
        if prologix is not None:
            return self.prologix(int(prologix.group(1) or 0), prologix.end())
        prologix = _PRLGX_ASRL.match(text, begin)
        if prologix is not None:
            return self.prologix_asrl(int(prologix.group(1) or 0), prologix.end())
        gpib = _GPIB.match(text, begin)
        if gpib is not None:
            return self.gpib(int(gpib.group(1) or 0), gpib.end())
        match = _PREFIX.match(text, begin)
        if match is None:
            self.fail("expected an interface type: TCPIP, USB or SIM", begin)
        keyword, digits = match.group(1).upper(), match.group(2)
        if keyword not in ("TCPIP", "USB", "SIM"):
            shown = text[begin:].split("::", 1)[0]
            if shown.upper().rstrip("0123456789") in _UNSUPPORTED:
                problem = f"interface type {shown!r} is not supported"
            else:
                problem = f"unknown interface type {shown!r}"
            self.fail(f"{problem}, expected TCPIP, USB or SIM", begin)
        if keyword == "SIM" and digits:
            self.fail("SIM resources take no board number, expected SIM::<model>", match.start(2))
        body = match.end()
        if body == len(text):
            expected = {"TCPIP": "host", "USB": "vendor ID", "SIM": "model"}[keyword]
            self.fail(f"missing {expected}, expected {keyword}{digits}::<{expected}>...", body)
        if not text.startswith("::", body):
            self.fail(f"expected '::' after {text[begin:body]!r}", body)
        board = int(digits) if digits else 0
        if keyword == "TCPIP":
            return self.tcpip(board, body + 2)
        if keyword == "USB":
            return self.usb(board, body + 2)
        return self.sim(body + 2)

    # -- TCPIP

    def joined(self, segments: list[_Segment]) -> str:
        return self.text[segments[0].start : segments[-1].end]

    @staticmethod
    def is_ipv6(text: str) -> bool:
        if ":" not in text:
            return False
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            return False
        return True

    def bare_host(self, body: list[_Segment], cls: str) -> tuple[str, list[_Segment]]:
        """Split ``body`` (segments before the class) into the host and what follows it.

        A bare IPv6 address contains ``::`` itself, so the class decides: before ``SOCKET``
        the port is the last segment; before ``INSTR`` a valid IPv6 address wins over a LAN
        device name (write ``[addr]`` to avoid the ambiguity).
        """
        if cls == "SOCKET" and len(body) > 2 and self.is_ipv6(self.joined(body[:-1])):
            return self.joined(body[:-1]), body[-1:]
        if cls != "SOCKET" and len(body) > 1:
            last = body[-1].text
            if (
                not cls
                and last.isascii()
                and last.isdigit()
                and _check_host(self.joined(body[:-1])) is None
            ):
                self.fail("missing resource class, expected ::SOCKET or ::INSTR", body[-1].end)
            if self.is_ipv6(self.joined(body)):
                return self.joined(body), []
            if len(body) > 2 and self.is_ipv6(self.joined(body[:-1])):
                return self.joined(body[:-1]), body[-1:]
        first = body[0]
        problem = _check_host(first.text)
        if problem is not None:
            if first.text.count(":") == 1:
                problem = f"invalid host {first.text!r}, a port is written host::port::SOCKET"
            self.fail(problem, first.start)
        return first.text, body[1:]

    def tcpip(self, board: int, start: int) -> ResourceName:
        text = self.text
        vxi11_port: int | None = None
        if text.startswith("[", start):
            close = text.find("]", start)
            if close < 0:
                self.fail("missing ']' after the IPv6 address", len(text))
            host = text[start + 1 : close]
            if not self.is_ipv6(host):
                self.fail(f"invalid IPv6 address {host!r}", start + 1)
            after = close + 1
            if after < len(text) and not text.startswith("::", after):
                self.fail("expected '::' after ']'", after)
            segments = self.split(after + 2) if after < len(text) else []
            cls = segments[-1].text.upper() if segments else ""
            cls = cls if cls in ("SOCKET", "INSTR") else ""
            rest = segments[:-1] if cls else segments
        else:
            segments = self.split(start)
            cls = segments[-1].text.upper() if len(segments) > 1 else ""
            cls = cls if cls in ("SOCKET", "INSTR") else ""
            head, comma, port_text = segments[0].text.partition(",")
            if comma and cls != "SOCKET" and ":" not in head:  # pyvisa-py's host,port (VXI-11)
                vxi11_port = self.port(_Segment(port_text, segments[0].start + len(head) + 1))
                segments[0] = _Segment(head, segments[0].start)
            host, rest = self.bare_host(segments[:-1] if cls else segments, cls)
        end = segments[-1].start - 2 if cls else len(text)
        if cls == "SOCKET":
            if not rest:
                self.fail("missing port, expected TCPIP::host::port::SOCKET", end)
            port = self.port(rest[0])
            if len(rest) > 1:
                self.fail(f"unexpected {rest[1].text!r}, expected ::SOCKET", rest[1].start)
            return TcpipSocket(board=board, host=host, port=port)
        if not rest:
            return TcpipInstr(board=board, host=host, port=vxi11_port)
        device = rest[0]
        if len(rest) > 1:
            extra = rest[1]
            if not cls and len(rest) == 2:
                self.fail(
                    f"unknown resource class {extra.text!r}, expected SOCKET or INSTR", extra.start
                )
            self.fail(f"unexpected {extra.text!r}, expected ::INSTR", extra.start)
        if device.text.isascii() and device.text.isdigit():
            if not cls:
                self.fail("missing resource class, expected ::SOCKET or ::INSTR", end)
            self.fail(
                f"expected a LAN device name such as inst0 or hislip0, got {device.text!r}"
                " (a raw socket port ends in ::SOCKET)",
                device.start,
            )
        hislip = _HISLIP.fullmatch(device.text)
        if hislip is not None:
            if vxi11_port is not None:
                self.fail("a HiSLIP port is written ::hislip0,port::INSTR", segments[0].end)
            port = DEFAULT_HISLIP_PORT
            if hislip.group(2) is not None:
                port = self.port(_Segment(hislip.group(2), device.start + hislip.start(2)))
            return TcpipHislip(board=board, host=host, session_name=hislip.group(1), port=port)
        problem = _check_name("LAN device name", device.text)
        if problem is not None:
            self.fail(problem, device.start)
        return TcpipInstr(board=board, host=host, lan_device_name=device.text, port=vxi11_port)

    def port(self, segment: _Segment) -> int:
        if not segment.text.isascii() or not segment.text.isdigit():
            self.fail(f"port must be 1..65535, got {segment.text!r}", segment.start)
        port = int(segment.text)
        if not 1 <= port <= 65535:
            self.fail(f"port must be 1..65535, got {segment.text!r}", segment.start)
        return port

    # -- USB

    def usb_id(self, segment: _Segment, what: str) -> int:
        text = segment.text
        try:
            if text[:2].lower() == "0x":
                if not all(c in "0123456789abcdefABCDEF" for c in text[2:]):
                    raise ValueError(text)
                value = int(text[2:], 16)
            elif text.isascii() and text.isdigit():
                value = int(text)
            else:
                raise ValueError(text)
        except ValueError:
            self.fail(f"{what} must be hex (0x0957) or decimal, got {text!r}", segment.start)
        if not 0 <= value <= 0xFFFF:
            self.fail(f"{what} must be 0x0000..0xFFFF, got {text!r}", segment.start)
        return value

    def usb(self, board: int, start: int) -> ResourceName:
        segments = self.split(start)
        cls = segments[-1].text.upper()
        if cls == "RAW":
            self.fail("USB RAW resources are not supported, expected ::INSTR", segments[-1].start)
        body = segments[:-1] if cls == "INSTR" else segments
        if len(body) < 2:
            at = body[-1].end if body else segments[-1].start
            self.fail("missing product ID, expected USB::vid::pid[::serial]::INSTR", at)
        vid = self.usb_id(body[0], "vendor ID")
        pid = self.usb_id(body[1], "product ID")
        serial: str | None = None
        interface: int | None = None
        if len(body) >= 3:
            serial = body[2].text
            problem = _check_name("serial number", serial)
            if problem is not None:
                self.fail(problem, body[2].start)
        if len(body) >= 4:
            text = body[3].text
            if len(body) == 4 and cls != "INSTR" and not text.isdigit():
                self.fail(f"unknown resource class {text!r}, expected INSTR", body[3].start)
            if not (text.isascii() and text.isdigit()) or int(text) > 255:
                self.fail(f"USB interface number must be 0..255, got {text!r}", body[3].start)
            interface = int(text)
        if len(body) > 4:
            self.fail(f"unexpected {body[4].text!r}, expected ::INSTR", body[4].start)
        return UsbInstr(board=board, vid=vid, pid=pid, serial=serial, interface=interface)

    # -- ASRL

    def asrl(self, start: int) -> ResourceName:
        text = self.text
        body, sep, cls = text[start:].rpartition("::")
        if not sep:
            body, cls = text[start:], ""
        if cls and cls.upper() != "INSTR":
            self.fail(f"unknown resource class {cls!r}, expected ::INSTR", len(text) - len(cls))
        if not body:
            self.fail("missing port, expected ASRL<n>::INSTR or ASRL<path>::INSTR", start)
        if body.isascii() and body.isdigit():
            return AsrlInstr(board=int(body))
        problem = _check_name("serial device path", body)
        if problem is not None:
            self.fail(problem, start)
        return AsrlInstr(path=body)

    # -- PRLGX-TCPIP

    def prologix(self, board: int, start: int) -> ResourceName:
        form = "PRLGX-TCPIP::host::port::pad[::sad]::INSTR"
        text = self.text
        host_at = start
        if text.startswith("[", start):  # an IPv6 address in brackets
            close = text.find("]", start)
            if close < 0 or not text.startswith("::", close + 1):
                self.fail("expected '[address]::' for an IPv6 host", start)
            host = text[start + 1 : close]
            if not self.is_ipv6(host):
                self.fail(f"invalid IPv6 address {host!r}", start + 1)
            segments = [_Segment(host, start + 1), *self.split(close + 3)]
        else:
            segments = self.split(start)
        if segments[-1].text.upper() == "INTFC":
            self.fail(
                f"an adapter interface cannot be opened alone, name an instrument: {form}"
                " (or attach it as a GPIB board, docs/gpib.md)",
                segments[-1].start,
            )
        if len(segments) > 1 and segments[-1].text.upper() == "INSTR":
            segments = segments[:-1]
        if len(segments) < 3:
            self.fail(f"missing GPIB address, expected {form}", len(text))
        if len(segments) > 4:
            self.fail(f"unexpected {segments[4].text!r}, expected {form}", segments[4].start)
        host = segments[0].text
        problem = _check_host(host)
        if problem is not None:
            self.fail(problem, host_at)
        port = self.port(segments[1])
        addresses = []
        for segment in segments[2:]:
            if not (segment.text.isascii() and segment.text.isdigit()) or int(segment.text) > 30:
                self.fail(f"GPIB address must be 0..30, got {segment.text!r}", segment.start)
            addresses.append(int(segment.text))
        secondary = addresses[1] if len(addresses) > 1 else None
        return PrologixInstr(
            board=board, host=host, port=port, primary=addresses[0], secondary=secondary
        )

    def prologix_asrl(self, board: int, start: int) -> ResourceName:
        form = "PRLGX-ASRL::port::pad[::sad]::INSTR"
        segments = self.split(start)
        if segments[-1].text.upper() == "INTFC":
            self.fail(
                f"an adapter interface cannot be opened alone, name an instrument: {form}"
                " (or attach it as a GPIB board, docs/gpib.md)",
                segments[-1].start,
            )
        if len(segments) > 1 and segments[-1].text.upper() == "INSTR":
            segments = segments[:-1]
        if len(segments) < 2:
            self.fail(f"missing GPIB address, expected {form}", len(self.text))
        if len(segments) > 3:
            self.fail(f"unexpected {segments[3].text!r}, expected {form}", segments[3].start)
        port = segments[0]
        problem = _check_name("serial port", port.text)
        if problem is not None:
            self.fail(problem, port.start)
        addresses = []
        for segment in segments[1:]:
            if not (segment.text.isascii() and segment.text.isdigit()) or int(segment.text) > 30:
                self.fail(f"GPIB address must be 0..30, got {segment.text!r}", segment.start)
            addresses.append(int(segment.text))
        secondary = addresses[1] if len(addresses) > 1 else None
        return PrologixAsrlInstr(
            board=board, port=port.text, primary=addresses[0], secondary=secondary
        )

    # -- GPIB

    def gpib(self, board: int, start: int) -> ResourceName:
        form = "GPIB[board]::pad[::sad]::INSTR"
        segments = self.split(start)
        last = segments[-1].text.upper()
        if last == "INTFC" and len(segments) == 1:
            self.fail(f"GPIB interface resources are not supported, expected {form}", start)
        if len(segments) > 1 and last == "INSTR":
            segments = segments[:-1]
        if len(segments) > 2:
            self.fail(f"unexpected {segments[2].text!r}, expected {form}", segments[2].start)
        addresses = []
        for segment in segments:
            if not (segment.text.isascii() and segment.text.isdigit()) or int(segment.text) > 30:
                self.fail(f"GPIB address must be 0..30, got {segment.text!r}", segment.start)
            addresses.append(int(segment.text))
        secondary = addresses[1] if len(addresses) > 1 else None
        return GpibInstr(board=board, primary=addresses[0], secondary=secondary)

    # -- SIM

    def sim(self, start: int) -> ResourceName:
        segments = self.split(start)
        if len(segments) > 1 and segments[-1].text.upper() == "INSTR":
            segments = segments[:-1]
        for segment, what in zip(segments, ("model", "name"), strict=False):
            if not _IDENTIFIER.fullmatch(segment.text):
                self.fail(
                    f"simulated {what} must be an identifier (letters, digits, _ . -), "
                    f"got {segment.text!r}",
                    segment.start,
                )
        if len(segments) > 2:
            self.fail(
                f"unexpected {segments[2].text!r}, expected SIM::model[::name]", segments[2].start
            )
        name = segments[1].text if len(segments) == 2 else ""
        return SimInstr(model=segments[0].text, name=name)


def parse_resource(text: str | ResourceName) -> ResourceName:
    """Parse a VISA-style resource name (a :class:`ResourceName` is returned unchanged).

    >>> parse_resource("tcpip::10.0.0.5::5025::socket")
    TcpipSocket(board=0, host='10.0.0.5', port=5025)
    >>> str(parse_resource("USB::2391::6038::MY123::INSTR"))
    'USB0::0x0957::0x1796::MY123::INSTR'

    Raises :class:`~aiotmc.InvalidResourceName` (a ``ValueError``) with a caret under the
    offending part.
    """
    if isinstance(text, ResourceName):
        return text
    if not isinstance(text, str):
        raise TypeError(f"resource name must be a str, got {type(text).__name__}")
    if text.strip()[:7].lower() == "nats://":
        return NatsInstr.from_url(text)
    return _Parser(text).parse()
