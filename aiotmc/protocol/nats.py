"""The NATS client protocol, sans-IO: what a client sends and a parser for what it receives.

NATS (https://docs.nats.io/reference/reference-protocols/nats-protocol) is a text protocol:
control lines end with CRLF (``INFO {...}``, ``MSG <subject> <sid> [reply] <bytes>``,
``HMSG <subject> <sid> [reply] <header bytes> <total bytes>``, ``PING``, ``PONG``, ``+OK``,
``-ERR '...'``), followed for messages by the payload and CRLF. Headers use an HTTP-like
block that starts with ``NATS/1.0`` (and a status such as ``503`` for "no responders").

:class:`NatsParser` is fed bytes and yields events. It never allocates from a length field
beyond ``max_payload`` (a message announcing more raises :class:`RemoteProtocolError`
before any of it is buffered), and control lines are bounded too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from .._exceptions import LocalProtocolError, RemoteProtocolError

__all__ = [
    "MAX_CONTROL_LINE",
    "NEED_DATA",
    "Err",
    "Info",
    "Msg",
    "NatsParser",
    "Ok",
    "Ping",
    "Pong",
    "encode_connect",
    "encode_headers",
    "encode_pub",
    "encode_sub",
    "encode_unsub",
    "parse_headers",
]

MAX_CONTROL_LINE: Final = 4096
_HEADER_LINE: Final = b"NATS/1.0"
_TOKEN = re.compile(rb"^[!-~]+$")  # printable, no space: subjects, sids, reply subjects
# ``MSG <subject> <sid> [reply] <size>`` / ``HMSG ... <header size> <total size>`` (the
# server's own forms, which may have two spaces where the reply is missing; anything
# else goes the general way)
_MSG_LINE = re.compile(rb"([!-~]+) +([0-9]{1,18}) +(?:([!-~]+) +)?([0-9]{1,18})()\Z")
_HMSG_LINE = re.compile(rb"([!-~]+) +([0-9]{1,18}) +(?:([!-~]+) +)?([0-9]{1,18}) +([0-9]{1,18})\Z")


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()


@dataclass(frozen=True, slots=True)
class Info:
    """The server's ``INFO``: ``max_payload``, ``headers`` support, version..."""

    fields: Mapping[str, Any]

    @property
    def max_payload(self) -> int:
        """The largest message the server accepts (1 MiB by default)."""
        value = self.fields.get("max_payload", 1024 * 1024)
        return int(value) if isinstance(value, int) and value > 0 else 1024 * 1024


@dataclass(frozen=True, slots=True)
class Msg:
    """A message delivered to subscription ``sid``."""

    subject: str
    sid: int
    reply: str | None
    payload: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    #: The status of a header block such as ``NATS/1.0 503`` (no responders), else None.
    status: int | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    """The server asks for a ``PONG``."""


@dataclass(frozen=True, slots=True)
class Pong:
    """The answer to our ``PING``."""


@dataclass(frozen=True, slots=True)
class Ok:
    """``+OK`` (verbose mode only)."""


@dataclass(frozen=True, slots=True)
class Err:
    """``-ERR '<message>'``: most close the connection (authorization, parser errors)."""

    message: str


Event = Info | Msg | Ping | Pong | Ok | Err


class NatsParser:
    """Incremental parser of the server-to-client stream."""

    def __init__(self, *, max_payload: int = 64 * 1024 * 1024) -> None:
        self.max_payload = max_payload
        self._buffer = bytearray()
        # Where the unparsed bytes start: consumed bytes are dropped in one go when more
        # arrive, not after each event (a read of a thousand acknowledgements would
        # otherwise move the rest of the buffer a thousand times).
        self._pos = 0
        # A message whose control line is parsed, waiting for its payload:
        self._pending: tuple[str, int, str | None, int, int] | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add received bytes."""
        if self._pos:
            del self._buffer[: self._pos]
            self._pos = 0
        self._buffer += data

    def next_event(self) -> Event | _NeedData:
        """The next complete event, or :data:`NEED_DATA`."""
        buffer = self._buffer
        if self._pending is not None:
            return self._payload()
        start = self._pos
        end = buffer.find(b"\r\n", start, start + MAX_CONTROL_LINE + 2)
        if end < 0:
            if len(buffer) - start > MAX_CONTROL_LINE:
                raise RemoteProtocolError(
                    f"NATS control line longer than {MAX_CONTROL_LINE} bytes: "
                    f"{bytes(buffer[start : start + 40])!r}"
                )
            return NEED_DATA
        line = bytes(buffer[start:end])
        self._pos = end + 2
        op, _, rest = line.partition(b" ")
        op = op.upper()
        if op == b"MSG" or op == b"HMSG":
            self._pending = self._message_line(op == b"HMSG", rest)
            return self._payload()
        if op == b"PING":
            return Ping()
        if op == b"PONG":
            return Pong()
        if op == b"+OK":
            return Ok()
        if op == b"-ERR":
            return Err(rest.decode("utf-8", "replace").strip().strip("'"))
        if op == b"INFO":
            try:
                fields = json.loads(rest)
            except ValueError as exc:
                raise RemoteProtocolError(f"NATS INFO is not JSON: {rest[:60]!r}") from exc
            if not isinstance(fields, dict):
                raise RemoteProtocolError("NATS INFO is not a JSON object")
            return Info(fields)
        raise RemoteProtocolError(f"unknown NATS operation {line[:40]!r}")

    def _message_line(self, headers: bool, rest: bytes) -> tuple[str, int, str | None, int, int]:
        match = (_HMSG_LINE if headers else _MSG_LINE).match(rest)
        if match is not None:  # the usual form, in one step
            subject, sid_text, reply_text, first, second = match.groups()
            if headers:
                header_size, total = int(first), int(second)
            else:
                header_size, total = 0, int(first)
            sid = int(sid_text)
            reply = reply_text.decode() if reply_text is not None else None
            self._check_sizes(rest, header_size, total)
            return subject.decode(), sid, reply, header_size, total
        parts = rest.split()
        want = (4, 5) if headers else (3, 4)
        if len(parts) not in want or not all(_TOKEN.match(p) for p in parts):
            raise RemoteProtocolError(f"malformed NATS message line {rest[:60]!r}")
        try:
            sizes = [int(p) for p in parts[-2:]] if headers else [0, int(parts[-1])]
            sid = int(parts[1])
        except ValueError as exc:
            raise RemoteProtocolError(f"malformed NATS message line {rest[:60]!r}") from exc
        header_size, total = sizes
        self._check_sizes(rest, header_size, total)
        count = len(parts) - (2 if headers else 1)
        reply = parts[2].decode() if count == 3 else None
        return parts[0].decode(), sid, reply, header_size, total

    def _check_sizes(self, rest: bytes, header_size: int, total: int) -> None:
        if total < 0 or header_size < 0 or header_size > total:
            raise RemoteProtocolError(f"malformed NATS message sizes {rest[:60]!r}")
        if total > self.max_payload:
            raise RemoteProtocolError(
                f"NATS message of {total} bytes exceeds the limit of {self.max_payload}"
            )

    def _payload(self) -> Msg | _NeedData:
        assert self._pending is not None
        subject, sid, reply, header_size, total = self._pending
        buffer = self._buffer
        start = self._pos
        end = start + total
        if len(buffer) < end + 2:
            return NEED_DATA
        if buffer[end : end + 2] != b"\r\n":
            raise RemoteProtocolError("NATS message payload not followed by CRLF")
        data = bytes(buffer[start:end])
        self._pos = end + 2
        self._pending = None
        status: int | None = None
        headers: Mapping[str, str] = {}
        if header_size:
            status, headers = parse_headers(data[:header_size])
        return Msg(subject, sid, reply, data[header_size:], headers, status)


def parse_headers(block: bytes) -> tuple[int | None, dict[str, str]]:
    """Parse a ``NATS/1.0 [status [description]]`` header block."""
    lines = block.split(b"\r\n")
    first = lines[0]
    if not first.startswith(_HEADER_LINE):
        raise RemoteProtocolError(f"NATS header block starts with {first[:20]!r}")
    status: int | None = None
    rest = first[len(_HEADER_LINE) :].strip()
    if rest:
        code = rest.split(b" ", 1)[0]
        if code.isdigit():
            status = int(code)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            raise RemoteProtocolError(f"malformed NATS header line {line[:40]!r}")
        headers[name.strip().decode("latin-1")] = value.strip().decode("latin-1")
    return status, headers


def _token(name: str, what: str) -> bytes:
    data = name.encode()
    if not _TOKEN.match(data):
        raise LocalProtocolError(f"invalid NATS {what} {name!r}")
    return data


def encode_headers(headers: Mapping[str, str]) -> bytes:
    """A header block for ``HPUB``."""
    out = [_HEADER_LINE]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or ":" in name or not name:
            raise LocalProtocolError(f"invalid NATS header {name!r}: {value!r}")
        out.append(f"{name}: {value}".encode("latin-1"))
    return b"\r\n".join(out) + b"\r\n\r\n"


def encode_pub(
    subject: str,
    payload: bytes | bytearray | memoryview,
    *,
    reply: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> list[bytes | bytearray | memoryview]:
    """``PUB``/``HPUB`` as parts to send in one write (the payload is not copied)."""
    target = _token(subject, "subject")
    if reply is not None:
        target += b" " + _token(reply, "reply subject")
    if headers:
        block = encode_headers(headers)
        total = len(block) + len(payload)
        line = b"HPUB %s %d %d\r\n" % (target, len(block), total)
        return [line, block, payload, b"\r\n"]
    return [b"PUB %s %d\r\n" % (target, len(payload)), payload, b"\r\n"]


def encode_sub(subject: str, sid: int, *, queue: str | None = None) -> bytes:
    """``SUB <subject> [queue group] <sid>``."""
    group = b" " + _token(queue, "queue group") if queue else b""
    return b"SUB %s%s %d\r\n" % (_token(subject, "subject"), group, sid)


def encode_unsub(sid: int, max_msgs: int | None = None) -> bytes:
    """``UNSUB <sid> [max_msgs]``."""
    if max_msgs is None:
        return b"UNSUB %d\r\n" % sid
    return b"UNSUB %d %d\r\n" % (sid, max_msgs)


def encode_connect(
    *,
    name: str,
    version: str,
    user: str | None = None,
    password: str | None = None,
    token: str | None = None,
) -> bytes:
    """``CONNECT {...}`` (headers on, no echo of our own messages, not verbose) + ``PING``."""
    options: dict[str, Any] = {
        "verbose": False,
        "pedantic": False,
        "lang": "python-aiotmc",
        "version": version,
        "protocol": 1,
        "headers": True,
        "no_responders": True,
        "echo": False,
        "name": name,
    }
    if user is not None:
        options["user"] = user
        options["pass"] = password or ""
    if token is not None:
        options["auth_token"] = token
    return b"CONNECT " + json.dumps(options).encode() + b"\r\nPING\r\n"
